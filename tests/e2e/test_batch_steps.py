"""What a batch step sees and leaves, end to end: a served offload, a worker and a sandbox
executor with a busybox image and an image with bash.

A step's stdout and stderr (and so `step.stderr`, `previous_step.stderr` and the outputs made
from them) are the step's own, byte for byte: the wrapper that keeps them shows its trace in
the job's log only. A step runs with bash when its image has bash, else with sh, and the log
says which.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bashimage import BASH, build_bash_rootfs
from batchfleet import IMAGE, Batches, bare, register
from busybox import BusyboxMissing, build_rootfs, build_tarball
from ci import unavailable
from fleet import Fleet

from offload.db.url import DatabaseURL

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces"),
    pytest.mark.slow,
]

BASH_IMAGE = "offload-test/bash:latest"
RESULT = "offload-step-result: "
# YAML on stderr, with the bytes a trace line or a lost newline would change.
STDERR = "owner: team-a\nlabels:\n  - one\n  - two\n"

OWN_STDERR = f"""\
name: own-stderr
on:
  - repositoriesMatchingQuery: repo:^app$
steps:
  - run: |
      printf 'owner: team-a\\nlabels:\\n  - one\\n' >&2
      echo "to stdout"
      printf '  - two\\n' >&2
      echo edited >> README.md
    container: {IMAGE}
    outputs:
      meta:
        value: ${{{{ step.stderr }}}}
        format: yaml
  - run: |
      cat > copied.txt <<'EOF'
      ${{{{ previous_step.stderr }}}}EOF
    container: {IMAGE}
    outputs:
      previous:
        value: ${{{{ previous_step.stderr }}}}
changesetTemplate:
  title: owned by ${{{{ outputs.meta.owner }}}} (${{{{ join outputs.meta.labels "," }}}})
  branch: batch/own-stderr
  commit:
    message: own stderr
"""

PUSHD_SPEC = """\
name: {name}
on:
  - repositoriesMatchingQuery: repo:^app$
steps:
  - run: mkdir -p docs && pushd docs && echo "made with $OFFLOAD_SHELL" > made.txt && popd
    container: {image}
changesetTemplate:
  title: pushd
  branch: batch/{name}
  commit:
    message: pushd
"""


@pytest.fixture(scope="session")
def tarballs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The busybox image and the image with bash, as tarballs made once per session."""
    out = tmp_path_factory.mktemp("images")
    try:
        busybox = build_rootfs(out / "busybox-rootfs")
        bash = build_bash_rootfs(out / "bash-rootfs")
    except BusyboxMissing as exc:
        unavailable(str(exc))
    return {
        IMAGE: build_tarball(busybox, out / "busybox.tar"),
        BASH_IMAGE: build_tarball(bash, out / "bash.tar"),
    }


def import_images(fleet: Fleet, executor: str, tarballs: dict[str, Path]) -> None:
    """`offload executor images import` of each image into the executor's store."""
    for name, tarball in tarballs.items():
        result = subprocess.run(
            [sys.executable, "-m", "offload", "executor", "images", "import", name, str(tarball)],
            env={
                **fleet.env,
                "EXECUTOR_DATA_DIR": str(fleet.data_dir / f"executor-{executor}"),
                "PATH": os.environ["PATH"],
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr


@pytest.fixture
def batches(db_url: DatabaseURL, tmp_path: Path, tarballs: dict[str, Path]) -> Iterator[Batches]:
    fleet = Fleet(db_url, tmp_path / "data")
    source = bare(tmp_path / "hosted" / "app.git", {"README.md": "the app\n"})
    asyncio.run(register(db_url, fleet.data_dir, {"app": source}))
    import_images(fleet, "exec-a", tarballs)
    fleet.start_server()
    setup = Batches(fleet, tmp_path)
    setup.start_worker()
    fleet.start_executor("exec-a", slots=2, EXECUTOR_QUEUE_NAME="batches")
    yield setup
    setup.stop()


def preview(batches: Batches, text: str) -> dict[str, Any]:
    """`offload batch preview --json` of `text`, whatever its exit status (a failed
    workspace may make it non-zero)."""
    result = batches.cli("preview", "-f", "-", "--json", stdin=text)
    assert result.stdout.strip(), result.stderr
    return dict(json.loads(result.stdout))


def entries(batches: Batches, name: str, spec_id: str) -> dict[str, str]:
    """The log of the spec's one workspace: each entry's output by key suffix (run.0, ...)."""
    (workspace,) = batches.logs(name, spec_id)
    return {".".join(str(e["key"]).split(".")[-2:]): str(e["out"]) for e in workspace["logs"]}


def step_result(log: str) -> dict[str, Any]:
    """The step result a post step's log carries."""
    (line,) = [x for x in log.splitlines() if x.startswith(f"stdout: {RESULT}")]
    return dict(json.loads(line.removeprefix(f"stdout: {RESULT}")))


def test_step_stderr_and_outputs_are_the_steps_own(batches: Batches) -> None:
    view = preview(batches, OWN_STDERR)
    assert view["states"] == {"completed": 1}, view
    # outputs.meta is the YAML of step 0's stderr, parsed: nothing of offload's in it.
    (operation,) = view["operations"]
    assert operation["title"] == "owned by team-a (one,two)"

    logs = entries(batches, "own-stderr", view["id"])
    first, second = step_result(logs["post.0"]), step_result(logs["post.1"])
    assert first["stderr"] == STDERR and first["stdout"] == "to stdout\n", first
    assert first["outputs"]["meta"] == {"owner": "team-a", "labels": ["one", "two"]}
    # previous_step.stderr, in a later step's script and in its outputs, is the same bytes.
    assert second["outputs"]["previous"] == STDERR
    assert (
        "+++ copied.txt\n@@ -0,0 +1,4 @@\n+owner: team-a\n+labels:\n+  - one\n+  - two\n"
        in (second["diff"])
    ), second["diff"]
    assert second["stderr"] == "" and second["stdout"] == ""
    # The log still shows what the wrapper ran, and the step's streams as they were.
    run = logs["run.0"]
    assert f"offload: running step run.0 with sh (image {IMAGE} has no bash)" in run, run
    # One whole line for the step's script: the pipeline's parts are not traced, since
    # their concurrent traces would interleave mid-word.
    assert "stderr: + /bin/sh ../.offload-batch/step0.sh\n" in run, run
    assert "tee" not in run, run
    assert "stdout: to stdout\n" in run and "stderr: owner: team-a\n" in run, run


def test_a_step_runs_with_bash_when_its_image_has_it_and_sh_otherwise(batches: Batches) -> None:
    view = preview(batches, PUSHD_SPEC.format(name="with-bash", image=BASH_IMAGE))
    assert view["states"] == {"completed": 1}, view
    logs = entries(batches, "with-bash", view["id"])
    assert (
        f"offload: running step run.0 with bash (found in image {BASH_IMAGE} at {BASH})"
        in logs["run.0"]
    ), logs["run.0"]
    assert f"+made with {BASH}\n" in step_result(logs["post.0"])["diff"]

    failed = preview(batches, PUSHD_SPEC.format(name="with-sh", image=IMAGE))
    assert failed["states"] == {"failed": 1}, failed
    shown = batches.cli("logs", "with-sh")
    assert shown.returncode == 0, shown.stderr
    assert f"running step run.0 with sh (image {IMAGE} has no bash)" in shown.stdout
    assert "pushd: not found" in shown.stdout, shown.stdout
    assert f"step run.0 ran with sh because image {IMAGE} has no bash" in shown.stdout
