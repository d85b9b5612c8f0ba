"""`offload repos ...`: register repositories, list them, and sync their mirrors by hand."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from offload import terminal

repos_app = typer.Typer(
    help="Repositories the server mirrors and serves to executors over git smart-HTTP.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = terminal.stdout()
err = terminal.stderr()
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON document: the API's list of objects.")
]


def _when(moment: str | None) -> str:
    return moment[:19].replace("T", " ") + " UTC" if moment else "never"


@repos_app.command("add")
def add(
    source: Annotated[
        str,
        typer.Argument(
            metavar="PATH_OR_URL",
            help="A local repository, or any URL git can fetch (https, ssh, git, file).",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            "-n",
            help="The name to serve it under; by default host/path of a URL "
            "(github.com/org/project) or the directory name of a local path.",
        ),
    ] = None,
) -> None:
    """Register a repository and mirror it at once; prints its default branch and head commit.

    Nothing stays registered when the first mirror cannot be made.

    Examples:

        offload repos add https://github.com/sourcegraph/conc

        offload repos add git@github.com:acme/api.git

        offload repos add /srv/git/monorepo --name acme/monorepo
    """
    from offload.apicall import api, call

    body = {"source": source, "name": name}
    repo = api(lambda c: call(c, "POST", "/api/repos", json=body, timeout=600.0))
    # Names and paths are text: a `[` in one is not markup.
    out.print(f"added {repo['name']}", highlight=False, markup=False)
    out.print(f"  source:         {repo['source']}", highlight=False, markup=False)
    out.print(
        f"  default branch: {repo['defaultBranch'] or '(none)'}", highlight=False, markup=False
    )
    out.print(f"  head commit:    {repo['headCommit'] or '(empty repository)'}", markup=False)
    out.print(f"  mirror:         {repo['mirror']}", highlight=False, markup=False)


@repos_app.command("list")
def list_(as_json: AsJson = False) -> None:
    """Show every repository: source, default branch, head commit, last sync and last error.

    Names and sources are printed whole, also into a pipe.

    Examples:

        offload repos list

        offload repos list | grep acme/

        offload repos list --json | jq -r '.[] | select(.lastError) | .name'
    """
    from offload.apicall import api, call

    repos = api(lambda c: call(c, "GET", "/api/repos"))
    if as_json:
        terminal.write_json(repos)
        return
    if not repos:
        err.print("no repositories yet; add one with `offload repos add PATH_OR_URL`")
        return
    listing = terminal.Listing(
        "name",
        "source",
        "default branch",
        "head",
        "last synced",
        "last error",
        whole={"name", "source", "default branch", "head"},
    )
    for repo in repos:
        listing.add(
            repo["name"],
            repo["source"],
            repo["defaultBranch"] or "-",
            (repo["headCommit"] or "-")[:12],
            _when(repo["lastSyncedAt"]),
            repo["lastError"] or "",
            style="red" if repo["lastError"] else None,
        )
    listing.show(out)


@repos_app.command("sync")
def sync(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[NAME]...", help="Repositories to sync; all of them by default."),
    ] = None,
) -> None:
    """Fetch repositories from their sources now, one line per repository as it finishes.

    Exits 1, naming them, if any failed; the others are synced all the same.

    Examples:

        offload repos sync

        offload repos sync github.com/sourcegraph/conc
    """
    from offload import commands as root
    from offload.apicall import api, call

    chosen = list(dict.fromkeys(names or []))
    out.print(
        f"syncing {len(chosen)} repositor{'y' if len(chosen) == 1 else 'ies'}"
        if chosen
        else "syncing every repository"
    )
    outcomes = api(
        lambda c: call(c, "POST", "/api/repos/sync", json={"names": chosen}, timeout=3600.0)
    )
    if not outcomes:
        out.print("no repositories yet; add one with `offload repos add PATH_OR_URL`")
        return
    for outcome in outcomes:
        if outcome["ok"]:
            head = (outcome["headCommit"] or "(empty)")[:12]
            branch = outcome["defaultBranch"] or "(no default branch)"
            out.print(
                f"[green]synced[/] {escape(outcome['name'])}: {escape(branch)} at {head} "
                f"({outcome['seconds']:.1f}s)",
                highlight=False,
            )
        else:
            out.print(
                f"[red]failed[/] {escape(outcome['name'])}: {escape(outcome['error'])}",
                highlight=False,
            )
    failed = [o["name"] for o in outcomes if not o["ok"]]
    if failed:
        root.fail(
            f"{len(failed)} of {len(outcomes)} repositories failed to sync: "
            f"{', '.join(failed)} (see `offload repos list` for their errors)",
            1,
        )


@repos_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The repository to forget.", show_default=False)],
) -> None:
    """Forget a repository and delete its mirror; executors can no longer fetch it.

    Example:

        offload repos remove github.com/sourcegraph/conc
    """
    from offload.apicall import api, call

    api(lambda c: call(c, "DELETE", f"/api/repos/{name}"))
    out.print(f"removed {name}", highlight=False, markup=False)


pulls_app = typer.Typer(
    help="Pull requests of the built-in code host (repositories held from a local path).",
    no_args_is_help=True,
)
repos_app.add_typer(pulls_app, name="pulls")


@pulls_app.command("list")
def pulls_list(
    repo: Annotated[str | None, typer.Option("--repo", help="Only this repository.")] = None,
    state: Annotated[
        str | None, typer.Option(help="Only this state: open, draft, merged, closed.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List pull requests.

    Examples:

        offload repos pulls list --state open

        offload repos pulls list --repo myproject --json | jq '.[].number'
    """
    import asyncio

    from offload.apicall import api_client, call

    async def main() -> list[dict[str, object]]:
        params = {k: v for k, v in (("repo", repo), ("state", state)) if v}
        async with api_client() as client:
            found: list[dict[str, object]] = await call(client, "GET", "/api/pulls", params=params)
            return found

    found = asyncio.run(main())
    if as_json:
        terminal.write_json(found)
        return
    for pr in found:
        out.print(
            f"{pr['repo']}#{pr['number']}  {pr['state']:<6}  {pr['head']} -> {pr['base']}  "
            f"{pr['title']}",
            highlight=False,
            markup=False,
        )


def _pull_action(verb: str, repo: str, number: int) -> None:
    import asyncio

    from offload.apicall import api_client, call

    async def main() -> dict[str, object]:
        async with api_client(timeout=120.0) as client:
            done: dict[str, object] = await call(
                client, "POST", f"/api/pulls/{repo}/{number}/{verb}"
            )
            return done

    pr = asyncio.run(main())
    out.print(f"{repo}#{number} is {pr['state']}", highlight=False, markup=False)


@pulls_app.command("merge")
def pulls_merge(
    repo: Annotated[str, typer.Argument(help="Repository name.")],
    number: Annotated[int, typer.Argument(help="Pull request number.")],
) -> None:
    """Merge a pull request into its base branch (a merge commit; conflicts are refused).

    Examples:

        offload repos pulls merge myproject 3
    """
    _pull_action("merge", repo, number)


@pulls_app.command("close")
def pulls_close(
    repo: Annotated[str, typer.Argument(help="Repository name.")],
    number: Annotated[int, typer.Argument(help="Pull request number.")],
) -> None:
    """Close a pull request without merging it.

    Examples:

        offload repos pulls close myproject 3
    """
    _pull_action("close", repo, number)


__all__ = ["repos_app"]
