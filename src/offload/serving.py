"""Serving HTTP from an offload process: bound sockets, uvicorn, and stopping on signals."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Iterator, Sequence
from typing import TypeVar

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)
# uvicorn's default backlog.
BACKLOG = 2048
T = TypeVar("T")


def listen(host: str, port: int, *, settings_hint: str) -> socket.socket:
    """A socket bound to host:port (port 0 picks a free one); OSError says which settings to fix."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Naming TCP makes asyncio set TCP_NODELAY on accepted connections (no 40 ms stalls).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port}: {exc.strerror}; "
            f"set {settings_hint} to a free address (port 0 picks one)",
        ) from exc
    # Listening from here on: a client that connects as soon as the address is printed waits
    # in the backlog until the server accepts, instead of being refused while it starts up.
    sock.listen(BACKLOG)
    return sock


def address(sock: socket.socket) -> str:
    """The http:// address a bound socket listens on."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


class Server(uvicorn.Server):
    """uvicorn without signal handlers of its own: the process decides when it stops.

    (uvicorn's own handlers re-raise the signal after shutting down, so a clean SIGTERM would
    end the process with 143 instead of 0.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals to the process."""
        yield


def settle_heap() -> None:
    """Exempt what start-up made (modules, the app) from the collector's full passes.

    A full pass walks every object of the process while holding the interpreter, pausing the
    event loop for as long (about 100 ms for a server's heap here): with start-up's objects
    frozen, the passes that serving's own allocations set off walk only those.
    """
    gc.collect()
    gc.freeze()


def server(app: FastAPI, *, stop_timeout: float, trusted_proxies: Sequence[str] = ()) -> Server:
    """A uvicorn server for `app` that logs through offload's logging.

    The caller's address (sign-in limits, the audit log) is the connection's own, unless the
    connection comes from one of `trusted_proxies`: only then is X-Forwarded-For believed.
    """
    return Server(
        uvicorn.Config(
            app,
            log_config=None,
            lifespan="off",
            timeout_graceful_shutdown=max(int(stop_timeout), 1),
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies) or None,
        )
    )


@contextlib.contextmanager
def stopped_by_signals(stopping: asyncio.Event) -> Iterator[None]:
    """Set `stopping` on SIGTERM or SIGINT while inside the block."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stopping.set)
    try:
        yield
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def unless_stopped(awaitable: Awaitable[T], stopping: asyncio.Event) -> T | None:
    """The result of `awaitable`, or None when `stopping` is set first (it is then cancelled)."""
    task = asyncio.ensure_future(awaitable)
    wake = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({task, wake}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        wake.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None
