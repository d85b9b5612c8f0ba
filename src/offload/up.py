"""`offload up`: migrate, then run the server and the worker as one supervised process tree."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

import httpx

from offload import credentials
from offload.config import Settings
from offload.db import schema
from offload.db.connect import connect
from offload.dispatch.access import executor_token
from offload.executor.datadir import up_executor_dir
from offload.identity.bootstrap import create_first_admin
from offload.queues import executor_queue_names

log = logging.getLogger(__name__)

# A child that keeps dying is restarted at most this often, so a crash loop stays visible.
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


def free_port(host: str) -> int:
    """A port on `host` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """One process of the tree."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0


async def first_start(settings: Settings, address: str) -> None:
    """On a database with no users: the first site admin, shown once; the CLI of whoever runs
    `offload up` is signed in as them when it is signed in nowhere yet (the laptop mode)."""
    db = await connect(settings.database(), attempts=1)
    try:
        first = await create_first_admin(db)
    finally:
        await db.close()
    if first is None:
        return
    print(first.message(address), file=sys.stderr, flush=True)
    if credentials.load() is None:
        where = credentials.save(credentials.Credentials(address, first.token))
        print(f"  this machine's CLI is signed in as {first.username} ({where})", file=sys.stderr)


async def executor_env(settings: Settings, port: int) -> dict[str, str]:
    """The environment of the local executor: this server, its token, every executor queue."""
    db = await connect(settings.database(), attempts=1)
    try:
        token = await executor_token(db)
    finally:
        await db.close()
    env = {
        "EXECUTOR_FRONTEND_URL": f"http://127.0.0.1:{port}",
        "EXECUTOR_REGISTRATION_TOKEN": token,
        # The laptop mode has one executor: it runs generic jobs, batch workspaces and index
        # jobs alike.
        "EXECUTOR_QUEUE_NAMES": ",".join(executor_queue_names(settings)),
        # Where `offload executor images` looks by default with this data dir (datadir.py).
        "EXECUTOR_DATA_DIR": str(up_executor_dir(settings.data_dir)),
        "EXECUTOR_NAME": f"{socket.gethostname()}-local",
        "EXECUTOR_MAX_NUM_JOBS": os.environ.get("EXECUTOR_MAX_NUM_JOBS", "2"),
    }
    given = {k: v for k, v in os.environ.items() if k.startswith("EXECUTOR_")}
    if "EXECUTOR_QUEUE_NAME" in given or "EXECUTOR_QUEUE_NAMES" in given:
        env.pop("EXECUTOR_QUEUE_NAMES")
    return {**env, **given}


async def _wait_healthy(url: str, child: Child, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if child.process is not None and child.process.returncode is not None:
                return False
            try:
                if (await client.get(f"{url}/healthz")).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    return False


async def run_up(settings: Settings, common_args: list[str]) -> int:
    """Run the all-in-one tree until SIGTERM/SIGINT; returns the exit code."""
    url = settings.database()
    found = await schema.upgrade(url)
    log.info("database %s at schema revision %s", url.redacted(), found.current)
    port = settings.port or free_port(settings.host)
    worker_port = settings.worker_port or free_port(settings.worker_host)
    await first_start(settings, settings.url or f"http://{settings.host}:{port}")
    env = {
        **os.environ,
        "OFFLOAD_DATA_DIR": str(settings.data_dir),
        "OFFLOAD_PORT": str(port),
        "OFFLOAD_WORKER_PORT": str(worker_port),
    }
    if settings.database_url:
        env["OFFLOAD_DATABASE_URL"] = settings.database_url
    base = [sys.executable, "-m", "offload", *common_args]
    children = [
        Child("server", [*base, "server"]),
        Child("worker", [*base, "worker"]),
        Child("executor", [*base, "executor"], env=await executor_env(settings, port)),
    ]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    async def start(child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(*child.argv, env={**env, **child.env})

    for child in children:
        await start(child)
    address = f"http://{settings.host}:{port}"
    worker_address = f"http://{settings.worker_host}:{worker_port}"
    if await _wait_healthy(address, children[0]) and await _wait_healthy(
        worker_address, children[1]
    ):
        print(
            f"offload is up at {address}  (data in {settings.data_dir}; worker metrics on "
            f"{worker_address}/metrics; stop with Ctrl-C)",
            flush=True,
        )
    else:
        log.error("the server or the worker did not become healthy; see their logs above")
    code = 0
    while not stopping.is_set():
        waits = {asyncio.ensure_future(c.process.wait()): c for c in children if c.process}
        stop = asyncio.ensure_future(stopping.wait())
        done, _ = await asyncio.wait({*waits, stop}, return_when=asyncio.FIRST_COMPLETED)
        for future in waits:
            if future not in done:
                future.cancel()
        stop.cancel()
        for future in done & set(waits):
            child = waits[future]
            if stopping.is_set():
                break
            delay = RESTART_DELAYS[min(child.restarts, len(RESTART_DELAYS) - 1)]
            log.error(
                "%s exited with code %s; restarting in %.0fs", child.name, future.result(), delay
            )
            child.restarts += 1
            code = 1
            try:
                await asyncio.wait_for(stopping.wait(), delay)
            except TimeoutError:
                await start(child)
    await _stop_all(children, settings.stop_timeout.total_seconds())
    return 0 if stopping.is_set() else code


async def _stop_all(children: list[Child], timeout: float) -> None:
    running = [c.process for c in children if c.process and c.process.returncode is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), timeout + 5)
    except TimeoutError:
        for process in running:
            if process.returncode is None:
                process.kill()
        await asyncio.gather(*(p.wait() for p in running))
