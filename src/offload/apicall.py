"""Calls from CLI commands to the server's HTTP API, with errors a user can act on."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console

from offload.config import Settings
from offload.http import client as http_client

err = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `message` as an error; the Exit to raise with `code`."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def api_client(timeout: float = 30.0) -> httpx.AsyncClient:
    """A client of the server that OFFLOAD_URL (or host and port) names."""
    return http_client(Settings().server_url(), timeout=timeout)


async def call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    """One API call's JSON answer; exits with the server's reason when it refuses."""
    try:
        response = await client.request(method, path, **kwargs)
    except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as exc:
        raise fail(
            f"the offload server at {client.base_url} did not answer {method} {path} in time "
            f"({exc.__class__.__name__}); it is reachable but busy: try again, or look at its log"
        ) from exc
    except httpx.TransportError as exc:
        raise fail(
            f"cannot reach the offload server at {client.base_url} ({exc}); start it with "
            "`offload up` or set OFFLOAD_URL"
        ) from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise fail(f"{detail}", 2 if response.status_code in (400, 404, 409) else 1)
    return response.json()
