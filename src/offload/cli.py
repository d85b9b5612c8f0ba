"""The `offload` command: one Typer app; each command builds its settings and awaits one run_*."""

from __future__ import annotations

import platform
import sqlite3
import sys
from typing import Annotated

import typer

from offload import __version__, terminal
from offload.commands import State, fail, run, settings

app = typer.Typer(
    name="offload",
    help="Run expensive, untrusted work (batch changes, code indexing) on sandboxed executors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
migrate_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(migrate_app, name="migrate")


def _add_feature_commands() -> None:
    # Each feature keeps its commands next to its code; this is the one place they meet.
    from offload.batches.cli import batch_app
    from offload.codeintel.cli import codeintel_app
    from offload.dispatch.cli import executors_app, queues_app
    from offload.executor.cli import executor_app
    from offload.identity import cli as identity
    from offload.jobs.cli import jobs_app, run
    from offload.repos.cli import repos_app
    from offload.secrets.cli import secrets_app

    app.command()(identity.login)
    app.command()(identity.logout)
    app.command()(identity.whoami)
    app.add_typer(identity.users_app, name="users")
    app.add_typer(identity.orgs_app, name="orgs")
    app.add_typer(identity.tokens_app, name="tokens")
    app.command()(identity.audit)
    app.add_typer(repos_app, name="repos")
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(executor_app, name="executor")
    app.add_typer(executors_app, name="executors")
    app.add_typer(queues_app, name="queues")
    app.add_typer(secrets_app, name="secrets")
    app.add_typer(batch_app, name="batch")
    app.add_typer(codeintel_app, name="codeintel")
    app.command(context_settings={"allow_interspersed_args": False})(run)


out = terminal.stdout()
err = terminal.stderr()


@app.callback()
def common(
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="text (default) or json, one object per line."),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug, info (default), warning or error.")
    ] = None,
) -> None:
    """offload: run expensive, untrusted work on a fleet of sandboxed executors.

    Settings come from OFFLOAD_* environment variables (OFFLOAD_DATABASE_URL, OFFLOAD_DATA_DIR,
    OFFLOAD_PORT, ...); with no OFFLOAD_DATABASE_URL, offload uses a SQLite file in its data dir.
    """
    if log_format is not None:
        State.overrides["log_format"] = log_format
    if log_level is not None:
        State.overrides["log_level"] = log_level


def _common_args() -> list[str]:
    args = []
    for key in ("log_format", "log_level"):
        if key in State.overrides:
            args += [f"--{key.replace('_', '-')}", str(State.overrides[key])]
    return args


@app.command()
def up(
    port: Annotated[
        int | None, typer.Option(help="Port of the server (0 picks a free one).")
    ] = None,
) -> None:
    """Run everything on this machine: migrate, then the server and the worker.

    The laptop mode: no set-up, an embedded SQLite database in the data dir.

    Examples:

        offload up

        OFFLOAD_DATA_DIR=/srv/offload offload up --port 9000
    """
    if port is not None:
        State.overrides["port"] = port
    config = settings()
    from offload.up import run_up

    run(lambda: run_up(config, _common_args()))


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (0 picks a free one).")
    ] = None,
) -> None:
    """Serve the HTTP API, /metrics and /healthz.

    Examples:

        offload server --port 8080

        OFFLOAD_DATABASE_URL=postgresql://offload@db/offload offload server --host 0.0.0.0
    """
    if host is not None:
        State.overrides["host"] = host
    if port is not None:
        State.overrides["port"] = port
    config = settings()
    from offload.api.server import run_server

    run(lambda: run_server(config))


@app.command()
def worker(
    job: Annotated[
        list[str] | None,
        typer.Option("--job", "-j", help="Run only this job (repeatable); all jobs by default."),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List every job and exit.")] = False,
) -> None:
    """Run background jobs: resetters, janitors, metrics (all of them by default).

    Examples:

        offload worker

        offload worker --job queues.resetter --job metrics.queue-size

        offload worker --list
    """
    from offload.worker.service import list_jobs, run_worker

    jobs = list_jobs()
    if list_:
        width = max(len(name) for name, _ in jobs)
        for name, description in jobs:
            out.print(f"{name:<{width}}  {description}", highlight=False, soft_wrap=True)
        raise typer.Exit(0)
    names = job or []
    valid = [name for name, _ in jobs]
    unknown = [name for name in names if name not in valid]
    if unknown:
        fail(f"unknown job {', '.join(unknown)}; valid jobs: {', '.join(valid)}", 2)
    config = settings()
    run(lambda: run_worker(config, names))


@migrate_app.command("up")
def migrate_up() -> None:
    """Migrate the database to this release's schema (safe to run again).

    Example:

        OFFLOAD_DATABASE_URL=postgresql://offload@db/offload offload migrate up
    """
    config = settings()
    from offload.db import schema

    async def main() -> int:
        url = config.database()
        found = await schema.upgrade(url)
        out.print(
            f"{url.redacted()} is at schema revision {found.current} (newest)", highlight=False
        )
        return 0

    run(main)


@migrate_app.command("status")
def migrate_status() -> None:
    """Show the database's schema revision and whether it needs `offload migrate up`.

    Example:

        offload migrate status
    """
    config = settings()
    from offload.db import schema

    async def main() -> int:
        url = config.database()
        found = await schema.status(url)
        if not found.known:
            out.print(schema.too_new_message(found), highlight=False)
            return 1
        verdict = "up to date" if found.up_to_date else "needs `offload migrate up`"
        out.print(
            f"{url.redacted()}: revision {found.current or '(empty)'}, "
            f"newest {found.head}: {verdict}",
            highlight=False,
        )
        return 0 if found.up_to_date else 3

    run(main)


@app.command()
def version() -> None:
    """Print the version of offload and of what it runs on.

    Example:

        offload version
    """
    out.print(
        f"offload {__version__} (python {platform.python_version()}, "
        f"sqlite {sqlite3.sqlite_version}, {sys.platform}/{platform.machine()})",
        highlight=False,
    )


_add_feature_commands()


def main() -> None:
    """Entry point of the `offload` console script."""
    app()
