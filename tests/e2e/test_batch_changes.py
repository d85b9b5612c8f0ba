"""Batch changes end to end: real repositories, a server, a worker, two sandbox executors.

A spec runs a `sed` step in a locally imported busybox image across 30 repositories and a
monorepo with 3 workspaces; preview, apply, pull requests on the built-in code host, a merge
the syncer notices, the step cache, a failing workspace and its retry, and fairness.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from batchfleet import IMAGE, Batches, bare, import_image, register
from fleet import Fleet, git

from offload.db.url import DatabaseURL

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces")

REPOS = [f"repo-{n:02d}" for n in range(30)]
MONO_DIRS = ["libs/c", "services/a", "services/b"]

SPEC = """\
name: fix-colour
description: American spelling everywhere.
on:
  - repositoriesMatchingQuery: file:README.md colour
workspaces:
  - rootAtLocationOf: go.mod
    in: mono
steps:
  - run: sed -i 's/colour/color/g' README.md
    container: {image}
  - run: echo "edited ${{{{ join previous_step.modified_files " " }}}}{extra}"
    container: {image}
    outputs:
      edited:
        value: ${{{{ step.stdout }}}}
changesetTemplate:
  title: Use color in ${{{{ repository.name }}}}
  body: ${{{{ outputs.edited }}}}
  branch: >-
    batch/fix-colour${{{{ if steps.path }}}}-${{{{ replace steps.path "/" "-" }}}}${{{{ end }}}}
  commit:
    message: Fix colour in ${{{{ repository.name }}}}
  published: true
"""


def spec_text(extra: str = "") -> str:
    """The test's batch spec; `extra` changes only its last step."""
    return SPEC.format(image=IMAGE, extra=extra)


@pytest.fixture
def batches(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Batches]:
    fleet = Fleet(db_url, tmp_path / "data")
    sources = {
        name: bare(tmp_path / "hosted" / f"{name}.git", {"README.md": f"the colour of {name}\n"})
        for name in REPOS
    }
    sources["mono"] = bare(
        tmp_path / "hosted" / "mono.git",
        {
            "README.md": "top-level colour\n",
            **{f"{d}/go.mod": f"module {d}\n" for d in MONO_DIRS},
            **{f"{d}/README.md": f"colour in {d}\n" for d in MONO_DIRS},
        },
    )
    sources["opted-out"] = bare(
        tmp_path / "hosted" / "opted-out.git",
        {"README.md": "our colour stays\n", ".batchignore": ""},
    )
    sources["plain"] = bare(tmp_path / "hosted" / "plain.git", {"README.md": "nothing here\n"})
    sources["big-mono"] = bare(
        tmp_path / "hosted" / "big-mono.git",
        {f"pkg/{n:03d}/unit.txt": f"unit {n}\n" for n in range(200)},
    )
    asyncio.run(register(db_url, fleet.data_dir, sources))
    import_image(fleet, tmp_path, ["exec-a", "exec-b"])
    fleet.start_server()
    setup = Batches(fleet, tmp_path)
    setup.start_worker()
    for name in ("exec-a", "exec-b"):
        fleet.start_executor(name, slots=3, EXECUTOR_QUEUE_NAME="batches")
    yield setup
    setup.stop()


def _hosted(tmp: Path, repo: str) -> Path:
    return tmp / "hosted" / f"{repo}.git"


def test_preview_apply_pull_requests_merge_and_the_step_cache(batches: Batches) -> None:
    tmp = batches.tmp
    # a. preview lists exactly one create per workspace, with its diff stats.
    view = batches.preview(spec_text())
    assert view["states"] == {"completed": 33, "ignored": 1}, view
    assert view["ignored"] == ["opted-out"]
    expected = {(r, "batch/fix-colour") for r in REPOS} | {
        ("mono", f"batch/fix-colour-{d.replace('/', '-')}") for d in MONO_DIRS
    }
    ops = view["operations"]
    assert {(o["repo"], o["branch"]) for o in ops} == expected
    assert all(o["actions"] == ["create", "push", "publish"] for o in ops)
    assert all((o["added"], o["deleted"]) == (1, 1) for o in ops)
    assert {o["title"] for o in ops if o["repo"] == "repo-07"} == {"Use color in repo-07"}

    applied = batches.cli("apply", "--spec", view["id"])
    assert applied.returncode == 0, applied.stderr
    status = batches.wait_status("fix-colour", {"open": 33})
    # The pushed branches hold exactly the expected change on top of main.
    for repo in ("repo-00", "repo-29"):
        diff = git("diff", "main", "batch/fix-colour", cwd=_hosted(tmp, repo))
        assert "-the colour of " + repo in diff and "+the color of " + repo in diff
        assert git("log", "-1", "--format=%s", "batch/fix-colour", cwd=_hosted(tmp, repo)) == (
            f"Fix colour in {repo}"
        )
    mono = git("diff", "--stat", "main", "batch/fix-colour-services-a", cwd=_hosted(tmp, "mono"))
    assert "services/a/README.md" in mono and "libs" not in mono and "top-level" not in mono
    bodies = {c["repo"] for c in status["list"] if c["externalId"]}
    assert len(bodies) == 31

    # A merge on the built-in host is reflected by the syncer.
    number = next(c["externalId"] for c in status["list"] if c["repo"] == "repo-05")
    merged = batches.fleet.offload("repos", "pulls", "merge", "repo-05", str(number))
    assert merged.returncode == 0, merged.stderr
    batches.wait_status("fix-colour", {"merged": 1, "open": 32})
    assert "color" in git("show", "main:README.md", cwd=_hosted(tmp, "repo-05"))

    # c. The unchanged spec runs no step at all (repo-05's main has no "colour" any more, so
    # the search leaves it out, and its merged changeset would be detached) ...
    again = batches.preview(spec_text())
    assert again["states"] == {"cached": 32, "ignored": 1}, again
    assert all(o["actions"] == ["none"] for o in again["operations"] if o["repo"] != "repo-05")
    assert [o["actions"] for o in again["operations"] if o["repo"] == "repo-05"] == [["detach"]]
    # ... and a changed last step re-runs only that step in each workspace.
    changed = batches.preview(spec_text(extra=" again"))
    assert changed["states"] == {"completed": 32, "ignored": 1}, changed
    for workspace in batches.logs("fix-colour", changed["id"]):
        if workspace["state"] == "ignored":
            assert workspace["logs"] == []
            continue
        keys = [e["key"] for e in workspace["logs"]]
        assert not any(k.endswith("run.0") for k in keys), keys
        assert sum(k.endswith("run.1") for k in keys) == 1, keys
    updated = [o for o in changed["operations"] if o["repo"] == "repo-01"]
    assert updated and updated[0]["actions"] == ["update"]

    # Re-applying an edited spec updates what exists: the new body reaches the pull request.
    assert batches.cli("apply", "--spec", changed["id"]).returncode == 0
    number = next(c["externalId"] for c in status["list"] if c["repo"] == "repo-01")
    deadline = time.monotonic() + 60
    pull: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pull = batches.fleet.api("GET", f"/api/pulls/repo-01/{number}").json()
        if "again" in pull["body"]:
            break
        time.sleep(0.3)
    assert "again" in pull["body"], pull

    # A new diff is pushed as a new commit; repositories the spec dropped are closed (20 + the
    # monorepo's 3, besides repo-05's merged one, detached before).
    narrowed = (
        spec_text(extra=" again")
        .replace("file:README.md colour", "repo:^repo-0 file:README.md colour")
        .replace("s/colour/color/g", "s/colour/COLOR/g")
    )
    final = batches.preview(narrowed)
    by_repo = {o["repo"]: o["actions"] for o in final["operations"]}
    assert by_repo["repo-01"] == ["push"]
    assert by_repo["repo-17"] == ["close", "detach"]
    assert by_repo["mono"] == ["close", "detach"]
    assert batches.cli("apply", "--spec", final["id"]).returncode == 0
    batches.wait_status("fix-colour", {"open": 9, "detached": 24})
    assert "the COLOR of repo-01" in git(
        "show", "batch/fix-colour:README.md", cwd=_hosted(tmp, "repo-01")
    )
    closed = batches.fleet.api("GET", "/api/pulls", params={"repo": "repo-17"}).json()
    assert [p["state"] for p in closed] == ["closed"]

    # Another batch change tracks an existing pull request (importChangesets).
    number = next(c["externalId"] for c in status["list"] if c["repo"] == "repo-02")
    tracker = batches.preview(
        f"name: tracker\nimportChangesets:\n  - repository: repo-02\n    externalIDs: [{number}]\n"
    )
    assert [o["actions"] for o in tracker["operations"]] == [["import"]]
    assert batches.cli("apply", "--spec", tracker["id"]).returncode == 0
    tracked = batches.wait_status("tracker", {"open": 1})
    assert tracked["list"][0]["externalId"] == str(number)

    # Closing the batch change closes its open pull requests on the host.
    closing = batches.cli("close", "fix-colour")
    assert closing.returncode == 0 and "9 changeset(s)" in closing.stdout, closing.stderr
    view = batches.wait_status("fix-colour", {"closed": 9})
    assert view["closed"] is True
    still_open = batches.fleet.api("GET", "/api/pulls", params={"state": "open"}).json()
    assert still_open == []


def test_a_failing_workspace_keeps_its_logs_and_retry_runs_only_it(batches: Batches) -> None:
    fleet = batches.fleet
    secret = fleet.offload("secrets", "set", "FLAKY", "--global", stdin="fail")
    assert secret.returncode == 0, secret.stderr
    text = f"""\
name: flaky
on:
  - repositoriesMatchingQuery: repo:^repo-0[0-4]$
steps:
  - run: |
      if [ "${{{{ repository.name }}}}" = repo-03 ] && [ "$FLAKY" = fail ]; then
        echo "cannot edit repo-03" >&2; exit 3
      fi
      echo edited >> README.md
    container: {IMAGE}
    env:
      - FLAKY
changesetTemplate:
  title: flaky
  branch: batch/flaky
  commit:
    message: flaky
"""
    view = batches.preview(text, status=1)
    assert view["states"] == {"completed": 4, "failed": 1}, view
    logs = batches.cli("logs", "flaky", "--repo", "repo-03")
    assert logs.returncode == 0 and "cannot edit repo-03" in logs.stdout, logs.stdout
    before = {w["repo"]: w for w in batches.workspaces(view["id"])}

    fleet.offload("secrets", "set", "FLAKY", "--global", stdin="ok")
    retried = batches.cli("retry", "flaky")
    assert retried.returncode == 0 and "queued 1 workspace" in retried.stdout, retried.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = {w["repo"]: w["state"] for w in batches.workspaces(view["id"])}
        if states["repo-03"] == "completed":
            break
        time.sleep(0.3)
    after = {w["repo"]: w for w in batches.workspaces(view["id"])}
    assert after["repo-03"]["state"] == "completed"
    for repo in ("repo-00", "repo-01", "repo-02", "repo-04"):
        assert after[repo]["startedAt"] == before[repo]["startedAt"], repo
    assert after["repo-03"]["startedAt"] != before["repo-03"]["startedAt"]


def test_invalid_spec_is_refused_with_its_position_and_nothing_is_queued(
    batches: Batches,
) -> None:
    result = batches.cli(
        "preview", "-f", "-", stdin="name: broken\nsteps:\n  - run: echo ${{ nope }}\n"
    )
    assert result.returncode == 1
    assert "<stdin>:3:" in result.stderr and "nothing was queued" in result.stderr
    queues = batches.fleet.api("GET", "/api/queues").json()
    counts = {q["queue"]: q["counts"] for q in queues}
    assert sum(counts["batch_resolutions"].values()) == 0
    assert sum(counts["batches"].values()) == 0


def _submit(batches: Batches, user: str, text: str) -> str:
    response = batches.fleet.api(
        "POST", "/api/batches/specs", token=batches.token(user), json={"spec": text}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _started(batches: Batches, spec_id: str) -> list[datetime]:
    return sorted(
        datetime.fromisoformat(w["startedAt"])
        for w in batches.workspaces(spec_id)
        if w["startedAt"]
    )


def test_a_user_with_5_workspaces_is_not_stuck_behind_one_with_200(batches: Batches) -> None:
    # d. Alice's 200 workspaces are slow; bob's 5 arrive once hers are running.
    alice = _submit(
        batches,
        "alice",
        f"""\
name: slow-units
on:
  - repository: big-mono
workspaces:
  - rootAtLocationOf: unit.txt
    onlyFetchWorkspace: true
steps:
  - run: sleep 2; echo done >> unit.txt
    container: {IMAGE}
changesetTemplate:
  title: units
  branch: batch/units-${{{{ replace steps.path "/" "-" }}}}
  commit:
    message: units
""",
    )
    deadline = time.monotonic() + 60
    while len(_started(batches, alice)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(batches.workspaces(alice)) == 200
    bob = _submit(
        batches,
        "bob",
        f"""\
name: quick
on:
  - repositoriesMatchingQuery: repo:^repo-0[0-4]$
steps:
  - run: echo quick >> README.md
    container: {IMAGE}
changesetTemplate:
  title: quick
  branch: batch/quick
  commit:
    message: quick
""",
    )
    deadline = time.monotonic() + 90
    while len(_started(batches, bob)) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    bobs = _started(batches, bob)
    assert len(bobs) == 5, bobs
    alices_before = [t for t in _started(batches, alice) if t <= bobs[-1]]
    assert len(alices_before) < 20, (len(alices_before), bobs)


def test_files_a_step_mounts_travel_with_the_spec_and_key_its_cache(batches: Batches) -> None:
    folder = batches.tmp / "spec"
    (folder / "scripts").mkdir(parents=True)
    (folder / "scripts" / "fix.sh").write_text("echo fixed-by-script >> README.md\n")
    (folder / "spec.yaml").write_text(
        f"""\
name: mounted
on:
  - repositoriesMatchingQuery: repo:^repo-0[01]$
steps:
  - run: sh /tmp/tools/fix.sh && cat /tmp/greeting.txt >> README.md
    container: {IMAGE}
    mount:
      - path: ./scripts
        mountpoint: /tmp/tools
    files:
      /tmp/greeting.txt: hello ${{{{ repository.name }}}}
changesetTemplate:
  title: mounted
  branch: batch/mounted
  commit:
    message: mounted
"""
    )
    spec_file = str(folder / "spec.yaml")

    def preview() -> dict[str, Any]:
        result = batches.cli("preview", "-f", spec_file, "--json")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    first = preview()
    assert first["states"] == {"completed": 2}, first
    logs = batches.logs("mounted", first["id"])
    assert all(w["state"] == "completed" for w in logs)
    workspaces = {w["repo"]: w for w in batches.workspaces(first["id"])}
    assert set(workspaces) == {"repo-00", "repo-01"}
    specs = batches.fleet.api("GET", f"/api/batches/specs/{first['id']}").json()
    assert [o["added"] for o in specs["operations"]] == [2, 2]
    assert preview()["states"] == {"cached": 2}
    # The mounted file's content is part of the step's cache key.
    (folder / "scripts" / "fix.sh").write_text("echo fixed-again >> README.md\n")
    assert preview()["states"] == {"completed": 2}


@pytest.fixture
def local(
    db_url: DatabaseURL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Batches]:
    """A server and a worker with no executor at all; the image is in this machine's store."""
    fleet = Fleet(db_url, tmp_path / "data")
    sources = {
        name: bare(tmp_path / "hosted" / f"{name}.git", {"README.md": f"the colour of {name}\n"})
        for name in REPOS[:3]
    }
    sources["mono"] = bare(
        tmp_path / "hosted" / "mono.git",
        {
            **{f"{d}/go.mod": f"module {d}\n" for d in MONO_DIRS},
            **{f"{d}/README.md": f"colour in {d}\n" for d in MONO_DIRS},
        },
    )
    asyncio.run(register(db_url, fleet.data_dir, sources))
    import_image(fleet, tmp_path, ["laptop"])
    # Where this machine's executor settings keep the image (the CLI reads them for --local).
    monkeypatch.setenv("EXECUTOR_DATA_DIR", str(fleet.data_dir / "executor-laptop"))
    fleet.start_server()
    setup = Batches(fleet, tmp_path)
    setup.start_worker()
    yield setup
    setup.stop()


def test_preview_local_runs_the_workspaces_on_this_machine_with_the_same_results(
    local: Batches,
) -> None:
    result = local.cli("preview", "-f", "-", "--json", "--local", "--slots", "2", stdin=spec_text())
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    # The same workspaces, operations and diffs the executors give (test above), with none.
    assert view["states"] == {"completed": 6}, view
    expected = {(r, "batch/fix-colour") for r in REPOS[:3]} | {
        ("mono", f"batch/fix-colour-{d.replace('/', '-')}") for d in MONO_DIRS
    }
    ops = view["operations"]
    assert {(o["repo"], o["branch"]) for o in ops} == expected
    assert all(o["actions"] == ["create", "push", "publish"] for o in ops)
    assert all((o["added"], o["deleted"]) == (1, 1) for o in ops)
    bodies = {o["repo"]: o["title"] for o in ops}
    assert bodies["repo-01"] == "Use color in repo-01"
    # Its logs are on the server, as an executor's would be.
    for workspace in local.logs("fix-colour", view["id"]):
        keys = [e["key"] for e in workspace["logs"]]
        assert "step.sandbox.run.0" in keys and "step.sandbox.run.1" in keys, keys

    # The results went to the step cache: the unchanged spec runs nothing, even on the fleet.
    again = local.preview(spec_text())
    assert again["states"] == {"cached": 6}, again
    assert all(o["actions"] == ["create", "push", "publish"] for o in again["operations"])

    # A changed last step runs locally from that step on.
    changed = local.cli(
        "preview", "-f", "-", "--json", "--local", stdin=spec_text(extra=" locally")
    )
    assert changed.returncode == 0, changed.stderr
    changed_view = json.loads(changed.stdout)
    assert changed_view["states"] == {"completed": 6}, changed_view
    for workspace in local.logs("fix-colour", changed_view["id"]):
        keys = [e["key"] for e in workspace["logs"]]
        assert "step.sandbox.run.0" not in keys and "step.sandbox.run.1" in keys, keys

    # Retry belongs to the executors; a local spec says how to run it again.
    retried = local.cli("retry", "fix-colour", "--spec", changed_view["id"])
    assert retried.returncode == 2 and "--local" in retried.stderr, retried.stderr


def test_preview_local_with_a_runtime_that_cannot_run_says_so_and_submits_nothing(
    local: Batches, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECUTOR_BACKEND", "nope")
    result = local.cli("preview", "-f", "-", "--local", stdin=spec_text())
    assert result.returncode == 2, result.stderr
    assert "EXECUTOR_BACKEND" in result.stderr and "sandbox" in result.stderr, result.stderr
    queues = local.fleet.api("GET", "/api/queues").json()
    counts = {q["queue"]: q["counts"] for q in queues}
    assert sum(counts["batch_resolutions"].values()) == 0
