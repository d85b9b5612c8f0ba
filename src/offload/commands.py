"""What every command shares: the options given before it, its settings read and checked once,
and the errors users can fix turned into one line and an exit code."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, NoReturn

import typer
from pydantic import ValidationError

from offload import logs, terminal
from offload.config import Settings
from offload.db.base import DatabaseUnavailable, SchemaMismatch
from offload.db.url import DatabaseURLError

err = terminal.stderr()


class State:
    """Options given before the command, shared by every command."""

    log_format: str = "text"
    log_level: str = "info"
    overrides: ClassVar[dict[str, Any]] = {}


def fail(message: str, code: int) -> NoReturn:
    """Print one clear line to stderr and exit with `code`."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings() -> Settings:
    """Settings from the environment and the global options; a bad value exits with code 2."""
    from offload.queues import QueueSettingError, executor_queue_names
    from offload.secrets.cipher import KeySettingError, check_key_settings

    try:
        built = Settings(**State.overrides)
        built.database()
        executor_queue_names(built)
        check_key_settings(built)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "OFFLOAD_" + "_".join(str(p) for p in first["loc"]).upper()
        fail(f"{field}: {first['msg']} (got {first.get('input')!r})", 2)
    except (DatabaseURLError, QueueSettingError, KeySettingError) as exc:
        fail(str(exc), 2)
    logs.configure(built.log_format, built.log_level)
    return built


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> NoReturn:
    """Run a command's coroutine, turning the errors users can fix into one line and a code."""
    try:
        code = asyncio.run(main())
    except DatabaseURLError as exc:
        fail(str(exc), 2)
    except SchemaMismatch as exc:
        fail(str(exc), 1)
    except DatabaseUnavailable as exc:
        fail(str(exc), 1)
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)
