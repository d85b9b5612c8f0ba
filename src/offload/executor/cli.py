"""`offload executor`: run an executor, check its configuration, manage its images."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from offload import logs, terminal
from offload.executor.config import (
    ConfigError,
    ExecutorConfig,
    check_data_dir,
    size_text,
    unknown_settings,
)

if TYPE_CHECKING:
    from offload.executor.images import ImageStore

executor_app = typer.Typer(invoke_without_command=True)
images_app = typer.Typer(
    help="The executor's image store: the images sandboxed steps run in.", no_args_is_help=True
)
executor_app.add_typer(images_app, name="images")
err = terminal.stderr()
out = terminal.stdout()


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


DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="The executor data directory whose images/ is the store (default: "
        "EXECUTOR_DATA_DIR; else the executor of `offload up` with this OFFLOAD_DATA_DIR, or "
        "with offload's data dir once `offload up` ran there; else the executor's default).",
        show_default=False,
    ),
]


def _store(data_dir: Path | None) -> tuple[ImageStore, str]:
    """The image store meant (see DataDirOption), and how to say which it is."""
    from offload.executor.datadir import find
    from offload.executor.images import ImageStore

    found = find(os.environ, data_dir)
    store = ImageStore(found.images.absolute(), data_dir=data_dir)
    return store, f"{store.root} ({found.why})"


@images_app.command("import")
def import_image(
    name: Annotated[str, typer.Argument(help="Image name, e.g. local/base or busybox:latest.")],
    source: Annotated[
        Path,
        typer.Argument(
            help="A rootfs tarball (plain, gzip, xz or bzip2), a rootfs directory, an OCI "
            "layout or archive, or a `docker save` archive."
        ),
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Add an image to the executor's store without a registry (replacing one of that name).

    The executor unpacks it once, when a job first needs it.

    Examples:

        offload executor images import local/base ./rootfs.tar

        docker save -o alpine.tar alpine:3.19
        offload executor images import alpine:3.19 alpine.tar

        offload executor images import --data-dir /srv/executor local/base ./rootfs.tar.gz
    """
    from offload.executor.runtimes.base import RuntimeUnavailable

    store, where = _store(data_dir)
    try:
        image = asyncio.run(store.import_image(name, source))
    except (ValueError, FileNotFoundError, RuntimeUnavailable) as exc:
        raise _fail(str(exc), 1) from exc
    except (RuntimeError, OSError) as exc:
        raise _fail(f"cannot import {name} into {where}: {exc}", 1) from exc
    out.print(
        f"imported {image.name} ({image.digest[:19]}, {size_text(image.size)}) into {where}",
        highlight=False,
        markup=False,
    )


@images_app.command("list")
def list_images(
    data_dir: DataDirOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON array of the images, every field whole.")
    ] = False,
) -> None:
    """List the images of the executor's store: name, id, size, when imported, if unpacked.

    Examples:

        offload executor images list

        offload executor images list --json | jq -r '.[].name'

        offload executor images list --data-dir /srv/executor
    """
    store, where = _store(data_dir)
    images = store.list()
    if as_json:
        terminal.write_json(
            [
                {
                    "name": image.name,
                    "digest": image.digest,
                    "size": image.size,
                    "imported": image.imported,
                    "unpacked": image.unpacked,
                    "source": image.source,
                    "store": str(store.root),
                }
                for image in images
            ]
        )
        return
    if not images:
        err.print(
            f"no images in {where}; add one with `offload executor images import"
            f"{_flag(data_dir)} NAME TARBALL_OR_DIR`",
            highlight=False,
            markup=False,
        )
        return
    err.print(f"images in {where}", highlight=False, markup=False)
    listing = terminal.Listing("name", "id", "size", "imported", "unpacked", whole={"name", "id"})
    for image in images:
        listing.add(
            image.name,
            image.digest.split(":", 1)[-1][:12],
            size_text(image.size),
            image.imported.replace("T", " ").replace("+00:00", " UTC"),
            "yes" if image.unpacked else "no",
        )
    listing.show(out)


@images_app.command("rm")
def remove_images(
    names: Annotated[
        list[str], typer.Argument(help="Image names, e.g. local/base (:latest) or alpine:3.19.")
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Remove images from the executor's store, with their unpacked root filesystems.

    An image that a running step uses is left alone (exit status 1); remove it once that
    job has finished. Jobs that need a removed image fail until it is imported again.

    Examples:

        offload executor images rm local/base

        offload executor images rm alpine:3.19 local/tools:v2 --data-dir /srv/executor
    """
    from offload.executor.images import ImageInUse
    from offload.executor.runtimes.base import ImageNotFound

    store, where = _store(data_dir)
    code = 0
    for name in names:
        try:
            image = asyncio.run(store.remove(name))
        except (ValueError, LookupError, RuntimeError, OSError) as exc:
            code = 1
            told = isinstance(exc, ImageNotFound | ImageInUse | ValueError)
            message = str(exc) if told else f"cannot remove {name} from {where}: {exc}"
            err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
            continue
        out.print(f"removed {image.name} from {where}", highlight=False, markup=False)
    raise typer.Exit(code)


def _flag(data_dir: Path | None) -> str:
    from offload.executor.datadir import data_dir_flag

    return data_dir_flag(data_dir)
