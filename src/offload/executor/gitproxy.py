"""A loopback proxy for git: it adds the job token, so git itself never sees a credential."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx

from offload.protocol import routes

log = logging.getLogger(__name__)

# Request headers git sends that the server needs to see.
FORWARDED = ("content-type", "content-encoding", "git-protocol", "accept", "accept-encoding")


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()  # the blank line after the last chunk
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readline()
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


class GitProxy:
    """Serves http://127.0.0.1:<port>/<repo>/... from <server>/.executors/git/<repo>/..."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        repo: str,
        auth_headers: dict[str, str],
        *,
        retries: int = 6,
        retry_delay: float = 0.5,
    ) -> None:
        self.http = http
        self.repo = repo
        self.auth_headers = auth_headers
        self.retries = retries
        self.retry_delay = retry_delay
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The remote URL git should use."""
        return f"http://127.0.0.1:{self.port}/{self.repo}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._one_request(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, httpx.HTTPError) as exc:
            log.warning("git proxy for %s: %s", self.repo, exc)
            with contextlib.suppress(ConnectionError):
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n")
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
                writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        request_line = (await reader.readline()).decode("latin-1").strip()
        method, target, _ = [*request_line.split(" ", 2), "", ""][:3]
        headers: dict[str, str] = {}
        while line := (await reader.readline()).decode("latin-1").strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await _read_body(reader, headers)
        path, _, query = target.partition("?")
        # Only this job's repository: anything else never leaves the machine.
        if not path.startswith(f"/{self.repo}/"):
            writer.write(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\nwrong repository\n")
            return
        upstream = (
            routes.git(self.repo) + path[len(self.repo) + 1 :] + (f"?{query}" if query else "")
        )
        forward = {k: v for k, v in headers.items() if k in FORWARDED}
        request = self.http.build_request(
            method,
            upstream,
            content=body,
            headers={**forward, **self.auth_headers},
            timeout=httpx.Timeout(300.0),
        )
        response = await self._send(request)
        try:
            head = [f"HTTP/1.1 {response.status_code} {response.reason_phrase}"]
            for name in ("content-type", "content-encoding", "cache-control", "expires"):
                if name in response.headers:
                    head.append(f"{name}: {response.headers[name]}")
            head.append("Connection: close")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            try:
                async for chunk in _chunks(response):
                    writer.write(chunk)
                    await writer.drain()
            except (ConnectionError, httpx.HTTPError) as exc:
                # The server went away mid-answer: a 502 now would land inside the body, so
                # git sees the answer cut short instead (and its fetch is run again).
                log.warning("git proxy for %s: answer cut off: %s", self.repo, exc)
        finally:
            await response.aclose()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        """The server's answer, waiting out a restart or outage of the server.

        Nothing has reached git yet, so a request that could not be delivered, or that
        the server could not serve (5xx), is simply sent again: a job's checkout survives
        the server being redeployed under it.
        """
        delay = self.retry_delay
        for attempt in range(1, self.retries + 1):
            last = attempt == self.retries
            try:
                response = await self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                if last:
                    raise
                reason = str(exc) or type(exc).__name__
            else:
                if response.status_code < 500 or last:
                    return response
                reason = f"server answered {response.status_code}"
                await response.aclose()
            log.warning("git proxy for %s: %s; retrying in %.1fs", self.repo, reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)
        raise AssertionError("unreachable")


async def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    async for chunk in response.aiter_raw():
        yield chunk
