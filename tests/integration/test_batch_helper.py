"""The host-side step helper: results it records, and what an untrusted step cannot make it do."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fleet import git, make_repo

from offload.batches.helper import RESULT_PREFIX, run_in_process

STEPS = [
    {"run": "sed -i s/a/b/ file.txt", "container": "img", "env": [], "files": {}, "outputs": {}},
    {
        "run": "echo second",
        "container": "img",
        "env": [{"name": "WHO", "value": "${{ repository.name }}"}],
        "files": {"/tmp/note.txt": "in ${{ repository.name }}"},
        "outputs": {"files": {"value": '${{ join step.modified_files "," }}', "format": "text"}},
        "if": '${{ eq repository.name "demo" }}',
    },
]


def workspace(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace as the executor makes it (checkout + input.json) and a host directory."""
    root = tmp_path / "ws"
    make_repo(root / "repository", {"file.txt": "a\n", "bin.dat": "x"})
    (root / ".offload-batch").mkdir()
    payload: dict[str, Any] = {
        "repository": {"name": "demo", "branch": "main"},
        "path": "",
        "steps": STEPS,
        "batchChange": {"name": "b", "description": ""},
        "secretNames": [],
    }
    (root / ".offload-batch" / "input.json").write_text(json.dumps(payload))
    host = tmp_path / "ws.host"
    host.mkdir(mode=0o700)
    return root, host


@dataclass(frozen=True)
class Done:
    """What a host step of the helper left: its exit code and its output."""

    returncode: int
    stdout: str


def helper(root: Path, host: Path, *args: str) -> Done:
    """The helper as the executor runs it: in process, with the step's env."""
    lines: list[str] = []
    code = run_in_process(
        list(args), workspace=root, host=host, env={"PATH": os.environ["PATH"]}, write=lines.append
    )
    return Done(code, "".join(f"{line}\n" for line in lines))


def result_of(done: Done) -> dict[str, Any]:
    assert done.returncode == 0, done.stdout
    line = next(x for x in done.stdout.splitlines() if x.startswith(RESULT_PREFIX))
    return dict(json.loads(line[len(RESULT_PREFIX) :]))


def test_results_carry_the_cumulative_diff_files_streams_and_outputs(tmp_path: Path) -> None:
    root, host = workspace(tmp_path)
    assert helper(root, host, "pre", "0").returncode == 0
    script = (root / ".offload-batch" / "step0.sh").read_text()
    assert "sed -i s/a/b/ file.txt" in script
    # What the run step does inside the runtime:
    (root / "repository" / "file.txt").write_text("b\n")
    (root / "repository" / "bin.dat").write_bytes(b"\x00\xff\x00")
    (root / ".offload-batch" / "step0.out").write_text("sed done\n")
    first = result_of(helper(root, host, "post", "0"))
    assert first["changedFiles"]["modified"] == ["bin.dat", "file.txt"]
    assert "-a\n+b" in first["diff"] and "GIT binary patch" in first["diff"]
    assert first["stdout"] == "sed done\n"

    assert helper(root, host, "pre", "1").returncode == 0
    script = (root / ".offload-batch" / "step1.sh").read_text()
    assert "export WHO=demo" in script
    assert (root / ".offload-batch" / "files" / "1" / "0").read_text() == "in demo"
    (root / "repository" / "new.txt").write_text("new\n")
    second = result_of(helper(root, host, "post", "1"))
    # The diff is cumulative: step 0's change is still in it.
    assert "+b" in second["diff"] and "+new" in second["diff"]
    assert second["changedFiles"]["added"] == ["new.txt"]
    assert second["outputs"] == {"files": "bin.dat,file.txt"}


def test_a_step_whose_if_is_false_is_skipped_and_keeps_the_previous_result(
    tmp_path: Path,
) -> None:
    root, host = workspace(tmp_path)
    data = json.loads((root / ".offload-batch" / "input.json").read_text())
    data["repository"]["name"] = "other"
    (root / ".offload-batch" / "input.json").write_text(json.dumps(data))
    helper(root, host, "pre", "0")
    first = result_of(helper(root, host, "post", "0"))
    assert helper(root, host, "pre", "1").returncode == 0
    assert (root / ".offload-batch" / "step1.skip").exists()
    second = result_of(helper(root, host, "post", "1"))
    assert second["skipped"] is True and second["diff"] == first["diff"]


def test_config_a_step_plants_in_the_checkout_never_runs_on_the_host(tmp_path: Path) -> None:
    root, host = workspace(tmp_path)
    helper(root, host, "pre", "0")
    marker = tmp_path / "pwned"
    # The step (untrusted) rewrites the checkout's git config and attributes.
    git("config", "core.fsmonitor", f"touch {marker}; false", cwd=root / "repository")
    git("config", "filter.evil.clean", f"touch {marker}; cat", cwd=root / "repository")
    (root / "repository" / ".gitattributes").write_text("* filter=evil\n")
    (root / "repository" / "file.txt").write_text("changed\n")
    result = result_of(helper(root, host, "post", "0"))
    assert not marker.exists()
    assert "+changed" in result["diff"]


def test_symlinks_planted_by_a_step_are_refused(tmp_path: Path) -> None:
    root, host = workspace(tmp_path)
    helper(root, host, "pre", "0")
    secret = tmp_path / "host-secret"
    secret.write_text("top secret\n")
    (root / ".offload-batch" / "step0.out").symlink_to(secret)
    done = helper(root, host, "post", "0")
    assert done.returncode == 1
    assert "top secret" not in done.stdout
    assert "step0.out" in done.stdout

    outside = tmp_path / "outside"
    outside.mkdir()
    batch = root / ".offload-batch"
    batch.rename(root / "moved")
    batch.symlink_to(outside)
    done = helper(root, host, "pre", "0")
    assert done.returncode == 1 and "symlink" in done.stdout
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("args", [[], ["pre"], ["run", "0"], ["pre", "x"]])
def test_bad_arguments_say_how_to_call_it(tmp_path: Path, args: list[str]) -> None:
    root, host = workspace(tmp_path)
    done = helper(root, host, *args)
    assert done.returncode == 2 and "usage" in done.stdout
