"""Runtimes against real bubblewrap, a real umoci/skopeo image store and a real Docker engine."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import os
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from busybox import BusyboxMissing, build_rootfs, build_tarball
from ci import unavailable
from dockerd import Dockerd, EngineUnavailable

from offload.executor.images import ImageStore
from offload.executor.process import StepProcess, StepTimeout
from offload.executor.runtimes.base import (
    ImageNotFound,
    Limits,
    Mount,
    Runtime,
    Step,
    StepUnsupported,
)
from offload.executor.runtimes.docker import DockerRuntime, container_name
from offload.executor.runtimes.registry import (
    RUNTIMES,
    RuntimeSettings,
    build_runtime,
    default_runtime,
)
from offload.executor.runtimes.sandbox import SandboxRuntime
from offload.executor.runtimes.shell import ShellRuntime

IMAGE = "local/busybox"
DOCKER_IMAGE = "offload-test/busybox:latest"
PAGE = "offload host-only page"
ROOTS = [pytest.param(IMAGE, id="busybox-image"), pytest.param(None, id="default-root")]


def require(*tools: tuple[str, str]) -> None:
    """Skip (fail on CI) unless every (command, Debian package) is installed."""
    for command, package in tools:
        if shutil.which(command) is None:
            unavailable(f"{command} is not installed: apt-get install {package}")


@dataclass
class Ran:
    """What a user would see of a finished step: exit code and output."""

    code: int = 0
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Both streams, for messages and searching."""
        return "\n".join([*self.out, *self.err])


def step_process(
    runtime: Runtime,
    workspace: Path,
    script: str,
    ran: Ran,
    *,
    image: str | None = IMAGE,
    limits: Limits = Limits(),
    env: dict[str, str] | None = None,
    dir: str = "",
    run_id: str | None = None,
    mounts: tuple[Mount, ...] = (),
) -> StepProcess:
    """Write the script into the workspace and make the process that runs it."""
    (workspace / "step.sh").write_text(script)
    run_id = run_id or f"test-{secrets.token_hex(4)}"
    step = Step("test", "step.sh", image=image, dir=dir, env=env or {}, mounts=mounts)
    argv = runtime.command(step, workspace, limits, run_id)

    async def sink(stream: str, line: str) -> None:
        (ran.out if stream == "stdout" else ran.err).append(line)

    return StepProcess.for_runtime(runtime, run_id, argv, sink)


async def run_step(
    runtime: Runtime,
    workspace: Path,
    script: str,
    *,
    image: str | None = IMAGE,
    limits: Limits = Limits(),
    env: dict[str, str] | None = None,
    dir: str = "",
    mounts: tuple[Mount, ...] = (),
) -> Ran:
    """Run one step to its end."""
    ran = Ran()
    process = step_process(
        runtime, workspace, script, ran, image=image, limits=limits, env=env, dir=dir, mounts=mounts
    )
    ran.code = await process.run(timeout=60)
    return ran


async def wait_for_line(ran: Ran, text: str, within: float = 15.0) -> None:
    """Wait until the step printed `text`."""
    deadline = time.monotonic() + within
    while text not in ran.out:
        assert time.monotonic() < deadline, f"the step never printed {text!r}: {ran.text}"
        await asyncio.sleep(0.02)


def host_processes(marker: str) -> list[str]:
    """Processes on the host whose command line contains `marker` (scanning /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in text:
            found.append(f"pid {cmdline.parent.name}: {text.strip()}")
    return found


async def leftovers(marker: str, within: float = 10.0) -> list[str]:
    """The processes still matching `marker` after waiting up to `within` seconds."""
    deadline = time.monotonic() + within
    # Polled: nothing notifies us when another process's child exits.
    while (found := host_processes(marker)) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return found


async def running(marker: str, count: int, within: float = 10.0) -> list[str]:
    """The processes matching `marker` once `count` of them run (or `within` seconds pass)."""
    deadline = time.monotonic() + within
    # A backgrounded child execs after the script went on: it can lag the script's output.
    while len(found := host_processes(marker)) < count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return found


def marker() -> str:
    """A sleep duration no other process on the host uses, to find the step's processes."""
    return f"{secrets.randbelow(10**6) + 10**6}"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem directory."""
    try:
        return build_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    except BusyboxMissing as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def tarball(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox root as a plain rootfs tarball."""
    return build_tarball(rootfs, tmp_path_factory.mktemp("tarball") / "busybox.tar")


@pytest.fixture(scope="session")
def store(tarball: Path, tmp_path_factory: pytest.TempPathFactory) -> ImageStore:
    """An image store holding the busybox image, imported and unpacked."""
    require(("umoci", "umoci"), ("skopeo", "skopeo"))
    store = ImageStore(tmp_path_factory.mktemp("executor") / "images")
    asyncio.run(store.import_image(IMAGE, tarball))
    asyncio.run(store.ensure(IMAGE))
    return store


@pytest.fixture(scope="session")
def sandbox(store: ImageStore) -> SandboxRuntime:
    """The sandbox runtime on the session's image store."""
    require(("bwrap", "bubblewrap"), ("prlimit", "util-linux"))
    return SandboxRuntime(store)


@pytest.fixture
def fresh_store(tmp_path: Path) -> ImageStore:
    """An empty image store of its own (for import and cache behaviour)."""
    require(("umoci", "umoci"), ("skopeo", "skopeo"))
    return ImageStore(tmp_path / "images", pull=False)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty job workspace on the host."""
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def host_http() -> Iterator[int]:
    """A real HTTP server on the host's 127.0.0.1; its port."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="session")
def engine(tarball: Path) -> Iterator[Dockerd]:
    """A real dockerd on a private socket, with the busybox tarball imported as an image."""
    engine = Dockerd()
    try:
        engine.start()
    except EngineUnavailable as exc:
        engine.stop()
        unavailable(f"no Docker engine for the docker runtime tests: {exc}")
    try:
        imported = engine.docker("import", str(tarball), DOCKER_IMAGE)
        assert imported.returncode == 0, imported.stderr.decode()
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def docker(engine: Dockerd) -> DockerRuntime:
    """The docker runtime against the test's engine."""
    return DockerRuntime(docker=engine.cli, host=engine.host, default_image=DOCKER_IMAGE)


def host_listens(port: int) -> bool:
    """Whether something on the host accepts connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


NC = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 127.0.0.1 {port} && echo REACHED-{port}"


# -- f. isolation of the sandbox ---------------------------------------------------------------


async def test_sandbox_check_describes_the_isolation(sandbox: SandboxRuntime) -> None:
    line = await sandbox.check()
    assert line.startswith("sandbox: bubblewrap")
    assert "no capabilities" in line and "read-only root" in line


@pytest.mark.parametrize("image", ROOTS)
async def test_sandbox_cannot_see_host_processes(
    sandbox: SandboxRuntime, workspace: Path, image: str | None
) -> None:
    mark = marker()
    host_sleep = await asyncio.create_subprocess_exec("sleep", mark)
    try:
        ran = await run_step(
            sandbox,
            workspace,
            f"ls /proc | grep -c '^[0-9]'\n"
            f"cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo\n"
            f"kill -0 {host_sleep.pid} && echo SIGNALLED-HOST\n",
            image=image,
        )
    finally:
        host_sleep.kill()
        await host_sleep.wait()
    assert ran.out, ran.text
    assert int(ran.out[0]) < 10, f"the step sees {ran.out[0]} processes: {ran.text}"
    assert mark not in ran.text
    assert "SIGNALLED-HOST" not in ran.text


async def test_sandbox_cannot_reach_host_services(
    sandbox: SandboxRuntime, workspace: Path, host_http: int
) -> None:
    postgres = 5432
    ran = await run_step(
        sandbox,
        workspace,
        "cat /proc/net/dev\n"
        + NC.format(port=host_http)
        + "\n"
        + NC.format(port=postgres)
        + "\nexit 0\n",
    )
    interfaces = [line.split(":")[0].strip() for line in ran.out if ":" in line]
    assert interfaces == ["lo"], ran.text
    assert f"REACHED-{host_http}" not in ran.text and PAGE not in ran.text
    assert f"REACHED-{postgres}" not in ran.text, (
        f"the step reached 127.0.0.1:{postgres} (host listens: {host_listens(postgres)})"
    )

    # With network granted the step has an interface to the outside (the check above can
    # fail), and still not the host's loopback (tests/hostile/test_network.py tries more).
    allowed = await run_step(
        sandbox,
        workspace,
        "cat /proc/net/dev\n" + NC.format(port=host_http),
        limits=Limits(network=True),
    )
    granted = [line.split(":")[0].strip() for line in allowed.out if ":" in line]
    assert granted == ["lo", "tap0"], allowed.text
    assert PAGE not in allowed.text, allowed.text


@pytest.mark.parametrize("image", ROOTS)
async def test_sandbox_cannot_read_the_executors_environment(
    sandbox: SandboxRuntime, workspace: Path, monkeypatch: pytest.MonkeyPatch, image: str | None
) -> None:
    token = f"executor-token-{secrets.token_hex(8)}"
    monkeypatch.setenv("EXECUTOR_REGISTRATION_TOKEN", token)
    ran = await run_step(
        sandbox,
        workspace,
        "env\nfor p in /proc/[0-9]*; do cat $p/environ; echo; done\n",
        image=image,
        env={"STEP_VALUE": "given-to-the-step"},
    )
    assert "STEP_VALUE=given-to-the-step" in ran.out
    assert token not in ran.text
    assert "EXECUTOR_REGISTRATION_TOKEN" not in ran.text


@pytest.mark.parametrize("image", ROOTS)
async def test_sandbox_writes_nothing_outside_its_workspace(
    sandbox: SandboxRuntime, workspace: Path, image: str | None
) -> None:
    escape = f"offload-escape-{secrets.token_hex(4)}"
    ran = await run_step(
        sandbox,
        workspace,
        f"echo kept > /data/result.txt\n"
        f"for target in /{escape} /etc/{escape} /usr/{escape} /bin/{escape}; do\n"
        f"  touch $target 2>&1 || echo REFUSED $target\n"
        f"done\n"
        f"echo tmp > /tmp/{escape} && echo WROTE-SANDBOX-TMP\n",
        image=image,
    )
    assert (workspace / "result.txt").read_text() == "kept\n"
    for target in ("", "etc/", "usr/", "bin/"):
        assert f"REFUSED /{target}{escape}" in ran.out, ran.text
        assert not (Path("/") / target / escape).exists()
    assert "Read-only file system" in ran.text
    # /tmp is the sandbox's own tmpfs: writable, gone afterwards, never the host's /tmp.
    assert "WROTE-SANDBOX-TMP" in ran.out
    assert not (Path("/tmp") / escape).exists()


@pytest.mark.parametrize("image", ROOTS)
async def test_sandbox_drops_every_capability(
    sandbox: SandboxRuntime, workspace: Path, image: str | None
) -> None:
    ran = await run_step(sandbox, workspace, "grep Cap /proc/self/status", image=image)
    caps = dict(line.split(":\t") for line in ran.out)
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "0000000000000000", ran.text


async def test_sandbox_leaves_no_process_behind(sandbox: SandboxRuntime, workspace: Path) -> None:
    mark = marker()
    ran = await run_step(sandbox, workspace, f"sleep {mark} &\nsleep {mark} &\necho started\n")
    assert ran.out == ["started"] and ran.code == 0
    assert await leftovers(f"sleep {mark}") == []


# -- c. cancel: the whole tree dies ----------------------------------------------------------


TRAPS_TERM = """trap '' TERM
sleep {mark} &
( trap '' TERM; sleep {mark} & sleep {mark} ) &
echo ready
wait
"""


@pytest.mark.parametrize("runtime_name", ["sandbox", "shell"])
async def test_terminate_kills_a_tree_that_traps_sigterm(
    request: pytest.FixtureRequest, workspace: Path, runtime_name: str
) -> None:
    runtime: Runtime = (
        request.getfixturevalue("sandbox") if runtime_name == "sandbox" else ShellRuntime()
    )
    mark = marker()
    ran = Ran()
    process = step_process(runtime, workspace, TRAPS_TERM.format(mark=mark), ran)
    task = asyncio.create_task(process.run())
    await wait_for_line(ran, "ready")
    assert len(await running(f"sleep {mark}", 3)) == 3

    started = time.monotonic()
    await process.terminate(grace=1.0)
    code = await task
    took = time.monotonic() - started

    assert await leftovers(f"sleep {mark}", within=10.0 - took) == []
    assert took < 10.0
    if runtime_name == "shell":
        # Nothing listened to SIGTERM: it took the grace period and a SIGKILL.
        assert took >= 1.0
        assert code == -signal.SIGKILL


async def test_cancelling_the_awaiting_task_kills_the_group(workspace: Path) -> None:
    mark = marker()
    ran = Ran()
    process = step_process(
        ShellRuntime(), workspace, f"sleep {mark} & sleep {mark} &\necho ready\nwait\n", ran
    )
    task = asyncio.create_task(process.run(grace=0.5))
    await wait_for_line(ran, "ready")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert host_processes(f"sleep {mark}") == []


async def test_a_step_past_its_time_limit_is_killed(workspace: Path) -> None:
    mark = marker()
    process = step_process(ShellRuntime(), workspace, f"sleep {mark}\n", Ran())
    started = time.monotonic()
    with pytest.raises(StepTimeout, match=r"time limit of 0\.5s"):
        await process.run(timeout=0.5, grace=0.5)
    assert time.monotonic() - started < 5
    assert host_processes(f"sleep {mark}") == []


async def test_large_output_on_both_streams_arrives_whole(workspace: Path) -> None:
    # Enough to fill both pipes many times over: a reader that drains one pipe at a time
    # would deadlock here.
    ran = await run_step(
        ShellRuntime(),
        workspace,
        "i=0; while [ $i -lt 20000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done\n"
        "head -c 3000000 /dev/zero | tr '\\0' x\n",
    )
    assert ran.code == 0
    assert ran.err == [f"err{i}" for i in range(20000)]
    assert ran.out[:20000] == [f"out{i}" for i in range(20000)]
    # One 3 MB line arrives in 1 MiB pieces rather than exhausting memory.
    assert "".join(ran.out[20000:]) == "x" * 3_000_000
    assert max(len(line) for line in ran.out) == 1 << 20


# -- limits in the sandbox -------------------------------------------------------------------


async def test_sandbox_pids_limit_stops_a_fork_bomb(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    forks = "for i in $(seq 40); do sleep 30 & done; echo forked\n"
    limited = await run_step(sandbox, workspace, forks, limits=Limits(pids=16))
    assert "can't fork" in limited.text, limited.text
    assert "forked" not in limited.out or limited.code != 0

    unlimited = await run_step(sandbox, workspace, forks, limits=Limits(pids=4096))
    assert unlimited.out == ["forked"], unlimited.text


async def test_sandbox_memory_limit_stops_a_big_allocation(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    allocate = "x=$(head -c $SIZE /dev/zero | tr '\\0' a); echo allocated ${#x}\n"
    limits = Limits(memory_bytes=64 * 1024 * 1024)
    big = Ran()
    process = step_process(
        sandbox, workspace, allocate, big, limits=limits, env={"SIZE": "100000000"}
    )
    big.code = await process.run(timeout=60)
    assert big.code != 0 and "allocated" not in big.text, big.text
    if "memory limit by cgroup" in await sandbox.check():
        # The cgroup's OOM killer ends the step, and the runtime's stop says which limit.
        assert process.outcome.limit == "memory", process.outcome
    else:
        assert "out of memory" in big.text, big.text  # RLIMIT_AS: the allocation fails

    small = await run_step(sandbox, workspace, allocate, limits=limits, env={"SIZE": "1000000"})
    assert small.out == ["allocated 1000000"], small.text


async def test_sandbox_open_files_limit(sandbox: SandboxRuntime, workspace: Path) -> None:
    ran = await run_step(sandbox, workspace, "ulimit -n", limits=Limits(open_files=123))
    assert ran.out == ["123"]


async def test_sandbox_runs_in_the_steps_dir_with_its_env(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    (workspace / "repo" / "sub").mkdir(parents=True)
    ran = await run_step(
        sandbox, workspace, 'pwd; echo "$GREETING"', dir="repo/sub", env={"GREETING": "hi"}
    )
    assert ran.out == ["/data/repo/sub", "hi"]


# -- mounts ----------------------------------------------------------------------------------


MOUNTED = "mounted from the workspace"
# Reads a read-only file mount, tries to change it, and writes into a read-write directory.
MOUNT_SCRIPT = """cat {file}
echo changed > {file} 2>&1 || echo REFUSED-READ-ONLY
echo written > {dir}/result.txt && echo WROTE-READ-WRITE
"""


def mounted(workspace: Path, file_target: str, dir_target: str) -> tuple[Mount, ...]:
    """A read-only file and a read-write directory of the workspace, mounted at the targets."""
    (workspace / "given").mkdir()
    (workspace / "given" / "conf,1.txt").write_text(MOUNTED + "\n")
    (workspace / "out").mkdir()
    return (
        Mount(workspace / "given" / "conf,1.txt", file_target, read_only=True),
        Mount(workspace / "out", dir_target, read_only=False),
    )


def assert_mounted(ran: Ran, workspace: Path) -> None:
    """The step read the file, could not change it, and wrote through the directory."""
    assert ran.out[0] == MOUNTED, ran.text
    assert "REFUSED-READ-ONLY" in ran.out and "Read-only file system" in ran.text, ran.text
    assert (workspace / "given" / "conf,1.txt").read_text() == MOUNTED + "\n"
    assert "WROTE-READ-WRITE" in ran.out, ran.text
    assert (workspace / "out" / "result.txt").read_text() == "written\n"


@pytest.mark.parametrize("image", ROOTS)
async def test_sandbox_mounts_files_over_the_root_and_under_tmp(
    sandbox: SandboxRuntime, workspace: Path, image: str | None
) -> None:
    # /etc/passwd exists in the image (the mount replaces it) and is new on the default root.
    mounts = mounted(workspace, "/etc/passwd", "/tmp/out/deeper")
    script = MOUNT_SCRIPT.format(file="/etc/passwd", dir="/tmp/out/deeper")
    ran = await run_step(sandbox, workspace, script, image=image, mounts=mounts)
    assert ran.code == 0, ran.text
    assert_mounted(ran, workspace)


async def test_sandbox_refuses_a_mount_point_it_cannot_create(
    sandbox: SandboxRuntime, workspace: Path
) -> None:
    (workspace / "conf").write_text("x")
    step = Step("tool", "step.sh", image=IMAGE, mounts=(Mount(workspace / "conf", "/opt/tool"),))
    with pytest.raises(StepUnsupported) as raised:
        sandbox.command(step, workspace, Limits(), "r")
    message = str(raised.value)
    assert f"mounts /opt/tool, which does not exist in image {IMAGE}" in message
    assert "under /tmp" in message and "docker runtime" in message
    missing_in_usr = Step("u", "step.sh", mounts=(Mount(workspace / "conf", "/usr/no-such"),))
    with pytest.raises(StepUnsupported, match="does not exist in the default root"):
        sandbox.command(missing_in_usr, workspace, Limits(), "r")

    # What the check spares the user: bwrap's own failure on the read-only image root.
    run_id = f"test-{secrets.token_hex(4)}"
    argv = sandbox.command(Step("tool", "step.sh", image=IMAGE), workspace, Limits(), run_id)
    at = argv.index("--remount-ro")
    argv[at:at] = ["--ro-bind", str(workspace / "conf"), "/opt/tool"]
    (workspace / "step.sh").write_text("true\n")
    try:
        bwrap = await asyncio.create_subprocess_exec(*argv, stderr=asyncio.subprocess.PIPE)
        _, err = await bwrap.communicate()
    finally:
        await sandbox.stop(run_id)
    assert bwrap.returncode != 0 and b"Read-only file system" in err, err

    # The default root is bwrap's own tmpfs: a new directory there is fine.
    ran = await run_step(
        sandbox, workspace, "cat /opt/tool/conf", image=None,
        mounts=(Mount(workspace / "conf", "/opt/tool/conf"),),
    )  # fmt: skip
    assert ran.out == ["x"], ran.text


async def test_the_shell_runtime_refuses_mounts(workspace: Path) -> None:
    step = Step("files", "step.sh", mounts=(Mount(workspace, "/etc/x"),))
    with pytest.raises(StepUnsupported, match=r"cannot mount anything.*sandbox or docker runtime"):
        ShellRuntime().command(step, workspace, Limits(), "r")


# -- images ----------------------------------------------------------------------------------


@pytest.fixture
def gzipped(tarball: Path, tmp_path: Path) -> Path:
    """The busybox tarball, gzipped (as rootfs tarballs often are)."""
    path = tmp_path / "busybox.tar.gz"
    path.write_bytes(gzip.compress(tarball.read_bytes(), compresslevel=1))
    return path


async def test_import_a_tarball_a_gzipped_tarball_and_a_directory(
    fresh_store: ImageStore, rootfs: Path, tarball: Path, gzipped: Path, workspace: Path
) -> None:
    await fresh_store.import_image("local/base:latest", tarball)
    await fresh_store.import_image("alpine:3.19", gzipped)
    await fresh_store.import_image("busybox", rootfs)

    listed = fresh_store.list()
    assert [i.name for i in listed] == ["alpine:3.19", "busybox:latest", "local/base:latest"]
    assert not any(i.unpacked for i in listed)
    for name in ("local/base", "alpine:3.19", "busybox:latest"):
        root = await fresh_store.ensure(name)
        assert (root / "bin" / "busybox").is_file()
        assert fresh_store.rootfs(name) == root
    assert all(i.unpacked for i in fresh_store.list())

    ran = await run_step(SandboxRuntime(fresh_store), workspace, "echo hi", image="busybox")
    assert ran.out == ["hi"]


async def test_import_an_oci_layout(fresh_store: ImageStore, tarball: Path) -> None:
    # An OCI layout (as `skopeo copy ... oci:DIR` makes) imported through a second store.
    await fresh_store.import_image("local/base", tarball)
    layout = fresh_store.root / "layouts" / fresh_store.list()[0].digest.split(":")[1]
    other = ImageStore(fresh_store.root.parent / "other", pull=False)
    await other.import_image("copied/base:v1", layout)
    root = await other.ensure("copied/base:v1")
    assert (root / "bin" / "busybox").is_file()


async def test_an_image_is_unpacked_once(fresh_store: ImageStore, tarball: Path) -> None:
    await fresh_store.import_image(IMAGE, tarball)
    started = time.monotonic()
    root = await fresh_store.ensure(IMAGE)
    first = time.monotonic() - started
    (root / "unpacked-once").write_text("")  # a re-unpack would lose this

    started = time.monotonic()
    again = await fresh_store.ensure(IMAGE)
    second = time.monotonic() - started

    assert again == root and (again / "unpacked-once").exists()
    assert second < first and second < 0.05, (first, second)
    assert len(list((fresh_store.root / "bundles").iterdir())) == 1


async def test_concurrent_prepares_of_one_image_are_safe(
    fresh_store: ImageStore, tarball: Path
) -> None:
    await fresh_store.import_image(IMAGE, tarball)
    # Another executor process on the same store, and several jobs in this one, at once.
    script = (
        "import asyncio, sys; from pathlib import Path; "
        "from offload.executor.images import ImageStore; "
        "print(asyncio.run(ImageStore(Path(sys.argv[1])).ensure(sys.argv[2])))"
    )
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(fresh_store.root), IMAGE,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stores = [ImageStore(fresh_store.root) for _ in range(4)]
    roots = await asyncio.gather(*(s.ensure(IMAGE) for s in stores))
    out, _ = await other.communicate()

    assert other.returncode == 0
    assert {Path(out.decode().strip()), *roots} == {roots[0]}
    assert len(list((fresh_store.root / "bundles").iterdir())) == 1
    assert list((fresh_store.root / "tmp").iterdir()) == []
    assert (roots[0] / "bin" / "busybox").is_file()


async def test_an_unknown_image_says_how_to_import_it(tmp_path: Path) -> None:
    require(("skopeo", "skopeo"), ("umoci", "umoci"))
    # Pulling is allowed but no registry is reachable (or the image does not exist).
    pulling = SandboxRuntime(ImageStore(tmp_path / "images", pull=True))
    with pytest.raises(ImageNotFound) as raised:
        await pulling.prepare(["offload-test/no-such-image:1"])
    message = str(raised.value)
    assert "offload-test/no-such-image:1" in message
    assert "offload executor images import offload-test/no-such-image:1 TARBALL_OR_DIR" in message

    not_pulling = ImageStore(tmp_path / "images", pull=False)
    with pytest.raises(ImageNotFound, match=r"does not pull images.*images import"):
        await not_pulling.ensure("offload-test/no-such-image:1")


def test_image_names_are_normalised() -> None:
    from offload.executor.images import normalize

    assert normalize("busybox") == "busybox:latest"
    assert normalize("local/base:latest") == "local/base:latest"
    assert normalize("alpine:3.19") == "alpine:3.19"
    assert normalize("localhost:5000/team/tool") == "localhost:5000/team/tool:latest"
    with pytest.raises(ValueError, match="invalid image name 'Bad Name'"):
        normalize("Bad Name")


# -- registry and shell ------------------------------------------------------------------------


def test_an_unknown_runtime_name_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown runtime 'firecracker'; valid runtimes are: "):
        build_runtime("firecracker", RuntimeSettings(images_dir=tmp_path))
    with pytest.raises(ValueError) as raised:
        build_runtime("firecracker", RuntimeSettings(images_dir=tmp_path))
    assert all(name in str(raised.value) for name in RUNTIMES)


def test_the_default_runtime_here_is_the_sandbox(tmp_path: Path) -> None:
    require(("bwrap", "bubblewrap"))
    assert default_runtime() == "sandbox"
    assert build_runtime("sandbox", RuntimeSettings(images_dir=tmp_path)).name == "sandbox"


async def test_the_shell_runtime_says_it_does_not_isolate(workspace: Path) -> None:
    shell = ShellRuntime()
    assert "NO ISOLATION" in await shell.check()
    (workspace / "sub").mkdir()
    ran = await run_step(
        shell, workspace, 'pwd; echo "$GREETING"', dir="sub", env={"GREETING": "hi"}
    )
    assert ran.out == [str(workspace / "sub"), "hi"]


# -- g. the docker runtime against a real engine ---------------------------------------------


async def test_docker_runs_a_step_isolated(
    docker: DockerRuntime, workspace: Path, host_http: int
) -> None:
    line = await docker.check()
    assert line.startswith("docker: ") and "--network none" in line
    await docker.prepare([DOCKER_IMAGE])
    (workspace / "sub").mkdir()

    ran = await run_step(
        docker,
        workspace,
        'echo "$GREETING from $(pwd)" > /data/sub/out.txt\n'
        "cat /proc/net/dev\n"
        "grep CapEff /proc/self/status\n"
        "cat /sys/fs/cgroup/pids/pids.max\n"
        "touch /etc/x 2>&1\n" + NC.format(port=host_http) + "\nexit 0\n",
        image=DOCKER_IMAGE,
        dir="sub",
        env={"GREETING": "hello"},
        limits=Limits(cpus=1, memory_bytes=256 * 1024 * 1024, pids=64),
    )
    assert (workspace / "sub" / "out.txt").read_text() == "hello from /data/sub\n", ran.text
    interfaces = [line.split(":")[0].strip() for line in ran.out if line.count(":") == 1]
    assert "lo" in interfaces and "eth0" not in interfaces, ran.text
    assert "CapEff:\t0000000000000000" in ran.out
    assert "64" in ran.out, ran.text
    assert "Read-only file system" in ran.text
    assert PAGE not in ran.text and f"REACHED-{host_http}" not in ran.text


async def test_docker_mounts_files_even_where_the_image_has_no_such_path(
    docker: DockerRuntime, workspace: Path
) -> None:
    await docker.prepare([DOCKER_IMAGE])
    # The engine makes missing mount points itself, even on a --read-only root.
    mounts = mounted(workspace, "/opt/tool/conf", "/srv/out")
    script = MOUNT_SCRIPT.format(file="/opt/tool/conf", dir="/srv/out")
    ran = await run_step(docker, workspace, script, image=DOCKER_IMAGE, mounts=mounts)
    assert ran.code == 0, ran.text
    assert_mounted(ran, workspace)


async def test_docker_stop_kills_a_running_container(
    docker: DockerRuntime, engine: Dockerd, workspace: Path
) -> None:
    await docker.prepare([DOCKER_IMAGE])
    run_id = f"test-{secrets.token_hex(4)}"
    (workspace / "step.sh").write_text("sleep 600\n")
    argv = docker.command(Step("t", "step.sh", image=DOCKER_IMAGE), workspace, Limits(), run_id)

    def running() -> list[str]:
        found = engine.docker("ps", "--quiet", "--filter", f"name={container_name(run_id)}")
        return found.stdout.decode().split()

    client = await asyncio.create_subprocess_exec(*argv, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while not running():
            assert time.monotonic() < deadline, "the container never started"
            await asyncio.sleep(0.1)
        # Killing the CLI client leaves the container running in the engine ...
        os.killpg(client.pid, signal.SIGKILL)
        await client.wait()
        await asyncio.sleep(0.3)
        assert running(), "the container should outlive its docker CLI client"
    finally:
        # ... until the runtime's stop() removes it.
        await docker.stop(run_id)
    assert running() == []
    await docker.stop(run_id)  # idempotent: nothing left to stop is not an error


async def test_docker_terminate_stops_the_container(
    docker: DockerRuntime, engine: Dockerd, workspace: Path
) -> None:
    run_id = f"test-{secrets.token_hex(4)}"
    ran = Ran()
    process = step_process(
        docker, workspace, "echo ready; sleep 600", ran, image=DOCKER_IMAGE, run_id=run_id
    )
    task = asyncio.create_task(process.run())
    await wait_for_line(ran, "ready")
    started = time.monotonic()
    await process.terminate(grace=1.0)
    await task
    assert time.monotonic() - started < 10
    listed = engine.docker("ps", "--all", "--quiet", "--filter", f"name={container_name(run_id)}")
    assert listed.stdout.decode().split() == []


async def test_docker_unknown_image_is_image_not_found(docker: DockerRuntime) -> None:
    with pytest.raises(ImageNotFound, match=r"offload-test/no-such-image:1.*docker import"):
        await docker.prepare(["offload-test/no-such-image:1"])
