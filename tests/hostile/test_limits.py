"""Limits on by default: a step that takes too much memory, disk, /tmp, processes, CPU or
log output is stopped (or held back, for CPU) and its job says which limit, with its value
and setting; steps run as an unprivileged host uid, never as host root.

Most tests run jobs through a real server and a real executor process whose limits are
small; the uid tests run the sandbox runtime directly, to look at the host side of what a
step did. Both need root (cgroups, loop devices, setpriv), as a production executor does.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox import BusyboxMissing, build_rootfs, build_tarball
from ci import unavailable
from dockerd import Dockerd, EngineUnavailable
from fleet import Fleet, Process, make_repo

from offload.db.url import DatabaseURL
from offload.executor.disks import Disks
from offload.executor.images import ImageStore
from offload.executor.process import StepProcess
from offload.executor.runtimes.base import Limits, Mount, Step
from offload.executor.runtimes.cgroup import Cgroups, Hierarchy
from offload.executor.runtimes.docker import DockerRuntime
from offload.executor.runtimes.sandbox import SandboxRuntime

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="limits need Linux")

STEP_UID = 100_000
PIDS = 64
# The executor's limits: small, so that each test's step goes past one quickly.
LIMITS = {
    "EXECUTOR_JOB_MEMORY": "64M",
    "EXECUTOR_JOB_DISK": "64M",
    "EXECUTOR_JOB_TMP_SIZE": "1M",
    "EXECUTOR_JOB_PIDS": str(PIDS),
    "EXECUTOR_JOB_NUM_CPUS": "0.2",
    "EXECUTOR_JOB_OUTPUT_LIMIT": "64K",
    "EXECUTOR_JOB_USER": f"{STEP_UID}:{STEP_UID}",
}
FINISHED = {"completed", "errored", "failed", "canceled"}


def require_root() -> None:
    """Skip (fail on CI) unless this test runs as root, as an executor with limits does."""
    if os.geteuid() != 0:
        unavailable("limits need a root executor: cgroups, loop devices and setpriv")
    for tool in ("bwrap", "setpriv", "mkfs.ext4"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (see bin/bootstrap's runtime_packages)")


@pytest.fixture(scope="module")
def passable(passable_tmp: Path | None) -> Iterator[Path]:
    """A directory of this module's that the step uid may pass through."""
    require_root()
    assert passable_tmp is not None
    path = Path(tempfile.mkdtemp(prefix="limits-", dir=passable_tmp))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def limited(passable: Path, sqlite_template: Path) -> Iterator[tuple[Fleet, Process]]:
    """A server with a repository, and one executor with small limits; the executor."""
    database = passable / "offload.db"
    shutil.copy(sqlite_template, database)
    fleet = Fleet(DatabaseURL.for_sqlite(database), passable / "data")
    make_repo(passable / "src" / "demo", {"README": "hello from demo\n"})
    try:
        fleet.start_server()
        added = fleet.offload("repos", "add", str(passable / "src" / "demo"), "--name", "demo")
        assert added.returncode == 0, added.stderr
        executor = fleet.start_executor("limited", slots=2, **LIMITS)
        yield fleet, executor
    finally:
        fleet.stop_all()


def run_job(fleet: Fleet, script: str, timeout: float = 90) -> tuple[dict[str, object], str]:
    """Run `script` as a job's one step; the finished job and its whole log."""
    job_id = fleet.submit("demo", ["sh", "-c", script])
    job = fleet.wait_state(job_id, FINISHED, timeout=timeout)
    log = "\n".join(f"[{e['key']}]\n{e['out']}" for e in fleet.logs(job_id))
    return job, log


def assert_stopped_by(job: dict[str, object], log: str, limit: str) -> None:
    """The job failed, and both its failure and its step's log say it was `limit`."""
    assert job["state"] in ("errored", "failed"), (job, log)
    assert f"step run failed: {limit}" in str(job["failureMessage"]), (job, log)
    assert f"offload: step run failed: {limit}" in log, log


# -- the start line ----------------------------------------------------------------------


def test_the_start_line_shows_every_limit(limited: tuple[Fleet, Process]) -> None:
    _, executor = limited
    line = executor.wait_for(r"connected to .*").string
    assert "limits: 0.2 CPUs, memory 64M, 64 pids, disk 64M (an ext4 filesystem per job" in line
    assert "/tmp 1M, output 64K, 30m per job, steps as uid 100000" in line
    assert "memory limit by cgroup, pids limit by cgroup, cpu limit by cgroup" in line


# -- each limit stops a step that goes past it ---------------------------------------------


def test_memory_limit(limited: tuple[Fleet, Process]) -> None:
    fleet, _ = limited
    job, log = run_job(fleet, "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo got ${#x}")
    assert_stopped_by(job, log, "memory limit 64M (EXECUTOR_JOB_MEMORY) reached")
    assert "got 200000000" not in log


def test_disk_limit(limited: tuple[Fleet, Process]) -> None:
    fleet, _ = limited
    job, log = run_job(fleet, "dd if=/dev/zero of=/data/big bs=1M count=200; ls -s /data/big")
    assert_stopped_by(job, log, "disk limit 64M (EXECUTOR_JOB_DISK) reached")
    assert "No space left on device" in log
    # The next job gets a disk of its own size again: nothing of the full one is left.
    job, log = run_job(fleet, "df -k /data | tail -1; dd if=/dev/zero of=/data/f bs=1M count=32")
    assert job["state"] == "completed", log


def test_tmp_limit(limited: tuple[Fleet, Process]) -> None:
    fleet, _ = limited
    job, log = run_job(fleet, "head -c 4000000 /dev/zero > /tmp/big")
    assert_stopped_by(job, log, "/tmp limit 1M (EXECUTOR_JOB_TMP_SIZE) reached")


def test_pids_limit_holds_a_fork_bomb(limited: tuple[Fleet, Process]) -> None:
    fleet, _ = limited
    # Its shell's traces and "Cannot fork" go nowhere: the output limit is not this test's.
    bomb = "exec 2>/dev/null; bomb() { bomb | bomb & }; bomb; sleep 4"
    # The executor's run groups are offload/<its run>/<step run>; only this test's bomb runs.
    # They are sampled on a thread of their own, every few milliseconds: the executor ends
    # the step at the first failed fork, which can come before one look between API calls.
    groups = "/sys/fs/cgroup/pids/offload/limited-*/*/pids.current"
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            for current in Path("/").glob(groups.lstrip("/")):
                try:
                    peak[0] = max(peak[0], int(current.read_text()))
                except (OSError, ValueError):
                    pass
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    job_id = fleet.submit("demo", ["sh", "-c", bomb])
    late: list[float] = []
    started = time.monotonic()
    try:
        while True:
            # How late a 10 ms sleep wakes up: the host stays responsive while the bomb runs.
            before = time.monotonic()
            time.sleep(0.01)
            late.append(time.monotonic() - before - 0.01)
            if fleet.job(job_id)["state"] in FINISHED or time.monotonic() - started > 60:
                break
    finally:
        done.set()
        sampler.join()
    job = fleet.wait_state(job_id, FINISHED)
    log = "\n".join(str(e["out"]) for e in fleet.logs(job_id))
    assert_stopped_by(job, log, f"pids limit {PIDS} (EXECUTOR_JOB_PIDS) reached")
    # Seen now and then (processes come and go fast): never more than the limit.
    assert 0 < peak[0] <= PIDS, f"the bomb's group held {peak[0]} processes"
    assert sorted(late)[len(late) // 2] < 0.05, f"the host lagged: {sorted(late)[-5:]}"
    assert max(late) < 1.0, f"the host lagged: {sorted(late)[-5:]}"


def test_cpu_limit_holds_a_busy_step_back(limited: tuple[Fleet, Process]) -> None:
    fleet, _ = limited
    # Two busy loops for 3 s of wall time: without a limit, up to 6 s of CPU; with 0.2 CPUs,
    # at most 0.6 s. The step reports the CPU time its processes got.
    job, log = run_job(
        fleet,
        "timeout 3 sh -c 'while :; do :; done' & timeout 3 sh -c 'while :; do :; done'; wait; "
        "times",
    )
    assert job["state"] == "completed", log
    assert (
        "the cpu limit 0.2 CPUs (EXECUTOR_JOB_NUM_CPUS) held the step back (throttled for" in log
    ), log
    # `times` prints the shell's own user and system time, then its children's: 0m0.31s 0m0s.
    times = [
        m.groups() for m in re.finditer(r"^stdout: (\d+)m([\d.]+)s (\d+)m([\d.]+)s$", log, re.M)
    ]
    assert len(times) == 2, log
    used = sum(int(m) * 60 + float(s) for m, s in (times[1][:2], times[1][2:]))
    assert used < 1.5, f"the step's processes got {used:.2f}s of CPU in 3s: {times}"


def test_output_limit(limited: tuple[Fleet, Process]) -> None:
    fleet, _ = limited
    started = time.monotonic()
    job, log = run_job(fleet, "yes 'offload output line'")
    assert job["state"] in ("errored", "failed"), log
    assert "output limit 64K (EXECUTOR_JOB_OUTPUT_LIMIT) reached" in str(job["failureMessage"])
    assert "offload: output limit 64K (EXECUTOR_JOB_OUTPUT_LIMIT) reached" in log
    # Stopped when it got there, and only that much was kept.
    assert time.monotonic() - started < 30
    assert len(log.encode()) < 80 * 1024, len(log)


def mounted(path: Path) -> bool:
    """Whether a filesystem is mounted at `path`."""
    return os.path.ismount(path)


def exists(path: Path) -> bool:
    """Whether anything (a link included) is at `path`."""
    return os.path.lexists(path)


async def test_workspace_disks_of_a_dead_executor_go_and_a_live_ones_stay(passable: Path) -> None:
    root = passable / "shared-disks"
    # An executor that dies (SIGKILL) with its disk mounted and a workspace on it.
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from offload.executor.disks import Disks\n"
        "async def main():\n"
        "    disk = await (await Disks.open(Path(sys.argv[1]), 64 << 20)).acquire()\n"
        "    (disk.path / 'workspace-1').mkdir()\n"
        "    print(disk.path, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    dead = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(root), stdout=asyncio.subprocess.PIPE
    )
    assert dead.stdout is not None
    dead_disk = Path((await asyncio.wait_for(dead.stdout.readline(), 30)).decode().strip())
    dead.kill()
    await dead.wait()
    assert mounted(dead_disk)

    live = await Disks.open(root, 64 << 20)  # removes the dead one's disk ...
    try:
        assert not mounted(dead_disk) and not exists(dead_disk)
        assert not exists(dead_disk.with_suffix(".img"))
        other = await Disks.open(root, 64 << 20)  # ... but not a live executor's
        try:
            disk = await live.acquire()
            assert mounted(disk.path) and disk.empty()
            live.release(disk)
        finally:
            await other.close()
        assert len(list(root.glob("disk-*.img"))) == 1
    finally:
        await live.close()
    assert list(root.glob("disk-*")) == []


# -- steps run as an unprivileged host uid ---------------------------------------------------


def test_a_job_runs_as_the_step_uid_and_owns_its_checkout(limited: tuple[Fleet, Process]) -> None:
    fleet, _ = limited
    job, log = run_job(
        fleet,
        "cat /proc/self/uid_map; echo uid=$(id -u) owner=$(stat -c %u README); "
        "echo changed >> README && echo WROTE-README",
    )
    assert job["state"] == "completed", log
    # Root inside its namespace, uid 100000 outside it: the only uid mapped.
    maps = [line.split()[1:] for line in log.splitlines() if line.startswith("stdout: ")]
    assert ["0", str(STEP_UID), "1"] in maps, log
    # The checkout belongs to the step's uid (root inside), so the step can change it.
    assert "stdout: uid=0 owner=0" in log, log
    assert "stdout: WROTE-README" in log, log


@pytest.fixture
def sandbox(passable: Path) -> SandboxRuntime:
    """The sandbox runtime (steps on the default root, no image needed)."""
    require_root()
    return SandboxRuntime(ImageStore(passable / "images", pull=False))


@pytest.fixture
def step_workspace(passable: Path) -> Iterator[Path]:
    """A workspace owned by the step uid, as the executor makes them."""
    path = Path(tempfile.mkdtemp(prefix="workspace-", dir=passable))
    os.chown(path, STEP_UID, STEP_UID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def run_as_step_uid(
    sandbox: SandboxRuntime, workspace: Path, script: str, mounts: tuple[Mount, ...] = ()
) -> tuple[int, str]:
    """Run `script` in the sandbox as the step uid, with the default limits; code, output."""
    script_path = workspace / "step.sh"
    script_path.write_text(script)
    os.chown(script_path, STEP_UID, STEP_UID)
    run_id = f"uid-{secrets.token_hex(4)}"
    limits = Limits(cpus=1, memory_bytes=2 << 30, pids=1024, tmp_bytes=512 << 20, uid=STEP_UID)
    argv = sandbox.command(Step("t", "step.sh", mounts=mounts), workspace, limits, run_id)
    lines: list[str] = []
    process = StepProcess.for_runtime(sandbox, run_id, argv, lambda s, line: lines.append(line))
    code = await process.run(timeout=60)
    return code, "\n".join(lines)


async def test_a_step_cannot_read_a_root_only_file_bound_into_its_sandbox(
    sandbox: SandboxRuntime, step_workspace: Path
) -> None:
    secret = step_workspace / "root-only"
    secret.write_text(f"root-only {secrets.token_hex(8)}\n")
    secret.chmod(0o600)  # root's, as the executor's own files are
    code, out = await run_as_step_uid(
        sandbox,
        step_workspace,
        "echo uid=$(id -u); cat /tmp/secret; cat /data/root-only; echo done\n",
        mounts=(Mount(source=secret, target="/tmp/secret"),),
    )
    assert code == 0, out
    assert "uid=0" in out.splitlines()  # root in its namespace ...
    assert secret.read_text().strip() not in out  # ... but not on the host
    assert out.count("Permission denied") == 2, out

    # The check can fail: the same step, run as root (no step uid), reads it (once root, with
    # no capability, may enter the step uid's workspace).
    os.chmod(step_workspace, 0o755)
    (step_workspace / "step.sh").write_text("cat /data/root-only\n")
    run_id = f"as-root-{secrets.token_hex(4)}"
    argv = sandbox.command(Step("t", "step.sh"), step_workspace, Limits(), run_id)
    lines: list[str] = []
    process = StepProcess.for_runtime(sandbox, run_id, argv, lambda s, line: lines.append(line))
    assert await process.run(timeout=60) == 0, lines
    assert lines == [secret.read_text().strip()]


async def test_files_a_step_makes_are_the_step_uids_on_the_host(
    sandbox: SandboxRuntime, step_workspace: Path
) -> None:
    code, out = await run_as_step_uid(
        sandbox, step_workspace, "mkdir /data/made && echo x > /data/made/file && ls -ln /data\n"
    )
    assert code == 0, out
    for path in (step_workspace / "made", step_workspace / "made" / "file"):
        assert (path.stat().st_uid, path.stat().st_gid) == (STEP_UID, STEP_UID), path


# -- the docker runtime ----------------------------------------------------------------------


DOCKER_IMAGE = "offload-test/busybox:limits"


@pytest.fixture(scope="module")
def docker(passable: Path) -> Iterator[DockerRuntime]:
    """The docker runtime against a real engine of the test's own, with a busybox image."""
    engine = Dockerd()
    try:
        engine.start()
        tarball = build_tarball(build_rootfs(passable / "rootfs"), passable / "busybox.tar")
    except (EngineUnavailable, BusyboxMissing) as exc:
        engine.stop()
        unavailable(f"no Docker engine for the docker runtime: {exc}")
    try:
        imported = engine.docker("import", str(tarball), DOCKER_IMAGE)
        assert imported.returncode == 0, imported.stderr.decode()
        yield DockerRuntime(docker=engine.cli, host=engine.host, default_image=DOCKER_IMAGE)
    finally:
        engine.stop()


async def test_docker_steps_get_the_same_limits_and_uid(
    docker: DockerRuntime, step_workspace: Path
) -> None:
    limits = Limits(memory_bytes=64 << 20, pids=PIDS, tmp_bytes=1 << 20, uid=STEP_UID)

    async def run(script: str) -> tuple[int, str, StepProcess]:
        (step_workspace / "step.sh").write_text(script)
        run_id = f"limits-{secrets.token_hex(4)}"
        argv = docker.command(Step("t", "step.sh"), step_workspace, limits, run_id)
        lines: list[str] = []
        process = StepProcess.for_runtime(docker, run_id, argv, lambda s, line: lines.append(line))
        return await process.run(timeout=60), "\n".join(lines), process

    code, out, _ = await run(
        "echo uid=$(id -u) pids=$(cat /sys/fs/cgroup/pids/pids.max); touch /data/made; "
        "dd if=/dev/zero of=/tmp/big bs=1M count=4 || echo TMP-FULL\n"
    )
    assert code == 0, out
    assert f"uid={STEP_UID} pids={PIDS}" in out.splitlines(), out
    assert "No space left on device" in out and "TMP-FULL" in out, out
    assert (step_workspace / "made").stat().st_uid == STEP_UID

    code, out, process = await run("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}\n")
    assert code != 0 and "200000000" not in out, out
    assert process.outcome.limit == "memory"  # the engine says it killed the container


# -- cgroup v2 -----------------------------------------------------------------------------


def test_cgroup_v2_limit_files_and_counters(tmp_path: Path) -> None:
    # This host's controllers are all on cgroup v1, so v2 cannot enforce anything here: the
    # files a v2 host would get are written into a plain directory tree instead.
    parent = tmp_path / "offload"
    parent.mkdir()
    run = parent / "exec-1" / "run-1"
    run.mkdir(parents=True)
    (run / "memory.swap.max").write_text("max\n")  # present where swap is accounted
    hierarchy = Hierarchy(2, frozenset({"memory", "pids", "cpu"}), parent)
    cgroups = Cgroups([hierarchy], owner="exec-1")
    prefix = cgroups.create("run-1", Limits(cpus=0.5, memory_bytes=64 << 20, pids=32))
    assert (parent / "exec-1" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (run / "memory.max").read_text() == str(64 << 20)
    assert (run / "memory.swap.max").read_text() == "0"
    assert (run / "pids.max").read_text() == "32"
    assert (run / "cpu.max").read_text() == "50000 100000"
    assert prefix[-2:] == [str(run / "cgroup.procs"), "--"]

    assert cgroups.outcome("run-1").limit is None
    (run / "pids.events").write_text("max 3\n")
    (run / "cpu.stat").write_text("usage_usec 9000000\nthrottled_usec 2500000\n")
    assert cgroups.outcome("run-1").limit == "pids"
    (run / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    outcome = cgroups.outcome("run-1")
    assert (outcome.limit, outcome.throttled) == ("memory", 2.5)


async def test_cgroup_v2_join_and_remove_for_real() -> None:
    require_root()
    unified = Path("/sys/fs/cgroup/unified")
    if not (unified / "cgroup.procs").exists():
        root = Path("/sys/fs/cgroup")
        if not (root / "cgroup.subtree_control").exists():
            unavailable("no cgroup v2 hierarchy is mounted here")
        unified = root
    # No controller (they are bound to v1 here): a real v2 group, joined and removed.
    parent = unified / f"offload-test-{secrets.token_hex(4)}"
    parent.mkdir()
    try:
        cgroups = Cgroups([Hierarchy(2, frozenset(), parent)], owner="exec-1")
        prefix = cgroups.create("run-1", Limits())
        proc = await asyncio.create_subprocess_exec(
            *prefix, "sh", "-c", "grep '^0::' /proc/self/cgroup; exec sleep 60",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode().strip()
        assert line == f"0::/{parent.relative_to(unified)}/exec-1/run-1"
        await cgroups.remove("run-1")  # kills the sleep, then removes the group
        assert await asyncio.wait_for(proc.wait(), 10) == -9
        assert not (parent / "exec-1" / "run-1").exists()
        assert await cgroups.sweep(["exec-1"]) == 0
        assert not (parent / "exec-1").exists()
    finally:
        parent.rmdir()
