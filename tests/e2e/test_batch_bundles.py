"""Bundles end to end: an executor slot takes several workspaces of one repository and commit
at once, checks the repository out once, and runs and reports each workspace on its own.

A served offload with one sandbox executor of one slot, bundles of up to 10: a monorepo with
10 workspaces runs as one bundle. A workspace that fails fails alone and the others' diffs are
exactly those a workspace run on its own gives (git's own diff of the same edit); killing the
executor mid-bundle loses nothing and runs no finished workspace again.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batchfleet import IMAGE, Batches, bare, import_image, register
from fleet import Fleet, spawn

from offload.db.url import DatabaseURL

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces")

DIRS = [f"svc/s{n}" for n in range(10)]
FILES = {
    "README.md": "top-level colour\n",
    **{f"{d}/go.mod": f"module {d}\n" for d in DIRS},
    **{f"{d}/README.md": f"colour in {d}\n" for d in DIRS},
}

SPEC = """\
name: {name}
on:
  - repository: mono10
workspaces:
  - rootAtLocationOf: go.mod
    in: mono10
    onlyFetchWorkspace: {sparse}
steps:
  - run: |
      {extra}
      if [ "${{{{ steps.path }}}}" = svc/s3 ]; then echo "s3 is broken" >&2; exit 4; fi
      sed -i 's/colour/color/g' README.md
      echo "${{{{ steps.path }}}}" > OWNER.txt
    container: {image}
changesetTemplate:
  title: Use color in ${{{{ steps.path }}}}
  body: one of ten
  branch: batch/{name}-${{{{ replace steps.path "/" "-" }}}}
  commit:
    message: color
"""


def spec(name: str, *, sparse: bool, extra: str = ":") -> str:
    """The test's spec: every workspace but svc/s3 edits its README and adds OWNER.txt."""
    return SPEC.format(name=name, sparse=str(sparse).lower(), extra=extra, image=IMAGE)


@pytest.fixture
def bundled(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Batches]:
    fleet = Fleet(
        db_url,
        tmp_path / "data",
        settings={
            "OFFLOAD_BATCHES_BUNDLE_SIZE": "10",
            "OFFLOAD_BATCHES_BUNDLE_SHARE": "1",
            "OFFLOAD_BATCHES_BUNDLE_SECONDS": "60s",
        },
    )
    source = bare(tmp_path / "hosted" / "mono10.git", FILES)
    asyncio.run(register(db_url, fleet.data_dir, {"mono10": source}))
    import_image(fleet, tmp_path, ["exec-a", "exec-b"])
    fleet.start_server()
    setup = Batches(fleet, tmp_path)
    setup.start_worker()
    fleet.start_executor("exec-a", slots=1, EXECUTOR_QUEUE_NAME="batches")
    yield setup
    setup.stop()


def expected_diff(tmp: Path, path: str) -> str:
    """git's diff of the step's edit in `path`, made by hand on a clone of the monorepo."""
    work = tmp / f"expected-{path.replace('/', '-')}"
    subprocess.run(
        ["git", "clone", "-q", str(tmp / "hosted" / "mono10.git"), str(work)], check=True
    )
    readme = work / path / "README.md"
    readme.write_text(readme.read_text().replace("colour", "color"))
    (work / path / "OWNER.txt").write_text(f"{path}\n")
    subprocess.run(["git", "-C", str(work), "add", "--all"], check=True)
    done = subprocess.run(
        ["git", "-C", str(work), "diff", "--cached", "--no-prefix", "--binary"],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def _run(batches: Batches, text: str) -> dict[str, Any]:
    """Preview `text` (exit status aside: a failed workspace makes it non-zero)."""
    result = batches.cli("preview", "-f", "-", "--json", stdin=text)
    assert result.stdout.strip(), result.stderr
    return dict(json.loads(result.stdout))


def _changesets(batches: Batches, spec_id: str) -> dict[str, dict[str, Any]]:
    response = batches.fleet.api("GET", f"/api/batches/specs/{spec_id}/changesets")
    assert response.status_code == 200, response.text
    return {c["title"].removeprefix("Use color in "): c for c in response.json()}


@pytest.mark.slow
def test_a_bundle_checks_out_once_and_each_workspace_fails_alone(bundled: Batches) -> None:
    expected = {d: expected_diff(bundled.tmp, d) for d in DIRS if d != "svc/s3"}
    for sparse in (True, False):
        name = f"bundle-{'sparse' if sparse else 'full'}"
        view = _run(bundled, spec(name, sparse=sparse))
        assert view["states"] == {"completed": 9, "failed": 1}, view
        logs = {w["path"]: w for w in bundled.logs(name, view["id"])}
        assert set(logs) == set(DIRS)
        sizes = []
        for path, workspace in logs.items():
            text = "\n".join(
                line for entry in workspace["logs"] for line in entry.get("out", "").splitlines()
            )
            # Every workspace came from its bundle's one checkout: the spec's first bundle has
            # two (nothing says yet how long a workspace takes), the next the 8 others.
            found = re.search(r"checked out once for the (\d+) jobs", text)
            assert found, (path, text[:2000])
            sizes.append(int(found[1]))
            if path == "svc/s3":
                assert workspace["state"] == "failed"
                assert "s3 is broken" in text
            else:
                assert workspace["state"] == "completed", workspace
                assert "s3 is broken" not in text
        assert sorted(sizes) == [2, 2, *[8] * 8], sizes
        changesets = _changesets(bundled, view["id"])
        assert sorted(changesets) == sorted(expected)
        for path, diff in expected.items():
            assert changesets[path]["diff"] == diff, path


@pytest.mark.slow
def test_killing_the_executor_mid_bundle_loses_nothing_and_reruns_no_finished_workspace(
    bundled: Batches,
) -> None:
    fleet = bundled.fleet
    resetter = spawn("resetter", ["worker", "--job", "queues.resetter"], fleet.env)
    resetter.wait_for("offload worker listening")
    try:
        response = fleet.api(
            "POST",
            "/api/batches/specs",
            token=bundled.token("alice"),
            json={"spec": spec("killed", sparse=True, extra="sleep 1")},
        )
        assert response.status_code == 201, response.text
        spec_id = str(response.json()["id"])
        finished = _wait_finished(bundled, spec_id, at_least=3)
        executor = fleet.executors[0]
        executor.stop(signal.SIGKILL)
        before = {w["path"]: w for w in bundled.workspaces(spec_id)}
        done_before = {p for p, w in before.items() if w["state"] in ("completed", "failed")}
        assert len(done_before) >= len(finished) >= 3
        fleet.start_executor("exec-b", slots=1, EXECUTOR_QUEUE_NAME="batches")
        after = _wait_all(bundled, spec_id, timeout=180)
        states = sorted(w["state"] for w in after.values())
        assert states.count("completed") == 9 and states.count("failed") == 1, after
        for path in done_before:
            # Finished before the kill: not run again.
            assert after[path]["startedAt"] == before[path]["startedAt"], path
        changesets = _changesets(bundled, spec_id)
        for path in DIRS:
            if path != "svc/s3":
                assert changesets[path]["diff"] == expected_diff(bundled.tmp, path), path
    finally:
        resetter.stop()


def _wait_finished(batches: Batches, spec_id: str, at_least: int) -> list[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = [
            w["path"] for w in batches.workspaces(spec_id) if w["state"] in ("completed", "failed")
        ]
        if len(done) >= at_least:
            return done
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} workspaces finished")


def _wait_all(batches: Batches, spec_id: str, timeout: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    view: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        view = {w["path"]: w for w in batches.workspaces(spec_id)}
        if all(w["state"] in ("completed", "failed") for w in view.values()):
            return view
        time.sleep(0.5)
    raise AssertionError(f"not every workspace finished: {view}")
