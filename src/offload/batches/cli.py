"""`offload batch ...`: write, check and run batch specs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from offload import terminal

if TYPE_CHECKING:
    import asyncio

    import httpx

    from offload.executor.config import ExecutorConfig
    from offload.executor.runtimes.base import Runtime

batch_app = typer.Typer(
    help="Batch changes: one change described in a spec, run across many repositories.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = terminal.stdout()
err = terminal.stderr()

SpecFile = Annotated[
    str, typer.Option("--file", "-f", help="The batch spec (YAML); - reads standard input.")
]

STARTER = """\
# A batch change: https://docs.sourcegraph.com/batch_changes/references/batch_spec_yaml_reference
# describes every field; offload reads the same format.
name: {name}
description: Say what this batch change does and why.

# The repositories to change (offload repos list shows them).
on:
  - repositoriesMatchingQuery: file:README.md
  # - repository: github.com/acme/api
  #   branch: main

# Run in each repository, in the container, from the repository's root.
steps:
  - run: sed -i 's/colour/color/g' README.md
    container: busybox

changesetTemplate:
  title: Use American spelling
  body: This batch change was created by ${{{{ batch_change.name }}}}.
  branch: batch/${{{{ batch_change.name }}}}
  commit:
    message: Use American spelling in ${{{{ repository.name }}}}
  published: false
"""


def read_spec(file: str) -> tuple[str, str]:
    """The spec's text and the name its errors should show."""
    from offload.batches.spec.limits import MAX_SPEC_CHARS

    source = "<stdin>" if file == "-" else file
    most = 4 * MAX_SPEC_CHARS  # UTF-8 bytes of the longest spec there may be
    try:
        if file == "-":
            data = sys.stdin.buffer.read(most + 1)
        else:
            with Path(file).open("rb") as opened:
                data = opened.read(most + 1)
    except OSError as exc:
        err.print(f"[bold red]error:[/] cannot read {file}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from exc
    problem = None
    if len(data) > most:
        problem = (
            f" the batch spec is larger than {most >> 20} MiB; the limit is {MAX_SPEC_CHARS:,} "
            "characters (MAX_SPEC_CHARS)"
        )
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            problem = (
                f"{line}: byte 0x{data[exc.start]:02x} (offset {exc.start}) is not UTF-8; "
                "a batch spec is YAML text in UTF-8 (is this a binary file?)"
            )
    if problem is not None:
        err.print(f"{source}:{problem}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    # As text files are read: every line break a newline.
    return text.replace("\r\n", "\n").replace("\r", "\n"), source


@batch_app.command()
def new(
    file: Annotated[
        str, typer.Option("--file", "-f", help="Where to write the spec.")
    ] = "batch.yaml",
    name: Annotated[str, typer.Option(help="The batch change's name.")] = "hello-world",
) -> None:
    """Write a starter batch spec to edit.

    Examples:

        offload batch new

        offload batch new -f fix-spelling.yaml --name fix-spelling
    """
    path = Path(file)
    if path.exists():
        err.print(f"[bold red]error:[/] {file} exists; choose another --file", highlight=False)
        raise typer.Exit(1)
    path.write_text(STARTER.format(name=name))
    out.print(f"wrote {file}; check it with: offload batch validate -f {file}", highlight=False)


@batch_app.command()
def validate(file: SpecFile) -> None:
    """Check a batch spec: every problem is printed as FILE:LINE:COLUMN: FIELD: what is wrong.

    Exits 0 when the spec is valid, 1 when it is not.

    Examples:

        offload batch validate -f batch.yaml

        cat batch.yaml | offload batch validate -f -
    """
    from offload.batches.spec.model import SpecErrors
    from offload.batches.spec.reader import parse_spec

    text, source = read_spec(file)
    try:
        spec = parse_spec(text, source=source)
    except SpecErrors as exc:
        for problem in exc.errors:
            err.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        count = len(exc.errors)
        err.print(f"{source}: {count} problem{'s' if count != 1 else ''}", highlight=False)
        raise typer.Exit(1) from exc
    out.print(
        f"{source}: batch spec {spec.name!r} is valid "
        f"({len(spec.on)} repository selector(s), {len(spec.steps)} step(s))",
        highlight=False,
        markup=False,
    )


# -- against the server ---------------------------------------------------------------------

POLL = 0.5
User = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "--org",
        help="Whose batch change: an organization of yours (default: you, the signed-in user).",
    ),
]
Name = Annotated[str, typer.Argument(help="The batch change's name (the spec's `name`).")]
SpecId = Annotated[
    str | None, typer.Option("--spec", help="A batch spec id (default: the applied one).")
]
Repo = Annotated[str | None, typer.Option("--repo", help="Only this repository.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Local = Annotated[
    bool,
    typer.Option(
        "--local",
        help="Run the workspaces on this machine instead of the executors, with the runtime "
        "and images EXECUTOR_BACKEND and EXECUTOR_DATA_DIR name (as `offload executor` would); "
        "the results go to the server, cached and previewed as the executors' would be.",
    ),
]
Slots = Annotated[
    int,
    typer.Option(
        "--slots", min=0, help="With --local: workspaces run at once (default: one per CPU)."
    ),
]


async def _user(client: httpx.AsyncClient, user: str | None) -> str:
    """The namespace given, or the signed-in user's own."""
    from offload.apicall import call

    return user or str((await call(client, "GET", "/api/me"))["username"])


def _columns(rows: list[list[str]], header: list[str]) -> None:
    """Aligned plain columns: fast enough for tens of thousands of rows."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    lines = [line.rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    sys.stdout.write("\n".join(lines) + "\n")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"


async def _local_run_setup(slots: int) -> tuple[ExecutorConfig, Runtime]:
    """This machine's executor settings and runtime for `--local`, checked before submitting."""
    from offload.apicall import fail, server_and_token
    from offload.batches.local import local_config, local_runtime
    from offload.executor.config import ConfigError
    from offload.executor.runtimes.base import RuntimeUnavailable

    try:
        config = local_config(server_and_token()[0], slots or os.cpu_count() or 1)
        runtime = local_runtime(config)
        await runtime.check()
    except ConfigError as exc:
        raise fail(f"--local reads the executor's settings: {exc}", 2) from exc
    except ValueError as exc:
        raise fail(f"--local: EXECUTOR_BACKEND: {exc}", 2) from exc
    except RuntimeUnavailable as exc:
        raise fail(
            f"--local: the {config.backend} runtime cannot run here: {exc}; choose another "
            "with EXECUTOR_BACKEND, or preview without --local to run on the executors",
            1,
        ) from exc
    return config, runtime


async def _submit_and_wait(
    file: str, user: str | None, *, quiet: bool, local: bool = False, slots: int = 0
) -> dict[str, object]:
    import asyncio
    import contextlib

    from offload.apicall import api_client, fail
    from offload.batches.local import LocalRun

    text, source = read_spec(file)
    files = mounted_files(text, source, Path(file).parent if file != "-" else Path.cwd())
    machine = await _local_run_setup(slots) if local else None
    async with api_client() as client:
        response = await client.post(
            "/api/batches/specs",
            json={
                "spec": text,
                "namespace": user or "",
                "source": source,
                "files": files,
                "local": local,
            },
        )
        if response.status_code == 400 and "errors" in response.json():
            body = response.json()
            err.print(body["detail"], highlight=False, markup=False, soft_wrap=True)
            count = len(body["errors"])
            err.print(f"{source}: {count} problem{'s' if count != 1 else ''}; nothing was queued")
            raise typer.Exit(1)
        if response.status_code >= 400:
            raise fail(response.json().get("detail", response.text), 2)
        spec_id = response.json()["id"]
        token = client.headers.get("Authorization", "").partition(" ")[2] or None
        run = LocalRun(*machine, spec_id, token) if machine is not None else None
        runner = asyncio.create_task(run.run()) if run is not None else None
        where = "executing on this machine" if run is not None else "executing"
        try:
            view = await _follow(client, spec_id, where, runner, quiet=quiet)
        finally:
            if run is not None and runner is not None:
                run.stop()
                with contextlib.suppress(Exception):
                    await runner
        if view["resolution"] == "failed":
            raise fail(f"batch spec {spec_id} could not be resolved: {view['resolutionError']}")
        return view


async def _follow(
    client: httpx.AsyncClient,
    spec_id: str,
    where: str,
    runner: asyncio.Task[None] | None,
    *,
    quiet: bool,
) -> dict[str, object]:
    """Show a spec's progress until it is done; its last view."""
    import asyncio
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from offload.apicall import call, fail

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=True,
    ) as progress:
        task = progress.add_task(f"batch spec {spec_id}: resolving", total=None, states="")
        while True:
            asked = time.monotonic()
            view: dict[str, object] = await call(client, "GET", f"/api/batches/specs/{spec_id}")
            took = time.monotonic() - asked
            states, workspaces = view["states"], view["workspaces"]
            assert isinstance(states, dict) and isinstance(workspaces, int)
            finished = sum(
                states.get(s, 0)
                for s in ("completed", "failed", "canceled", "cached", "ignored", "skipped")
            )
            resolution = view["resolution"]
            progress.update(
                task,
                description=f"batch spec {spec_id}: "
                + (where if resolution == "completed" else str(resolution)),
                total=workspaces or None,
                completed=finished,
                states=_counts(states),
            )
            if view["done"]:
                return view
            if runner is not None and runner.done():
                problem = runner.exception()
                raise fail(
                    f"the local run of batch spec {spec_id} stopped before its workspaces "
                    f"were done: {problem or 'it ended'}"
                )
            # Asking costs the server: a spec that is slow to count is asked less often.
            await asyncio.sleep(max(POLL, 4 * took))


# What the files a spec mounts may add up to: they travel with the spec and each job.
MOUNT_LIMIT = 16 * 1024 * 1024


def mounted_files(text: str, source: str, base: Path) -> dict[str, str]:
    """The files the spec's steps mount, read from beside the spec, base64 by relative path."""
    import base64

    from offload.apicall import fail
    from offload.batches.service import MountError, mount_path
    from offload.batches.spec.model import SpecErrors
    from offload.batches.spec.reader import parse_spec

    try:
        spec = parse_spec(text, source=source)
    except SpecErrors:
        return {}  # the server says what is wrong, with positions
    out: dict[str, str] = {}
    total = 0
    for i, step in enumerate(spec.steps):
        for j, mount in enumerate(step.mount):
            where = f"{source}: steps[{i}].mount[{j}].path"
            try:
                relative = mount_path(mount.path, where)
            except MountError as exc:
                raise fail(str(exc), 2) from exc
            path = base / relative
            if not path.exists():
                raise fail(f"{where}: {path} does not exist", 2)
            found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            for file in found:
                data = file.read_bytes()
                total += len(data)
                if total > MOUNT_LIMIT:
                    raise fail(f"{where}: the mounted files pass {MOUNT_LIMIT >> 20} MiB", 2)
                name = (
                    relative if file == path else f"{relative}/{file.relative_to(path).as_posix()}"
                )
                out[name] = base64.b64encode(data).decode()
    return out


def _show_preview(view: dict[str, object]) -> None:
    operations = view["operations"]
    assert isinstance(operations, list)
    rows = [
        [
            op["repo"],
            op["branch"],
            ",".join(op["actions"]),
            f"+{op['added']} -{op['deleted']}",
            op["title"],
        ]
        for op in operations
    ]
    _columns(rows, ["REPOSITORY", "BRANCH", "OPERATIONS", "DIFF", "TITLE"])
    states = view["states"]
    assert isinstance(states, dict)
    counts = view.get("counts") or {}
    assert isinstance(counts, dict)
    out.print(
        f"batch spec {view['id']}: {view['workspaces']} workspaces ({_counts(states)}); "
        f"{len(operations)} changesets ({_counts(counts)})",
        highlight=False,
        markup=False,
    )
    ignored = view.get("ignored") or []
    assert isinstance(ignored, list)
    if ignored:
        out.print(
            f"ignored (they hold a .batchignore): {', '.join(ignored)}",
            highlight=False,
            markup=False,
        )


# Changeset specs per request of `--diff` and `--json`: each carries its whole diff.
CHANGESETS_PAGE = 500
# What `--json` adds to each operation from its changeset spec (None for a dropped one).
_CHANGESET_FIELDS = (
    "kind",
    "baseRef",
    "baseRev",
    "body",
    "commitMessage",
    "author",
    "published",
    "diff",
    "diffBase64",
)


async def _preview_details(
    view: dict[str, object],
) -> tuple[dict[int, dict[str, object]], list[dict[str, object]]]:
    """A finished preview's changesets in full, by spec id, and its failed workspaces."""
    from offload.apicall import api_client, call
    from offload.batches.preview import FAILED_STATES, failed_count

    spec_id = view["id"]
    states = view["states"]
    assert isinstance(states, dict)
    changesets: dict[int, dict[str, object]] = {}
    failed: list[dict[str, object]] = []
    async with api_client(timeout=120) as client:
        after = 0
        while True:
            page: list[dict[str, object]] = await call(
                client,
                "GET",
                f"/api/batches/specs/{spec_id}/changesets",
                params={"after": after, "limit": CHANGESETS_PAGE},
                retries=2,
            )
            for changeset in page:
                changesets[int(str(changeset["specId"]))] = changeset
            if len(page) < CHANGESETS_PAGE:
                break
            after = int(str(page[-1]["specId"]))
        if failed_count(states):
            for state in FAILED_STATES:
                if states.get(state):
                    failed += await call(
                        client,
                        "GET",
                        f"/api/batches/specs/{spec_id}/workspaces",
                        params={"state": state},
                        retries=2,
                    )
    return changesets, failed


@batch_app.command()
def preview(
    file: SpecFile,
    user: User = None,
    as_json: AsJson = False,
    local: Local = False,
    slots: Slots = 0,
    show_diff: Annotated[
        bool,
        typer.Option(
            "--diff",
            help="Also print each changeset's rendered title, commit message and body, and its "
            "diff: colored on a terminal, through $OFFLOAD_PAGER or $PAGER when one is set.",
        ),
    ] = False,
) -> None:
    """Run a batch spec on the executors (or this machine) and show what applying it would do.

    Shows the workspaces' progress while they execute, then one row per changeset with its
    operations (create, push, publish, update, close, detach, import) and diff stats. With
    `--json`, each operation also carries its changeset's rendered title, body, commit
    message and exact diff, and `failedWorkspaces` lists the workspaces that failed.

    Exits 0 when every workspace finished (or came from the cache), 1 when any failed or was
    canceled (the preview is still shown, with the commands that show their logs and retry
    them) or the spec could not be resolved, 2 for a problem with the command itself.

    Examples:

        offload batch preview -f batch.yaml

        offload batch preview -f batch.yaml --diff

        offload batch preview -f batch.yaml --json | jq -r '.operations[].diff'

        offload batch preview -f batch.yaml --local --slots 4   # no executors needed
    """
    import asyncio

    from offload.batches import preview as shown

    view = asyncio.run(_submit_and_wait(file, user, quiet=as_json, local=local, slots=slots))
    failure = shown.failure_lines(view, user, local=local, spec_file=file)
    changesets: dict[int, dict[str, object]] = {}
    failed: list[dict[str, object]] = []
    if as_json or show_diff:
        changesets, failed = asyncio.run(_preview_details(view))
    if as_json:
        operations = view["operations"]
        assert isinstance(operations, list)
        for op in operations:
            full = changesets.get(op["specId"]) if op["specId"] is not None else None
            op.update({key: (full or {}).get(key) for key in _CHANGESET_FIELDS})
        view["failedWorkspaces"] = failed
        terminal.write_json(view)
        for line in failure:
            err.print(line, highlight=False, markup=False, soft_wrap=True)
        if failure:
            raise typer.Exit(1)
        return
    if show_diff:
        _show_diffs(view, changesets)
    _show_preview(view)
    sys.stdout.write("".join(line + "\n" for line in failure))
    sys.stdout.write(shown.next_step(view) + "\n")
    sys.stdout.flush()
    if failure:
        raise typer.Exit(1)


def _show_diffs(view: dict[str, object], changesets: dict[int, dict[str, object]]) -> None:
    """Every changeset with its diff, before the table: colored and paged on a terminal."""
    from offload.batches import preview as shown

    operations = view["operations"]
    assert isinstance(operations, list)
    on_terminal = sys.stdout.isatty()
    color = on_terminal and out.is_terminal and not out.no_color and not out.is_dumb_terminal
    chunks = shown.changeset_text(operations, changesets, terminal=on_terminal, color=color)
    pager = shown.pager_command(os.environ) if on_terminal else None
    if pager is not None:
        if shown.page(chunks, pager, os.environ) == 127:
            err.print(
                f"the pager {pager!r} could not be started (OFFLOAD_PAGER, PAGER): set one that "
                "is installed, or an empty one to print the diffs here",
                highlight=False,
                markup=False,
            )
    else:
        sys.stdout.flush()
        shown.write(chunks, sys.stdout.buffer)
        sys.stdout.buffer.write(b"\n")


@batch_app.command()
def apply(
    file: Annotated[
        str | None,
        typer.Option(
            "--file", "-f", help="A batch spec to run (cached steps are not re-run) and apply."
        ),
    ] = None,
    spec: Annotated[str | None, typer.Option("--spec", help="A previewed batch spec's id.")] = None,
    user: User = None,
    local: Local = False,
    slots: Slots = 0,
) -> None:
    """Apply a batch spec: create or update its batch change and its changesets.

    Examples:

        offload batch apply --spec 3f2a9c0d1e4b5a6c      # what `batch preview` showed

        offload batch apply -f batch.yaml               # run (from the cache) and apply

        offload batch apply -f batch.yaml --local       # run on this machine, then apply
    """
    import asyncio

    from offload.apicall import api_client, call, fail

    if (file is None) == (spec is None):
        raise fail("give either --file SPEC or --spec ID", 2)
    if local and file is None:
        raise fail("--local runs a spec's workspaces: give it with --file SPEC", 2)

    async def main() -> dict[str, object]:
        spec_id = spec
        if file is not None:
            view = await _submit_and_wait(file, user, quiet=False, local=local, slots=slots)
            spec_id = str(view["id"])
        async with api_client() as client:
            result: dict[str, object] = await call(
                client, "POST", f"/api/batches/specs/{spec_id}/apply"
            )
            return result

    result = asyncio.run(main())
    counts = result["counts"]
    assert isinstance(counts, dict)
    out.print(
        f"applied batch change {result['batchChange']}: {_counts(counts)}; follow it with "
        f"`offload batch status {result['batchChange']}`",
        highlight=False,
        markup=False,
    )


@batch_app.command()
def status(name: Name, user: User = None, as_json: AsJson = False) -> None:
    """Show a batch change: changesets by state (the burndown), workspaces by state, each one.

    Examples:

        offload batch status fix-spelling
    """
    import asyncio
    import json

    from offload.apicall import api_client, call

    async def main() -> dict[str, object]:
        async with api_client() as client:
            view: dict[str, object] = await call(
                client, "GET", f"/api/batches/changes/{await _user(client, user)}/{name}"
            )
            return view

    view = asyncio.run(main())
    if as_json:
        sys.stdout.write(json.dumps(view) + "\n")
        return
    changesets = view["changesets"]
    workspaces = view["workspaces"]
    listing = view["list"]
    assert isinstance(changesets, dict) and isinstance(workspaces, dict)
    assert isinstance(listing, list)
    _columns(
        [
            [c["repo"], c["branch"] or "", c["status"], c["externalId"] or "", c["error"] or ""]
            for c in listing
        ],
        ["REPOSITORY", "BRANCH", "STATE", "PULL REQUEST", "ERROR"],
    )
    closed = " (closed)" if view["closed"] else ""
    out.print(f"batch change {name}{closed}", highlight=False, markup=False)
    out.print(f"  changesets: {_counts(changesets)}", highlight=False, markup=False)
    out.print(f"  workspaces: {_counts(workspaces)}", highlight=False, markup=False)


def _write_entries(entries: list[dict[str, object]]) -> None:
    for entry in entries:
        command = entry["command"]
        assert isinstance(command, list)
        text = str(entry["out"])
        sys.stdout.write(f"$ {' '.join(command)}  (exit {entry['exitCode']})\n")
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")


def _producer_line(producer: dict[str, object]) -> str:
    """Where a cached workspace's result came from, in one line."""
    from datetime import datetime

    steps = int(str(producer["steps"]))
    what = f"steps 1-{steps}" if steps > 1 else "step 1"
    if not producer["found"]:
        return (
            f"   {what} came from the step cache; that entry is gone since (expired, or the "
            "secrets it read changed), so which run produced it is not known"
        )
    at = datetime.fromisoformat(str(producer["at"])).strftime("%Y-%m-%d %H:%M:%S %Z")
    if producer["job"] is None:
        return f"   {what} came from the step cache, written {at} by a run offload did not record"
    if producer["spec"] is None:
        return (
            f"   {what} came from the step cache, written {at} by job {producer['job']}; "
            "that run's batch spec and logs expired"
        )
    where = f"{producer['repo']}:{producer['path']}" if producer["path"] else producer["repo"]
    return (
        f"   {what} came from the step cache, written {at} by batch spec {producer['spec']}, "
        f"workspace {where}, job {producer['job']}; its logs:"
    )


@batch_app.command()
def logs(name: Name, user: User = None, spec: SpecId = None, repo: Repo = None) -> None:
    """Print the execution logs of a batch change's workspaces (failed ones show their stderr).

    A workspace the step cache answered shows the run that produced its result (batch spec,
    workspace, job and when) and that run's logs, or says they expired.

    Examples:

        offload batch logs fix-spelling --repo github.com/acme/api
    """
    import asyncio

    from offload.apicall import api_client, call

    async def main() -> list[dict[str, object]]:
        params = {k: v for k, v in (("spec", spec), ("repo", repo)) if v}
        async with api_client() as client:
            found: list[dict[str, object]] = await call(
                client,
                "GET",
                f"/api/batches/changes/{await _user(client, user)}/{name}/logs",
                params=params,
            )
            return found

    for workspace in asyncio.run(main()):
        path = f":{workspace['path']}" if workspace["path"] else ""
        error = f" ({workspace['error']})" if workspace["error"] else ""
        sys.stdout.write(f"== {workspace['repo']}{path}: {workspace['state']}{error}\n")
        producer = workspace.get("cachedFrom")
        if isinstance(producer, dict):
            sys.stdout.write(_producer_line(producer) + "\n")
            if isinstance(producer["logs"], list):
                _write_entries(producer["logs"])
            if workspace["logs"]:
                sys.stdout.write("   the steps after them ran in this workspace's own job:\n")
        entries = workspace["logs"]
        assert isinstance(entries, list)
        _write_entries(entries)


@batch_app.command()
def retry(name: Name, user: User = None, spec: SpecId = None, repo: Repo = None) -> None:
    """Run a batch change's failed workspaces again (finished steps come from the cache).

    Examples:

        offload batch retry fix-spelling

        offload batch retry fix-spelling --repo github.com/acme/api
    """
    import asyncio

    from offload.apicall import api_client, call

    async def main() -> int:
        async with api_client() as client:
            body = {"spec": spec, "repo": repo}
            result = await call(
                client,
                "POST",
                f"/api/batches/changes/{await _user(client, user)}/{name}/retry",
                json=body,
            )
            return int(result["retried"])

    n = asyncio.run(main())
    out.print(f"queued {n} workspace(s) again", highlight=False)


@batch_app.command()
def close(name: Name, user: User = None) -> None:
    """Close a batch change: its open pull requests are closed on their code hosts.

    Examples:

        offload batch close fix-spelling
    """
    import asyncio

    from offload.apicall import api_client, call

    async def main() -> int:
        async with api_client() as client:
            result = await call(
                client, "POST", f"/api/batches/changes/{await _user(client, user)}/{name}/close"
            )
            return int(result["closing"])

    n = asyncio.run(main())
    out.print(f"closing batch change {name}: {n} changeset(s) will be closed", highlight=False)
