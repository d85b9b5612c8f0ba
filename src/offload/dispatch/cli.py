"""`offload executors` and `offload queues`: executors, queue counts and grants, over the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from offload import terminal
from offload.apicall import api, call, fail

executors_app = typer.Typer(
    help="The executors: their token and who is connected.", no_args_is_help=True
)
# Its help is the callback's docstring (records per queue, grants, examples).
queues_app = typer.Typer(invoke_without_command=True)
out = terminal.stdout()
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON document: the API's list of objects.")
]
STATES = ("queued", "processing", "completed", "errored", "failed", "canceled")


@executors_app.command()
def token(
    set_: Annotated[
        str | None, typer.Option("--set", help="Replace the token with this value.")
    ] = None,
) -> None:
    """Print the token executors authenticate with (EXECUTOR_REGISTRATION_TOKEN; site admins).

    Examples:

        offload executors token

        offload executors token --set "$(openssl rand -hex 24)"
    """
    if set_ is not None and len(set_) < 16:
        raise typer.BadParameter("use at least 16 characters", param_hint="--set")

    async def work(client: Any) -> str:
        if set_ is not None:
            await call(client, "PUT", "/api/executors/token", json={"token": set_})
        return str((await call(client, "GET", "/api/executors/token"))["token"])

    out.print(api(work), highlight=False)


@executors_app.command("list")
def list_executors(as_json: AsJson = False) -> None:
    """List executors: versions, runtime, queues, and whether they are active (site admins).

    Examples:

        offload executors list

        offload executors list --json | jq -r '.[] | select(.active | not) | .hostname'
    """
    executors: list[dict[str, Any]] = api(lambda c: call(c, "GET", "/api/executors"))
    if as_json:
        terminal.write_json(executors)
        return
    now = datetime.now(UTC)
    listing = terminal.Listing(
        "executor",
        "state",
        "queues",
        "runtime",
        "version",
        "git",
        "os/arch",
        "last seen",
        whole={"executor", "queues", "version"},
    )
    for e in executors:
        ago = (now - datetime.fromisoformat(e["lastSeenAt"])).total_seconds()
        listing.add(
            e["hostname"],
            "active" if e["active"] else "inactive",
            ",".join(e["queues"]),
            e["runtime"],
            e["version"],
            e["git"],
            f"{e['os']}/{e['architecture']}",
            f"{ago:.0f}s ago",
        )
    listing.show(out)


@queues_app.callback()
def queues(ctx: typer.Context, as_json: AsJson = False) -> None:
    """Show every queue: records per state and how long the oldest queued one has waited.

    Examples:

        offload queues

        offload queues --json | jq '.[] | {queue, queued: .counts.queued}'

        offload queues grant gpu --org ml

        offload queues grants
    """
    if ctx.invoked_subcommand is not None:
        return
    found: list[dict[str, Any]] = api(lambda c: call(c, "GET", "/api/queues"))
    if as_json:
        terminal.write_json(found)
        return
    listing = terminal.Listing("queue", *STATES, "oldest queued", whole={"queue"})
    for q in found:
        age = q["oldest_queued_seconds"]
        listing.add(
            q["queue"],
            *(str(q["counts"].get(s, 0)) for s in STATES),
            f"{age:.1f}s" if age is not None else "-",
        )
    listing.show(out)


def _namespace(org: str | None, user: str | None) -> str:
    if (org is None) == (user is None):
        raise fail("name exactly one of --org NAME or --user NAME", 2)
    return str(org or user)


Org = Annotated[str | None, typer.Option("--org", help="The organization.")]
User = Annotated[str | None, typer.Option("--user", help="The user.")]
Network = Annotated[
    bool, typer.Option("--network", help="The grant to give jobs network access there.")
]


@queues_app.command("grant")
def grant(queue: str, org: Org = None, user: User = None, network: Network = False) -> None:
    """Let a namespace use a queue, or give its jobs network access there (site admins).

    Examples:

        offload queues grant gpu --org ml

        offload queues grant default --user alice --network
    """
    namespace = _namespace(org, user)
    permission = "network" if network else "use"
    body = {"namespace": namespace, "permission": permission}
    api(lambda c: call(c, "POST", f"/api/queues/{queue}/grants", json=body))
    what = "network access on" if network else "use of"
    out.print(f"granted {namespace} {what} the {queue} queue", highlight=False)


@queues_app.command("revoke")
def revoke(queue: str, org: Org = None, user: User = None, network: Network = False) -> None:
    """Take back a namespace's grant of a queue (or of network access there; site admins).

    Example:

        offload queues revoke gpu --org ml
    """
    namespace = _namespace(org, user)
    permission = "network" if network else "use"
    api(
        lambda c: call(
            c,
            "DELETE",
            f"/api/queues/{queue}/grants/{namespace}",
            params={"permission": permission},
        )
    )
    out.print(f"revoked {namespace}'s {permission} grant on the {queue} queue", highlight=False)


@queues_app.command("grants")
def grants(as_json: AsJson = False) -> None:
    """List the queue grants and the queues every namespace may use (site admins).

    Examples:

        offload queues grants

        offload queues grants --json | jq -r '.grants[] | select(.queue == "gpu") | .namespace'
    """
    found: dict[str, Any] = api(lambda c: call(c, "GET", "/api/queues/grants"))
    if as_json:
        terminal.write_json(found)
        return
    out.print(f"open to every namespace: {', '.join(found['open'])}", highlight=False)
    for g in found["grants"]:
        out.print(
            f"{g['queue']}  {g['namespace']}  {g['permission']}  (by {g['grantedBy']})",
            highlight=False,
        )
