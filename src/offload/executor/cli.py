"""`offload executor`: run an executor, check its configuration, manage its images."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from offload import logs
from offload.executor.config import (
    ConfigError,
    ExecutorConfig,
    check_data_dir,
    size_text,
    unknown_settings,
)

executor_app = typer.Typer(invoke_without_command=True)
images_app = typer.Typer(help="The executor's image store.", no_args_is_help=True)
executor_app.add_typer(images_app, name="images")
err = Console(stderr=True)
out = Console()


def _fail(message: str, code: int) -> typer.Exit:
    # Messages quote settings, which may hold anything, markup brackets included.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _warn(message: str) -> None:
    err.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _config() -> ExecutorConfig:
    """The checked settings and data directory; exit 2 with every problem listed if not."""
    from offload.executor.runtimes.registry import default_runtime

    for warning in unknown_settings(os.environ):
        _warn(warning)
    try:
        default = default_runtime()
    except RuntimeError:
        default = "sandbox"
    try:
        config = ExecutorConfig.from_env(os.environ, default_backend=default)
        warnings = check_data_dir(config)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from exc
    for warning in warnings:
        _warn(warning)
    return config


def _runtime(config: ExecutorConfig):  # type: ignore[no-untyped-def]
    from offload.executor.runtimes.registry import build_runtime

    try:
        return build_runtime(config.backend, config.runtime_settings())
    except ValueError as exc:
        raise _fail(f"EXECUTOR_BACKEND: {exc}", 2) from exc


@executor_app.callback()
def executor(ctx: typer.Context) -> None:
    """Run an executor until SIGTERM, configured by EXECUTOR_* environment variables.

    Examples:

        EXECUTOR_FRONTEND_URL=http://offload:8080 EXECUTOR_REGISTRATION_TOKEN=... \\
        EXECUTOR_QUEUE_NAME=default offload executor

        EXECUTOR_BACKEND=docker EXECUTOR_MAX_NUM_JOBS=4 offload executor
    """
    if ctx.invoked_subcommand is not None:
        return
    from offload.executor.agent import run_executor
    from offload.executor.runtimes.base import RuntimeUnavailable

    config = _config()
    runtime = _runtime(config)
    logs.configure(os.environ.get("OFFLOAD_LOG_FORMAT", "text"), "info")  # type: ignore[arg-type]
    try:
        code = asyncio.run(run_executor(config, runtime))
    except RuntimeUnavailable as exc:
        raise _fail(f"the {config.backend} runtime cannot run here: {exc}", 1) from exc
    raise typer.Exit(code)


@executor_app.command()
def validate() -> None:
    """Check the configuration, the runtime and the connection to the server, then exit.

    Example:

        EXECUTOR_FRONTEND_URL=http://offload:8080 EXECUTOR_REGISTRATION_TOKEN=... \\
        EXECUTOR_QUEUE_NAME=default offload executor validate
    """
    from offload.executor.client import ExecutorClient, Unauthorized
    from offload.executor.runtimes.base import RuntimeUnavailable

    config = _config()
    free = shutil.disk_usage(config.data_dir).free
    out.print(
        f"data directory: {config.data_dir} is writable, {size_text(free)} free",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    runtime = _runtime(config)

    async def main() -> int:
        try:
            line = await runtime.check()
        except RuntimeUnavailable as exc:
            raise _fail(f"runtime {config.backend}: {exc}", 1) from exc
        out.print(f"runtime: {line}", highlight=False, markup=False, soft_wrap=True)
        client = ExecutorClient(config.frontend_url, config.token, config.queues, name=config.name)
        try:
            await client.check_auth()
        except Unauthorized as exc:
            raise _fail(str(exc), 1) from exc
        except Exception as exc:
            raise _fail(f"cannot reach {config.frontend_url}: {exc}", 1) from exc
        finally:
            await client.close()
        out.print(
            f"server: {config.frontend_url} accepts this executor's token",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return 0

    raise typer.Exit(asyncio.run(main()))


@images_app.command("import")
def import_image(
    name: Annotated[str, typer.Argument(help="Image name, e.g. local/base or busybox:latest.")],
    source: Annotated[
        Path, typer.Argument(help="A rootfs tarball, a rootfs directory, or an OCI layout.")
    ],
) -> None:
    """Add an image to the executor's store without a registry.

    Example:

        offload executor images import local/base ./rootfs.tar
    """
    from offload.executor.images import ImageStore

    config_dir = Path(os.environ.get("EXECUTOR_DATA_DIR") or _default_data_dir())
    store = ImageStore(config_dir / "images")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(store.import_image(name, source))
    out.print(f"imported {name} into {config_dir / 'images'}", highlight=False)


def _default_data_dir() -> Path:
    from offload.executor.config import default_data_dir

    return default_data_dir()
