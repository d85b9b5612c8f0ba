"""`offload codeintel ...`: index jobs, their configuration, status and ranking, and code
navigation (`def`, `refs`)."""

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
config_app = typer.Typer(
    help="A repository's index configuration (it wins over sourcegraph.yaml and inference).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
indexes_app = typer.Typer(
    help="Index jobs: queued, running and finished.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
codeintel_app.add_typer(config_app, name="config")
uploads_app = typer.Typer(
    help="Uploaded indexes: waiting, processed, failed.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
codeintel_app.add_typer(indexes_app, name="indexes")
codeintel_app.add_typer(uploads_app, name="uploads")
out = terminal.stdout()
err = terminal.stderr()

Repo = Annotated[
    str, typer.Argument(metavar="REPO", help="A registered repository's name.", show_default=False)
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")]


def _line(text: str) -> None:
    # Names, paths and commands are never markup.
    out.print(text, highlight=False, markup=False, soft_wrap=True)


@codeintel_app.command("index")
def index(
    repo: Repo,
    commit: Annotated[
        str | None,
        typer.Option(
            "--commit", "-c", help="A branch, tag or commit (default: the default branch's head)."
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Queue a repository's index jobs now, ahead of every scheduled one.

    A job already queued for the same commit, root and indexer is moved ahead instead of
    queued twice; one running is left alone.

    Examples:

        offload codeintel index acme/api

        offload codeintel index acme/api --commit v2.3.0
    """
    from offload.apicall import api, call

    body: dict[str, Any] = {"repo": repo}
    if commit:
        body["commit"] = commit
    answer = api(lambda c: call(c, "POST", "/api/codeintel/index", json=body, timeout=120.0))
    if as_json:
        terminal.write_json(answer)
        return
    jobs = answer["jobs"]
    _line(f"{repo} at {answer['commit'][:12]}: {len(jobs)} index job(s) ({answer['source']})")
    for job in jobs:
        _line(f"  #{job['id']}  {job['root'] or '/'}  {job['indexer']}  {job['outcome']}")
    for e in answer["errors"]:
        _line(
            f"{e['file']}:{e['line']}:{e['column']}: {e['path'] + ': ' if e['path'] else ''}"
            f"{e['message']}"
        )
    for note in answer["notes"]:
        _line(f"note: {note}")
    if answer["errors"]:
        from offload import commands as root

        root.fail(f"{repo}'s configuration is invalid, so nothing was queued", 1)


@config_app.command("get")
def config_get(repo: Repo) -> None:
    """Print the index configuration stored for a repository (exit 1 if none is).

    Example:

        offload codeintel config get acme/api > acme-api.yaml
    """
    from offload import commands as root
    from offload.apicall import api, call

    answer = api(lambda c: call(c, "GET", "/api/codeintel/config", params={"repo": repo}))
    if answer["config"] is None:
        root.fail(
            f"{repo} has no stored configuration: its sourcegraph.yaml or inference decides "
            f"(see `offload codeintel infer {repo}`)",
            1,
        )
    out.file.write(answer["config"])


@config_app.command("set")
def config_set(
    repo: Repo,
    file: Annotated[
        typer.FileText,
        typer.Option(
            "--file", "-f", help="The configuration (sourcegraph.yaml's format); - for stdin."
        ),
    ],
) -> None:
    """Store a repository's index configuration (site admins). It wins over the repository's
    sourcegraph.yaml and over inference from then on. An invalid one is refused with each
    error's line and column, and nothing is stored.

    Example:

        offload codeintel config set acme/api -f index.yaml
    """
    from offload.apicall import api, call

    text = file.read()
    answer = api(
        lambda c: call(
            c,
            "PUT",
            "/api/codeintel/config",
            params={"repo": repo},
            content=text.encode(),
            headers={"Content-Type": "text/plain"},
        )
    )
    _line(f"stored {repo}'s configuration: {answer['jobs']} index job(s) per commit")


@config_app.command("delete")
def config_delete(repo: Repo) -> None:
    """Forget a repository's stored configuration (site admins).

    Example:

        offload codeintel config delete acme/api
    """
    from offload.apicall import api, call

    api(lambda c: call(c, "DELETE", "/api/codeintel/config", params={"repo": repo}))
    _line(f"deleted {repo}'s configuration: its sourcegraph.yaml or inference decides again")


@codeintel_app.command("status")
def status(repo: Repo, as_json: AsJson = False) -> None:
    """What the scheduler last read of a repository (where its jobs came from, a
    configuration's errors with line and column) and its latest index jobs.

    Example:

        offload codeintel status acme/api
    """
    from offload.apicall import api, call

    answer = api(lambda c: call(c, "GET", "/api/codeintel/status", params={"repo": repo}))
    if as_json:
        terminal.write_json(answer)
        return
    found = answer["status"]
    configured = "a stored configuration" if answer["configured"] else "no stored configuration"
    _line(f"{repo}: {configured}")
    if found is None:
        _line("never looked at by the scheduler; `offload codeintel index` queues it now")
    else:
        _line(f"last looked at: {found['lastScannedAt']} at {(found['lastCommit'] or '')[:12]}")
        _line(f"jobs from:      {found['source']}")
        for e in found["errors"]:
            where = f"{e['file']}:{e['line']}:{e['column']}: "
            _line(where + (f"{e['path']}: " if e["path"] else "") + e["message"])
        for note in found["notes"]:
            _line(f"note: {note}")
    _show_jobs(answer["indexJobs"])


def _show_jobs(jobs: list[dict[str, Any]]) -> None:
    if not jobs:
        _line("no index jobs")
        return
    for job in jobs:
        manual = " (asked for)" if job["manual"] else ""
        _line(
            f"#{job['id']}  {job['state']:<10}  {job['repo']}@{job['commit'][:12]}  "
            f"{job['root'] or '/'}  {job['indexer']}{manual}"
        )
        if job["failureMessage"]:
            _line(f"      {job['failureMessage'].splitlines()[0][:200]}")


@indexes_app.command("list")
def indexes_list(
    repo: Annotated[str | None, typer.Option("--repo", help="Only this repository's.")] = None,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="Only jobs in this state (repeatable): queued, ..."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 50,
    as_json: AsJson = False,
) -> None:
    """List index jobs, newest first.

    Examples:

        offload codeintel indexes list --state queued --state processing

        offload codeintel indexes list --repo acme/api --json
    """
    from offload.apicall import api, call

    params: dict[str, Any] = {"limit": limit}
    if repo:
        params["repo"] = repo
    if state:
        params["state"] = state
    answer = api(lambda c: call(c, "GET", "/api/codeintel/indexes", params=params))
    if as_json:
        terminal.write_json(answer)
        return
    _show_jobs(answer["indexJobs"])


@indexes_app.command("show")
def indexes_show(job_id: Annotated[int, typer.Argument(metavar="ID", min=1)]) -> None:
    """One index job with its steps' logs.

    Example:

        offload codeintel indexes show 42
    """
    from offload.apicall import api, call

    answer = api(lambda c: call(c, "GET", f"/api/codeintel/indexes/{job_id}"))
    _show_jobs([answer])
    for entry in answer["logs"]:
        _line(f"--- {entry['key']}: {' '.join(entry['command'])} (exit {entry['exitCode']})")
        out.file.write(entry["out"])


@uploads_app.command("list")
def uploads_list(
    repo: Annotated[str | None, typer.Option("--repo", help="Only this repository's.")] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Only uploads in this state, e.g. failed.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 50,
    as_json: AsJson = False,
) -> None:
    """List uploaded indexes, newest first: what each holds once processed, or why it failed.

    Examples:

        offload codeintel uploads list --repo acme/api

        offload codeintel uploads list --state failed --json
    """
    from offload.apicall import api, call

    params: dict[str, Any] = {"limit": limit}
    if repo:
        params["repo"] = repo
    if state:
        params["state"] = state
    answer = api(lambda c: call(c, "GET", "/api/codeintel/uploads", params=params))
    if as_json:
        terminal.write_json(answer)
        return
    if not answer["uploads"]:
        _line("no uploads")
    for u in answer["uploads"]:
        held = (
            f"{u['documents']} documents, {u['occurrences']} occurrences"
            if u["documents"] is not None
            else f"{u['size']} bytes"
        )
        _line(
            f"#{u['id']}  {u['state']:<10}  {u['repo']}@{u['commit'][:12]}  "
            f"{u['root'] or '/'}  {u['indexer']}  {held}"
        )
        if u["failureMessage"]:
            _line(f"      {u['failureMessage'].splitlines()[0][:200]}")


@codeintel_app.command("ranking")
def ranking(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    as_json: AsJson = False,
) -> None:
    """The repositories in the order the scheduler takes them, with last week's precise and
    search-based results.

    Example:

        offload codeintel ranking --limit 10
    """
    from offload.apicall import api, call

    answer = api(lambda c: call(c, "GET", "/api/codeintel/ranking", params={"limit": limit}))
    if as_json:
        terminal.write_json(answer)
        return
    _line(f"{'#':>4}  {'precise':>8}  {'search':>8}  {'ratio':>6}  last queued  repository")
    for r in answer["repositories"]:
        _line(
            f"{r['position']:>4}  {r['preciseWeek']:>8}  {r['searchWeek']:>8}  "
            f"{r['preciseRatio']:>6.2f}  {(r['lastQueuedAt'] or 'never')[:19]:<11}  {r['repo']}"
        )


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


Position = Annotated[
    str,
    typer.Argument(
        metavar="PATH:LINE:COL",
        help="A file of the repository and a 1-based line and column in it.",
        show_default=False,
    ),
]
AtCommit = Annotated[
    str,
    typer.Option("--commit", "-c", help="A branch, tag or commit of the repository's mirror."),
]


def _position(text: str) -> tuple[str, int, int]:
    """PATH:LINE:COL (1-based, as compilers print them) as a path and 0-based numbers."""
    from offload import commands as root

    path, _, rest = text.rpartition(":")
    path, _, line = path.rpartition(":")
    if not path or not line.isdigit() or not rest.isdigit() or min(int(line), int(rest)) < 1:
        root.fail(
            f"{text!r} is not PATH:LINE:COL with a 1-based line and column, like src/app.py:12:5",
            2,
        )
    return path, int(line) - 1, int(rest) - 1


def _navigate(kind: str, repo: str, position: str, commit: str, as_json: bool) -> None:
    from offload import commands as root
    from offload.apicall import api, call

    path, line, character = _position(position)
    params = {"commit": commit, "path": path, "line": line, "character": character}
    answer = api(lambda c: call(c, "GET", f"/api/codeintel/{repo}/{kind}", params=params))
    if as_json:
        terminal.write_json(answer)
    else:
        for loc in answer["locations"]:
            start = loc["range"]["start"]
            where = f"{loc['path']}:{start['line'] + 1}:{start['character'] + 1}"
            if loc["repo"] != repo:
                where = f"{loc['repo']}@{loc['commit'][:12]} {where}"
            _line(where)
        if answer["truncated"]:
            err.print(f"(only the first {len(answer['locations'])} shown)", highlight=False)
    if not answer["locations"]:
        from rich.markup import escape

        root.fail(escape(f"no {kind} found: {answer['reason']}"), 1)


@codeintel_app.command("def")
def definitions(
    repo: Repo, position: Position, commit: AtCommit = "HEAD", as_json: AsJson = False
) -> None:
    """Print where the symbol at PATH:LINE:COL is defined, as `path:line:col` lines (another
    repository's as `repo@commit path:line:col`).

    A commit without an index is answered from its nearest indexed ancestor when the lines
    involved did not change since. Exits 1, saying why, when nothing is found.

    Examples:

        offload codeintel def acme/api src/api/app.py:12:5

        offload codeintel def acme/api src/api/app.py:12:5 --commit v2.3.0 --json
    """
    _navigate("definitions", repo, position, commit, as_json)


@codeintel_app.command("refs")
def references(
    repo: Repo, position: Position, commit: AtCommit = "HEAD", as_json: AsJson = False
) -> None:
    """Print where the symbol at PATH:LINE:COL is defined and used, one `path:line:col` line
    each (other repositories' as `repo@commit path:line:col`).

    Exits 1, saying why, when nothing is found.

    Examples:

        offload codeintel refs acme/api src/api/app.py:12:5

        offload codeintel refs acme/api src/api/app.py:12:5 | wc -l
    """
    _navigate("references", repo, position, commit, as_json)


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
