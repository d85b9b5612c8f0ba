"""`offload executors` and `offload secrets`: what site admins manage on the server."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from offload.config import Settings
from offload.db.base import Database

executors_app = typer.Typer(
    help="The executors: their token and who is connected.", no_args_is_help=True
)
secrets_app = typer.Typer(
    help="Secrets handed to jobs by name, redacted from logs.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)
T = TypeVar("T")


def with_db(work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` against the configured database (schema checked)."""
    from offload.db import schema
    from offload.db.connect import connect

    async def main() -> T:
        settings = Settings()
        url = settings.database()
        db = await connect(url, attempts=1)
        try:
            await schema.require_current(url)
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(main())


@executors_app.command()
def token(
    set_: Annotated[
        str | None, typer.Option("--set", help="Replace the token with this value.")
    ] = None,
) -> None:
    """Print the token executors authenticate with (EXECUTOR_REGISTRATION_TOKEN).

    Examples:

        offload executors token

        offload executors token --set "$(openssl rand -hex 24)"
    """
    from offload.dispatch.access import KEY, executor_token, set_setting

    async def work(db: Database) -> str:
        if set_ is not None:
            if len(set_) < 16:
                raise typer.BadParameter("use at least 16 characters", param_hint="--set")
            await set_setting(db, KEY, set_)
        return await executor_token(db)

    out.print(with_db(work), highlight=False)


@executors_app.command("list")
def list_executors(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per executor.")] = False,
) -> None:
    """List executors: versions, runtime, queues, and whether they are active.

    Examples:

        offload executors list

        offload executors list --json | jq -r 'select(.active | not) | .hostname'
    """
    from offload.dispatch.registry import ExecutorRegistry

    executors = with_db(lambda db: ExecutorRegistry(db).list())
    now = datetime.now(UTC)
    if as_json:
        for e in executors:
            print(
                json.dumps(
                    {
                        "hostname": e.hostname,
                        "active": e.active(now),
                        "queues": e.queues,
                        "runtime": e.runtime,
                        "version": e.executor_version,
                        "git": e.git_version,
                        "os": e.os,
                        "architecture": e.architecture,
                        "firstSeenAt": e.first_seen_at.isoformat(),
                        "lastSeenAt": e.last_seen_at.isoformat(),
                    }
                )
            )
        return
    table = Table(
        "executor", "state", "queues", "runtime", "version", "git", "os/arch", "last seen"
    )
    for e in executors:
        ago = (now - e.last_seen_at).total_seconds()
        table.add_row(
            e.hostname,
            "active" if e.active(now) else "inactive",
            ",".join(e.queues),
            e.runtime,
            e.executor_version,
            e.git_version,
            f"{e.os}/{e.architecture}",
            f"{ago:.0f}s ago",
        )
    out.print(table)


@secrets_app.command("set")
def set_secret(name: str) -> None:
    """Set a secret; its value is read from stdin (never from the command line).

    Example:

        printf %s "$API_KEY" | offload secrets set API_KEY
    """
    from offload.dispatch.secrets import Secrets

    value = sys.stdin.read().rstrip("\n")
    try:
        with_db(lambda db: Secrets(db).set(name, value))
    except ValueError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    out.print(f"secret {name} set")


@secrets_app.command("list")
def list_secrets() -> None:
    """List the names of the secrets (never their values).

    Example:

        offload secrets list
    """
    from offload.dispatch.secrets import Secrets

    for name in with_db(lambda db: Secrets(db).names()):
        out.print(name)


@secrets_app.command("delete")
def delete_secret(name: str) -> None:
    """Delete a secret.

    Example:

        offload secrets delete API_KEY
    """
    from offload.dispatch.secrets import Secrets

    if not with_db(lambda db: Secrets(db).delete(name)):
        err.print(f"[bold red]error:[/] no secret {name}")
        raise typer.Exit(1)
    out.print(f"secret {name} deleted")
