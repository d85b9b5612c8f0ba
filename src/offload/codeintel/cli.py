"""`offload codeintel ...`: the index jobs a repository's commit gets, and why."""

from __future__ import annotations

import shlex
from typing import Annotated, Any

import typer

from offload import terminal

codeintel_app = typer.Typer(
    help="Precise code intelligence: index jobs for repositories' commits.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = terminal.stdout()
err = terminal.stderr()


@codeintel_app.command("infer")
def infer(
    repo: Annotated[
        str,
        typer.Argument(metavar="REPO", help="A registered repository's name.", show_default=False),
    ],
    commit: Annotated[
        str,
        typer.Option("--commit", "-c", help="A branch, tag or commit of the repository's mirror."),
    ] = "HEAD",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document: the API's answer.")
    ] = False,
) -> None:
    """Show the index jobs a commit would get and why: from the repository's configuration,
    its `sourcegraph.yaml`, or inferred from its files. Nothing is queued.

    Exits 1, printing each error as `sourcegraph.yaml:LINE:COLUMN: message`, when the
    configuration is invalid (such a repository gets no index jobs).

    Examples:

        offload codeintel infer github.com/sourcegraph/conc

        offload codeintel infer acme/monorepo --commit release-2.1

        offload codeintel infer acme/monorepo --json | jq '.jobs[].root'
    """
    from offload import commands as root
    from offload.apicall import api, call

    params = {"repo": repo, "commit": commit}
    answer = api(lambda c: call(c, "GET", "/api/codeintel/infer", params=params, timeout=120.0))
    if as_json:
        terminal.write_json(answer)
    else:
        _show(answer)
    if answer["errors"]:
        name = "sourcegraph.yaml" if answer["source"] == "sourcegraph.yaml" else "configuration"
        for e in answer["errors"]:
            where = f"{name}:{e['line']}:{e['column']}: "
            message = f"{e['path']}: {e['message']}" if e["path"] else e["message"]
            err.print(where + message, highlight=False, markup=False, soft_wrap=True)
        root.fail(
            f"{repo}'s {name} is invalid ({len(answer['errors'])} error(s) above), so it gets "
            f"no index jobs: fix it and push, then run this again",
            1,
        )


def _show(answer: dict[str, Any]) -> None:
    """The jobs as blocks of `name: value` lines (names, paths and commands are never markup)."""

    def line(text: str) -> None:
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    jobs = answer["jobs"]
    count = f"{len(jobs)} index job{'' if len(jobs) == 1 else 's'}"
    line(f"{answer['repo']} at {answer['commit'][:12]}: {count} ({answer['source']})")
    for job in jobs:
        line("")
        line(f"root:    {job['root'] or '/'}")
        line(f"indexer: {job['indexer']}")
        line(f"args:    {shlex.join(job['indexer_args']) or '(none)'}")
        if not job["steps"] and not job["local_steps"]:
            line("steps:   (none)")
        for step in job["steps"]:
            line(f"step:    in {step['root'] or '/'} with {step['image']}:")
            for command in step["commands"]:
                line(f"           {command}")
        for command in job["local_steps"]:
            line(f"local:   {command}")
        if job["requestedEnvVars"]:
            line(f"env:     {', '.join(job['requestedEnvVars'])}")
        line(f"why:     {job['why'] or '(configured)'}")
    for note in answer["notes"]:
        line("")
        line(f"note: {note}")


__all__ = ["codeintel_app"]
