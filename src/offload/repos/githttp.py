"""Git smart-HTTP, read-only: `git upload-pack --stateless-rpc` of a mirror behind FastAPI routes.

Speaks protocol v2 and v0/v1, whichever the client asks for in its `Git-Protocol` header.
Pushes (receive-pack) and the dumb protocol are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from offload.repos.mirror import Mirrors, git_env, kill_process_group
from offload.repos.registry import RepoNameError, RepoRegistry, validate_name

log = logging.getLogger(__name__)

Authorize = Callable[[Request, str], Awaitable[None] | None]
"""Raises HTTPException when the caller of a request may not read the named repository."""

ADVERTISEMENT = "application/x-git-upload-pack-advertisement"
REQUEST = "application/x-git-upload-pack-request"
RESULT = "application/x-git-upload-pack-result"
NO_CACHE = {
    "Cache-Control": "no-cache, max-age=0, must-revalidate",
    "Expires": "Fri, 01 Jan 1980 00:00:00 GMT",
    "Pragma": "no-cache",
}
# A negotiation is a few MB at worst; more (after gunzip) is a mistake or an attack.
MAX_REQUEST = 100 * 1024 * 1024
CHUNK = 64 * 1024
GZIP = ("gzip", "x-gzip")
# How long git may take to exit once its output has ended.
READ_GRACE = 10.0
# How long a protocol v2 capability advertisement is answered from memory (Capabilities).
CAPABILITIES_TTL = 60.0
# Values git itself sends: `version=2`, `version=1`, possibly more `key=value`s joined by `:`.
_GIT_PROTOCOL = re.compile(r"^[A-Za-z0-9=:._-]{1,256}$")
READ_ONLY = (
    "{name} is a read-only mirror served by offload: pushes are not accepted here; "
    "push to its source instead"
)


def pkt_line(data: str) -> bytes:
    """`data` as one git pkt-line (four hex digits of length, then the data)."""
    raw = data.encode()
    return f"{len(raw) + 4:04x}".encode() + raw


def git_protocol(request: Request) -> str | None:
    """The client's `Git-Protocol` header if it is well formed (it becomes GIT_PROTOCOL)."""
    value = request.headers.get("git-protocol", "")
    return value if _GIT_PROTOCOL.match(value) else None


def wants_v2(protocol: str | None) -> bool:
    """Whether the client asked for protocol version 2."""
    return protocol is not None and "version=2" in protocol.split(":")


def _plain(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    # git shows text/plain error bodies to its user as `remote: ...` lines.
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


class GitProcess:
    """One `git upload-pack` run: its stdin fed from the request, its stdout streamed back."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._stderr = bytearray()
        self._drain = asyncio.create_task(self._collect_stderr())

    @classmethod
    async def start(cls, mirror: Path, protocol: str | None, *, advertise: bool) -> GitProcess:
        """Start upload-pack on `mirror` (advertising refs only, or answering one request)."""
        args = ["upload-pack", "--strict", "--stateless-rpc"]
        if advertise:
            args.append("--advertise-refs")
        env = git_env({"GIT_PROTOCOL": protocol} if protocol else None)
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            str(mirror),
            env=env,
            stdin=asyncio.subprocess.DEVNULL if advertise else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        return cls(proc)

    async def _collect_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(CHUNK):
            self._stderr += chunk
            del self._stderr[:-8192]

    @property
    def stderr(self) -> str:
        """The tail of what git printed on stderr."""
        return self._stderr.decode("utf-8", "replace").strip()

    async def read(self) -> bytes:
        """The next chunk of stdout, b"" at its end."""
        assert self.proc.stdout is not None
        return await self.proc.stdout.read(CHUNK)

    async def finish(self, *, grace: float = 0.0) -> int:
        """Git's exit code; git is killed if it is still running after `grace` seconds."""
        if grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
        kill_process_group(self.proc)
        code = await self.proc.wait()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(self._drain, 1)
        return code

    async def feed(self, request: Request) -> None:
        """Copy the request body (gunzipped when it is gzip) to git's stdin, then close it."""
        assert self.proc.stdin is not None
        stdin = self.proc.stdin
        encoding = request.headers.get("content-encoding", "").lower()
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding in GZIP else None
        total = 0
        try:
            async for chunk in request.stream():
                data = inflate.decompress(chunk) if inflate is not None else chunk
                total += len(data)
                if total > MAX_REQUEST:
                    raise HTTPException(413, f"request body larger than {MAX_REQUEST} bytes")
                stdin.write(data)
                await stdin.drain()
            if inflate is not None:
                stdin.write(inflate.flush())
                if not inflate.eof:
                    raise HTTPException(400, "gzip request body is truncated")
            await stdin.drain()
        except zlib.error as exc:
            raise HTTPException(400, f"request body is not valid gzip: {exc}") from exc
        except (BrokenPipeError, ConnectionResetError):
            pass  # git stopped reading: it said why on stdout, which the client gets
        finally:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.close()

    async def respond(
        self, media_type: str, *, first: bytes = b"", early: list[bytes] | None = None
    ) -> Response:
        """Stream git's stdout as the response, or a 500 with its stderr if it failed silently."""
        chunks = [chunk for chunk in early or [] if chunk]
        if not chunks:
            chunks.append(await self.read())
        if not chunks[0]:
            code = await self.finish(grace=READ_GRACE)
            if code != 0:
                log.warning("git upload-pack failed (exit %d): %s", code, self.stderr)
                return _plain(500, f"git upload-pack failed (exit {code}): {self.stderr}")

        async def body() -> AsyncIterator[bytes]:
            complete = False
            try:
                for piece in (first, *chunks):
                    if piece:
                        yield piece
                while piece := await self.read():
                    yield piece
                complete = True
            finally:
                # The client may have gone away mid-pack: never leave git running for nobody.
                code = await self.finish(grace=READ_GRACE if complete else 0.0)
                if complete and code != 0:
                    log.warning("git upload-pack exited %d: %s", code, self.stderr)

        return StreamingResponse(body(), media_type=media_type, headers=NO_CACHE)


class Capabilities:
    """Protocol v2 capability advertisements, kept for a while per mirror.

    A v2 advertisement names no refs: it changes only with git and the mirror's config. Every
    checkout asks for it once, and again for the blobs of a sparse checkout; answering from
    memory saves a git process per request (the busiest part of serving many workspaces).
    """

    def __init__(self, ttl: float = CAPABILITIES_TTL) -> None:
        self.ttl = ttl
        self._kept: dict[tuple[Path, str | None], tuple[float, bytes]] = {}

    async def get(self, mirror: Path, protocol: str | None) -> bytes | None:
        """The advertisement of `mirror`; None when git could not make one."""
        now = time.monotonic()
        kept = self._kept.get((mirror, protocol))
        if kept is not None and now - kept[0] < self.ttl:
            return kept[1]
        git = await GitProcess.start(mirror, protocol, advertise=True)
        chunks = []
        while chunk := await git.read():
            chunks.append(chunk)
        if await git.finish(grace=READ_GRACE) != 0 or not chunks:
            return None  # served by a process of its own, which reports git's error
        advertised = b"".join(chunks)
        self._kept[(mirror, protocol)] = (now, advertised)
        return advertised


def git_router(
    registry: RepoRegistry, mirrors: Mirrors, *, authorize: Authorize | None = None
) -> APIRouter:
    """Routes that serve every registered mirror read-only over git smart-HTTP.

    Mount with a prefix, e.g. `app.include_router(git_router(...), prefix="/.executors/git")`:
    `git clone <base>/<prefix>/<repo name>` then works. `authorize(request, name)` runs before
    anything else (so unknown names are not revealed to those it refuses) and raises
    HTTPException to refuse.
    """
    router = APIRouter()
    capabilities = Capabilities()

    async def mirror_for(request: Request, repo: str) -> Path | Response:
        """The mirror to serve, or the response that refuses the request."""
        try:
            if authorize is not None:
                result = authorize(request, repo)
                if inspect.isawaitable(result):
                    await result
        except HTTPException as exc:
            return _plain(exc.status_code, str(exc.detail), dict(exc.headers or {}))
        try:
            name = validate_name(repo)
        except RepoNameError:
            return _plain(404, f"repository {repo!r} not found")
        if await registry.get(name) is None or not mirrors.exists(name):
            return _plain(404, f"repository {name!r} not found")
        return mirrors.path(name)

    @router.get("/{repo:path}/info/refs", include_in_schema=False)
    async def info_refs(request: Request, repo: str, service: str | None = None) -> Response:
        """The ref advertisement that starts every fetch and clone."""
        mirror = await mirror_for(request, repo)
        if isinstance(mirror, Response):
            return mirror
        if service == "git-receive-pack":
            return _plain(403, READ_ONLY.format(name=repo))
        if service != "git-upload-pack":
            return _plain(
                403,
                "only git smart-HTTP (service=git-upload-pack) is served here; "
                "use git 1.6.6 or newer",
            )
        protocol = git_protocol(request)
        if wants_v2(protocol):
            advertised = await capabilities.get(mirror, protocol)
            if advertised is not None:
                return Response(advertised, media_type=ADVERTISEMENT, headers=NO_CACHE)
        git = await GitProcess.start(mirror, protocol, advertise=True)
        # v2 clients expect capabilities at once; v0/v1 ones expect the service announcement.
        preamble = b"" if wants_v2(protocol) else pkt_line(f"# service={service}\n") + b"0000"
        return await git.respond(ADVERTISEMENT, first=preamble)

    @router.post("/{repo:path}/git-upload-pack", include_in_schema=False)
    async def upload_pack(request: Request, repo: str) -> Response:
        """One round of negotiation, or the pack itself."""
        mirror = await mirror_for(request, repo)
        if isinstance(mirror, Response):
            return mirror
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != REQUEST:
            return _plain(415, f"expected Content-Type {REQUEST}, got {content_type or 'none'}")
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding not in (*GZIP, "identity", ""):
            return _plain(415, f"unsupported Content-Encoding {encoding!r}; use gzip or none")
        git = await GitProcess.start(mirror, git_protocol(request), advertise=False)
        # Read what git says while it is still being fed, so neither side can block the other
        # on a full pipe; Starlette must have the whole body before the response starts.
        early: list[bytes] = []

        async def collect() -> None:
            while chunk := await git.read():
                early.append(chunk)

        collector = asyncio.create_task(collect())
        try:
            await git.feed(request)
        except HTTPException as exc:
            collector.cancel()
            await git.finish()
            return _plain(exc.status_code, str(exc.detail))
        except BaseException:
            collector.cancel()
            await git.finish()
            raise
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        return await git.respond(RESULT, early=early)

    @router.api_route(
        "/{repo:path}/git-receive-pack", methods=["GET", "POST"], include_in_schema=False
    )
    async def receive_pack(request: Request, repo: str) -> Response:
        """Pushes: always refused."""
        mirror = await mirror_for(request, repo)
        if isinstance(mirror, Response):
            return mirror
        return _plain(403, READ_ONLY.format(name=repo))

    return router


__all__ = ["Authorize", "GitProcess", "git_protocol", "git_router", "pkt_line", "wants_v2"]
