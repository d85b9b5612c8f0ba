"""Steps run with bash when their image has it, else sh: each runtime finds out for itself
(in the image's own tree, in a container of it, on the host) and runs the step with it. The
batch run step's wrapper runs the step's script with that shell and keeps its streams whole."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bashimage import BASH, build_bash_rootfs
from busybox import BusyboxMissing, build_rootfs, build_tarball
from ci import unavailable
from dockerd import Dockerd, EngineUnavailable

from offload.batches.transform import run_commands
from offload.executor.images import ImageStore
from offload.executor.process import StepProcess
from offload.executor.runtimes.base import Limits, Runtime, Shell, Step
from offload.executor.runtimes.docker import DockerRuntime
from offload.executor.runtimes.sandbox import SandboxRuntime
from offload.executor.runtimes.shell import ShellRuntime

BUSYBOX = "local/busybox"
BASH_IMAGE = "local/bash"
DOCKER_BUSYBOX = "offload-test/busybox:latest"
DOCKER_BASH = "offload-test/bash:latest"
# Only bash has pushd; $OFFLOAD_SHELL names the shell the runtime chose.
PUSHD = (
    'mkdir -p sub && pushd sub >/dev/null && echo "in $PWD with $OFFLOAD_SHELL" '
    "&& popd >/dev/null\n"
)


def require(*tools: tuple[str, str]) -> None:
    """Skip (fail on CI) unless every (command, Debian package) is installed."""
    for command, package in tools:
        if shutil.which(command) is None:
            unavailable(f"{command} is not installed: apt-get install {package}")


async def run_step(
    runtime: Runtime, workspace: Path, image: str | None, shell: Shell
) -> tuple[int, list[str], list[str]]:
    """Run PUSHD as step `run.0` with `shell`: its exit code, stdout and stderr lines."""
    (workspace / "step.sh").write_text(PUSHD)
    run_id = f"test-{secrets.token_hex(4)}"
    step = Step("run.0", "step.sh", image=image, shell=shell.path)
    out: list[str] = []
    err: list[str] = []

    async def sink(stream: str, line: str) -> None:
        (out if stream == "stdout" else err).append(line)

    argv = runtime.command(step, workspace, Limits(), run_id)
    code = await StepProcess.for_runtime(runtime, run_id, argv, sink).run(timeout=60)
    return code, out, err


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def busybox_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox root filesystem: no bash."""
    try:
        return build_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    except BusyboxMissing as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def tarballs(busybox_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tarballs of the busybox root and of the root with bash (busybox plus the host's bash
    and the libraries it loads), made once per session."""
    try:
        bash_root = build_bash_rootfs(tmp_path_factory.mktemp("bash") / "rootfs")
    except BusyboxMissing as exc:
        unavailable(str(exc))
    out = tmp_path_factory.mktemp("tarballs")
    return {
        "busybox": build_tarball(busybox_root, out / "busybox.tar"),
        "bash": build_tarball(bash_root, out / "bash.tar"),
    }


@pytest.fixture(scope="session")
def store(tarballs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """An image store with the busybox image and the image with bash, unpacked."""
    require(("umoci", "umoci"), ("skopeo", "skopeo"))
    store = ImageStore(tmp_path_factory.mktemp("executor") / "images")
    for name, kind in ((BUSYBOX, "busybox"), (BASH_IMAGE, "bash")):
        asyncio.run(store.import_image(name, tarballs[kind]))
        asyncio.run(store.ensure(name))
    return store


@pytest.fixture
def sandbox(store: ImageStore) -> SandboxRuntime:
    """A sandbox runtime of its own (its own cache of shells) on the session's store."""
    require(("bwrap", "bubblewrap"), ("prlimit", "util-linux"))
    return SandboxRuntime(store)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty job workspace on the host."""
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def engine(tarballs: dict[str, Path]) -> Iterator[Dockerd]:
    """A real dockerd on a private socket, with both images imported."""
    engine = Dockerd()
    try:
        engine.start()
    except EngineUnavailable as exc:
        engine.stop()
        unavailable(f"no Docker engine for the docker runtime tests: {exc}")
    try:
        for name, kind in ((DOCKER_BUSYBOX, "busybox"), (DOCKER_BASH, "bash")):
            imported = engine.docker("import", str(tarballs[kind]), name)
            assert imported.returncode == 0, imported.stderr.decode()
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def docker(engine: Dockerd) -> DockerRuntime:
    """The docker runtime against the session's engine."""
    return DockerRuntime(docker=engine.cli, host=engine.host, default_image=DOCKER_BUSYBOX)


# -- sandbox ---------------------------------------------------------------------------------


async def test_sandbox_runs_a_step_with_bash_when_its_image_has_it(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    shell = await sandbox.shell(BASH_IMAGE)
    assert shell.started("run.0") == (
        f"running step run.0 with bash (found in image {BASH_IMAGE} at {BASH})"
    )
    assert shell.failed("run.0") == ""
    code, out, err = await run_step(sandbox, workspace, BASH_IMAGE, shell)
    assert (code, out) == (0, [f"in /data/sub with {BASH}"]), err


async def test_sandbox_runs_a_step_with_sh_when_its_image_has_no_bash(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    shell = await sandbox.shell(BUSYBOX)
    assert shell.started("run.0") == f"running step run.0 with sh (image {BUSYBOX} has no bash)"
    code, out, err = await run_step(sandbox, workspace, BUSYBOX, shell)
    assert code == 127 and out == [], out
    assert any("pushd: not found" in line for line in err), err
    hint = shell.failed("run.0")
    assert hint.startswith(f"step run.0 ran with sh because image {BUSYBOX} has no bash")
    assert "pushd" in hint and "use an image that has bash" in hint


async def test_sandbox_default_root_has_the_hosts_bash(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    shell = await sandbox.shell(None)
    assert shell.name == "bash", shell
    assert shell.reason == f"found in the default root (the host's /usr) at {shell.path}"
    code, out, err = await run_step(sandbox, workspace, None, shell)
    assert (code, out) == (0, [f"in /data/sub with {shell.path}"]), err


def _variant(busybox_root: Path, target: Path, links: dict[str, str]) -> Path:
    """A copy of the busybox root with `links` (path in the image: symlink text) added."""
    shutil.copytree(busybox_root, target, symlinks=True)
    for path, text in links.items():
        link = target / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(text)
    return target


async def test_sandbox_follows_an_images_symlinks_inside_the_image_only(
    sandbox: SandboxRuntime, store: ImageStore, busybox_root: Path, tmp_path: Path
) -> None:
    # The host has /usr/bin/bash: followed on the host, the first two links would find it.
    assert shutil.which("bash", path="/usr/bin") == "/usr/bin/bash"
    cases = {
        # Absolute and climbing links that reach the HOST's bash when followed on the host.
        "local/link-out": {"bin/bash": "/usr/bin/bash"},
        "local/climb-out": {"bin/bash": "../../../../../../usr/bin/bash"},
        "local/loop": {"bin/bash": "bash2", "bin/bash2": "bash"},
        # A chain that stays inside the image ends at its busybox: that is bash here.
        "local/link-in": {"opt/current": "shells", "opt/shells/bash": "/bin/busybox"},
    }
    for n, (name, links) in enumerate(cases.items()):
        root = _variant(busybox_root, tmp_path / f"root-{n}", links)
        if name == "local/link-in":
            (root / "bin" / "bash").symlink_to("/opt/current/bash")
        await store.import_image(name, root)
        await store.ensure(name)
    for name in ("local/link-out", "local/climb-out", "local/loop"):
        assert await sandbox.shell(name) == Shell.sh(f"image {name} has no bash")
    assert await sandbox.shell("local/link-in") == Shell.bash("/bin/bash", "image local/link-in")


async def test_sandbox_looks_again_at_an_image_imported_again(
    sandbox: SandboxRuntime, store: ImageStore, tarballs: dict[str, Path]
) -> None:
    name = "local/changing"
    await store.import_image(name, tarballs["busybox"])
    await store.ensure(name)
    assert (await sandbox.shell(name)).name == "sh"
    await store.import_image(name, tarballs["bash"])
    await store.ensure(name)
    assert await sandbox.shell(name) == Shell.bash(BASH, f"image {name}")


# -- shell -----------------------------------------------------------------------------------


async def test_the_shell_runtime_runs_steps_with_the_hosts_bash(workspace: Path) -> None:
    runtime = ShellRuntime()
    host_bash = shutil.which("bash")
    assert host_bash is not None
    shell = await runtime.shell(BUSYBOX)  # images mean nothing to it
    assert shell == Shell.bash(host_bash, "this host")
    code, out, err = await run_step(runtime, workspace, None, shell)
    assert (code, out) == (0, [f"in {workspace}/sub with {host_bash}"]), err
    assert await ShellRuntime(path="/nonexistent").shell(None) == Shell.sh("this host has no bash")


# -- docker ----------------------------------------------------------------------------------


async def test_docker_runs_a_step_with_bash_only_when_its_image_has_it(
    docker: DockerRuntime, workspace: Path
) -> None:
    await docker.prepare([DOCKER_BASH, DOCKER_BUSYBOX])
    shell = await docker.shell(DOCKER_BASH)
    assert shell == Shell.bash(BASH, f"image {DOCKER_BASH}")
    code, out, err = await run_step(docker, workspace, DOCKER_BASH, shell)
    assert (code, out) == (0, [f"in /data/sub with {BASH}"]), err

    plain = await docker.shell(None)  # the default image: busybox
    assert plain == Shell.sh(f"image {DOCKER_BUSYBOX} has no bash")
    code, out, err = await run_step(docker, workspace, DOCKER_BUSYBOX, plain)
    assert code == 127 and any("pushd: not found" in line for line in err), (out, err)


async def test_docker_looks_again_when_a_tag_holds_another_image(
    docker: DockerRuntime, engine: Dockerd, tarballs: dict[str, Path]
) -> None:
    name = f"offload-test/changing:{secrets.token_hex(3)}"
    assert engine.docker("import", str(tarballs["busybox"]), name).returncode == 0
    await docker.prepare([name])
    assert (await docker.shell(name)).name == "sh"
    assert engine.docker("import", str(tarballs["bash"]), name).returncode == 0
    await docker.prepare([name])
    assert await docker.shell(name) == Shell.bash(BASH, f"image {name}")


# -- the batch run step's wrapper ------------------------------------------------------------

STEP_SCRIPT = (
    "echo out1\n"
    "printf 'err1\\n' >&2\n"
    "printf 'out2 \\001\\377 no newline'\n"
    "printf '  - two\\n\\n' >&2\n"
    "exit 3\n"
)


@pytest.mark.parametrize("program", ["busybox", "dash", "bash"])
def test_the_run_wrapper_keeps_each_stream_byte_for_byte_and_traces_to_the_log(
    tmp_path: Path, program: str
) -> None:
    require((program, program))
    shell = shutil.which(program) or program
    if program == "busybox":
        # Busybox is sh when called sh, as in the images.
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "sh").symlink_to(shell)
        shell = str(tmp_path / "bin" / "sh")
    batch = tmp_path / ".offload-batch"
    batch.mkdir()
    (batch / "step0.sh").write_text(STEP_SCRIPT)
    workdir = tmp_path / "repository" / "sub" / "dir"
    workdir.mkdir(parents=True)
    # As the executor writes and runs it: set +e, set -x, then the wrapper's commands.
    script = tmp_path / "run.sh"
    script.write_text("set +e\nset -x\n" + "\n".join(run_commands(0, "sub/dir")) + "\n")
    done = subprocess.run(
        [shell, str(script)],
        cwd=workdir,
        env={"PATH": os.environ["PATH"], "OFFLOAD_SHELL": shell},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert (batch / "step0.out").read_bytes() == b"out1\nout2 \x01\xff no newline"
    assert (batch / "step0.err").read_bytes() == b"err1\n  - two\n\n"
    # The log gets both streams, each on its own side, and the wrapper's trace on stderr.
    assert done.stdout == b"out1\nout2 \x01\xff no newline"
    assert b"err1\n" in done.stderr
    # The script's run is announced on one whole line; the pipeline's parts are not traced.
    assert f"+ {shell} ../../../.offload-batch/step0.sh\n".encode() in done.stderr
    assert b"tee" not in done.stderr and b"+ exit 3\n" in done.stderr
