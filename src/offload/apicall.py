"""Calls from CLI commands to the server's HTTP API, with errors a user can act on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import typer

from offload import credentials, terminal
from offload.config import Settings
from offload.http import client as http_client

err = terminal.stderr()
T = TypeVar("T")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as an error; the Exit to raise with `code`."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def server_and_token() -> tuple[str, str | None]:
    """The server to call and the token to call it with: OFFLOAD_URL and OFFLOAD_TOKEN, else
    what `offload login` stored, else the local server without a token."""
    settings = Settings()
    stored = credentials.load()
    url = settings.url or (stored.url if stored else None) or settings.server_url()
    token = settings.token or (stored.token if stored and stored.url == url.rstrip("/") else None)
    return url.rstrip("/"), token


def api_client(timeout: float = 30.0) -> httpx.AsyncClient:
    """A client of the signed-in server, sending its access token."""
    url, token = server_and_token()
    client = http_client(url, timeout=timeout)
    if token:
        client.headers["Authorization"] = f"token {token}"
    return client


# Answers of a proxy, or of a server restarting behind it, that a retry may get past.
_TRANSIENT = (502, 503, 504)
RETRY_DELAY = 0.5


async def _send(
    client: httpx.AsyncClient, method: str, path: str, retries: int, kwargs: dict[str, Any]
) -> httpx.Response:
    attempt = 0
    while True:
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.TransportError:
            if attempt >= retries:
                raise
        else:
            if response.status_code not in _TRANSIENT or attempt >= retries:
                return response
        await asyncio.sleep(RETRY_DELAY * 2**attempt)
        attempt += 1


async def call(
    client: httpx.AsyncClient, method: str, path: str, *, retries: int = 0, **kwargs: Any
) -> Any:
    """One API call's JSON answer (None for 204); exits with the server's reason when it
    refuses. `retries`: how often to send it again when its answer was lost (the connection
    dropped, a timeout, a 502/503/504); only for requests that are safe to repeat."""
    try:
        response = await _send(client, method, path, retries, kwargs)
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
        raise fail(
            f"the offload server at {client.base_url} did not answer {method} {path} in time "
            f"({exc.__class__.__name__}); it is reachable but busy: try again, or look at its log"
        ) from exc
    except httpx.TransportError as exc:
        raise fail(
            f"cannot reach the offload server at {client.base_url} ({exc}); start it with "
            "`offload up`, or sign in to another with `offload login URL` (or set OFFLOAD_URL)"
        ) from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        if isinstance(detail, list):
            # A 422's problems, each with where it is (body.name) and what is wrong.
            detail = "; ".join(_problem(p) for p in detail)
        if response.status_code == 401:
            detail = (
                f"{detail}; sign in with `offload login {client.base_url}` or set OFFLOAD_TOKEN"
            )
        raise fail(f"{detail}", 2 if response.status_code in (400, 404, 409, 422) else 1)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def api(work: Callable[[httpx.AsyncClient], Awaitable[T]], timeout: float = 30.0) -> T:
    """Run `work(client)` against the signed-in server (a command's whole conversation)."""

    async def main() -> T:
        async with api_client(timeout) as client:
            return await work(client)

    return asyncio.run(main())


def _problem(problem: object) -> str:
    """One problem of a 422 answer as a line: `body.name: what is wrong`."""
    if not isinstance(problem, dict):
        return str(problem)
    where = ".".join(str(p) for p in problem.get("loc") or ())
    return f"{where}: {problem.get('msg', 'invalid')}" if where else str(problem.get("msg"))
