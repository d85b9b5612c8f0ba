"""`offload repos ...`: register repositories, list them, and sync their mirrors by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from offload.config import Settings
    from offload.repos.syncer import Syncer, SyncOutcome

repos_app = typer.Typer(
    help="Repositories the server mirrors and serves to executors over git smart-HTTP.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@asynccontextmanager
async def open_syncer(config: Settings) -> AsyncIterator[Syncer]:
    """A syncer over the configured database (refused unless its schema is current)."""
    from offload.db import schema
    from offload.db.connect import connect
    from offload.repos.mirror import Mirrors
    from offload.repos.registry import RepoRegistry
    from offload.repos.syncer import Syncer

    url = config.database()
    db = await connect(url, attempts=1)
    try:
        await schema.require_current(url)
        yield Syncer(RepoRegistry(db), Mirrors.in_data_dir(config.data_dir))
    finally:
        await db.close()


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "never"


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
    from offload import cli as root
    from offload.repos.registry import DuplicateRepo, RepoNameError, SourceError
    from offload.repos.syncer import SyncFailed

    config = root.settings()
    out = Console()

    async def main() -> int:
        async with open_syncer(config) as syncer:
            try:
                repo = await syncer.add(source, name=name)
            except (RepoNameError, SourceError) as exc:
                root.fail(str(exc), 2)
            except (DuplicateRepo, SyncFailed) as exc:
                root.fail(str(exc), 1)
            out.print(f"added {repo.name}", highlight=False)
            out.print(f"  source:         {repo.display_source}", highlight=False)
            out.print(f"  default branch: {repo.default_branch or '(none)'}", highlight=False)
            out.print(f"  head commit:    {repo.head_commit or '(empty repository)'}")
            out.print(f"  mirror:         {syncer.mirrors.path(repo.name)}", highlight=False)
        return 0

    root.run(main)


@repos_app.command("list")
def list_() -> None:
    """Show every repository: source, default branch, head commit, last sync and last error.

    Example:

        offload repos list
    """
    from offload import cli as root

    config = root.settings()
    out = Console()

    async def main() -> int:
        async with open_syncer(config) as syncer:
            repos = await syncer.registry.list()
        if not repos:
            out.print("no repositories yet; add one with `offload repos add PATH_OR_URL`")
            return 0
        table = Table("name", "source", "default branch", "head", "last synced", "last error")
        for repo in repos:
            table.add_row(
                repo.name,
                repo.display_source,
                repo.default_branch or "-",
                (repo.head_commit or "-")[:12],
                _when(repo.last_synced_at),
                repo.last_error or "",
                style="red" if repo.last_error else None,
            )
        out.print(table, soft_wrap=False)
        return 0

    root.run(main)


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
    from offload import cli as root
    from offload.repos.registry import UnknownRepo

    config = root.settings()
    out = Console()

    def report(outcome: SyncOutcome) -> None:
        if outcome.state is not None:
            head = (outcome.state.head_commit or "(empty)")[:12]
            branch = outcome.state.default_branch or "(no default branch)"
            out.print(
                f"[green]synced[/] {outcome.name}: {branch} at {head} ({outcome.seconds:.1f}s)",
                highlight=False,
            )
        else:
            out.print(f"[red]failed[/] {outcome.name}: {outcome.error}", highlight=False)

    async def main() -> int:
        async with open_syncer(config) as syncer:
            try:
                chosen = [await syncer.registry.require(n) for n in dict.fromkeys(names or [])]
            except UnknownRepo as exc:
                root.fail(str(exc), 1)
            if not names:
                chosen = await syncer.registry.list()
            if not chosen:
                out.print("no repositories yet; add one with `offload repos add PATH_OR_URL`")
                return 0
            out.print(f"syncing {len(chosen)} repositor{'y' if len(chosen) == 1 else 'ies'}")
            outcomes = await syncer.sync_all(chosen, on_done=report)
        failed = [o.name for o in outcomes if not o.ok]
        if failed:
            root.fail(
                f"{len(failed)} of {len(outcomes)} repositories failed to sync: "
                f"{', '.join(failed)} (see `offload repos list` for their errors)",
                1,
            )
        return 0

    root.run(main)


@repos_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The repository to forget.", show_default=False)],
) -> None:
    """Forget a repository and delete its mirror; executors can no longer fetch it.

    Example:

        offload repos remove github.com/sourcegraph/conc
    """
    from offload import cli as root
    from offload.repos.registry import RepoNameError

    config = root.settings()
    out = Console()

    async def main() -> int:
        async with open_syncer(config) as syncer:
            try:
                removed = await syncer.remove(name)
            except RepoNameError as exc:
                root.fail(str(exc), 2)
            if not removed:
                root.fail(
                    f"no repository named {name!r} is registered; see `offload repos list`", 1
                )
        out.print(f"removed {name}", highlight=False)
        return 0

    root.run(main)


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
) -> None:
    """List pull requests.

    Examples:

        offload repos pulls list --state open
    """
    import asyncio

    from offload.apicall import api_client, call

    async def main() -> list[dict[str, object]]:
        params = {k: v for k, v in (("repo", repo), ("state", state)) if v}
        async with api_client() as client:
            found: list[dict[str, object]] = await call(client, "GET", "/api/pulls", params=params)
            return found

    out = Console()
    for pr in asyncio.run(main()):
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
    Console().print(f"{repo}#{number} is {pr['state']}", highlight=False, markup=False)


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


__all__ = ["open_syncer", "repos_app"]
