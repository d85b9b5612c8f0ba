"""`offload login|logout|users|orgs|tokens|audit`: people and their access, over the HTTP API."""

from __future__ import annotations

import asyncio
import getpass
import sys
from typing import Annotated, Any

import typer

from offload import terminal
from offload.apicall import api, call, fail

out = terminal.stdout()
err = terminal.stderr()
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON document: the API's list of objects.")
]

users_app = typer.Typer(help="Users: add, list, disable, promote.", no_args_is_help=True)
orgs_app = typer.Typer(help="Organizations and their members.", no_args_is_help=True)
tokens_app = typer.Typer(help="Personal access tokens: create, list, revoke.", no_args_is_help=True)


def login(
    url: Annotated[str, typer.Argument(help="The server, e.g. https://offload.example.com.")],
) -> None:
    """Sign the CLI in to a server with an access token (read from stdin, or asked for).

    The token is checked, then kept in your config directory, readable only by you. Every
    command that talks to a server uses it (OFFLOAD_TOKEN overrides it).

    Examples:

        offload login https://offload.example.com

        echo "$TOKEN" | offload login http://127.0.0.1:8080
    """
    from offload import credentials
    from offload.http import client as http_client

    if sys.stdin.isatty():
        token = getpass.getpass("access token: ").strip()
    else:
        token = sys.stdin.readline().strip()
    if not token:
        raise fail("no token given; create one with `offload tokens create` or in the web UI", 2)
    base = url.rstrip("/")

    async def check() -> dict[str, Any]:
        async with http_client(base, timeout=30.0) as client:
            client.headers["Authorization"] = f"token {token}"
            me: dict[str, Any] = await call(client, "GET", "/api/me")
            return me

    me = asyncio.run(check())
    where = credentials.save(credentials.Credentials(base, token))
    role = " (site admin)" if me.get("siteAdmin") else ""
    out.print(
        f"signed in to {base} as {me['username']}{role}; saved in {where}",
        highlight=False,
        markup=False,
    )


def logout() -> None:
    """Forget the CLI's stored sign-in (the token stays valid: revoke it with `tokens revoke`).

    Example:

        offload logout
    """
    from offload import credentials

    out.print("signed out" if credentials.forget() else "was not signed in", highlight=False)


def whoami() -> None:
    """Show who the CLI is signed in as, and in which organizations.

    Example:

        offload whoami
    """
    me: dict[str, Any] = api(lambda c: call(c, "GET", "/api/me"))
    orgs = ", ".join(f"{o['name']} ({o['role']})" for o in me["organizations"]) or "none"
    role = " (site admin)" if me["siteAdmin"] else ""
    out.print(f"{me['username']}{role}; organizations: {orgs}", highlight=False)


@users_app.command("add")
def users_add(
    username: str,
    email: Annotated[str, typer.Option(help="Their email address.")] = "",
    display_name: Annotated[str, typer.Option("--display-name", help="Their full name.")] = "",
    site_admin: Annotated[
        bool, typer.Option("--site-admin", help="Make them a site admin.")
    ] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read their password from stdin.")
    ] = False,
) -> None:
    """Add a user (site admins). Without --password-stdin a password is generated and shown once.

    Examples:

        offload users add alice --email alice@example.com

        printf %s "$PASSWORD" | offload users add bob --password-stdin
    """
    from offload.identity.passwords import generate

    password = sys.stdin.read().rstrip("\n") if password_stdin else generate()
    body = {
        "username": username,
        "email": email,
        "displayName": display_name,
        "siteAdmin": site_admin,
        "password": password,
    }
    user = api(lambda c: call(c, "POST", "/api/users", json=body))
    out.print(f"added user {user['username']}", highlight=False)
    if not password_stdin:
        out.print(f"  password (shown once): {password}", highlight=False, markup=False)


@users_app.command("list")
def users_list(as_json: AsJson = False) -> None:
    """List users (site admins).

    Examples:

        offload users list

        offload users list --json | jq -r '.[] | select(.siteAdmin) | .username'
    """
    users: list[dict[str, Any]] = api(lambda c: call(c, "GET", "/api/users?limit=1000"))
    if as_json:
        terminal.write_json(users)
        return
    listing = terminal.Listing(
        "username", "display name", "email", "site admin", "state", whole={"username", "email"}
    )
    for u in users:
        listing.add(
            u["username"],
            u["displayName"],
            u["email"],
            "yes" if u["siteAdmin"] else "",
            "disabled" if u["disabled"] else "active",
        )
    listing.show(out)


def _user_action(verb: str, username: str) -> None:
    user = api(lambda c: call(c, "POST", f"/api/users/{username}/{verb}"))
    role = "site admin" if user["siteAdmin"] else "user"
    state = "disabled" if user["disabled"] else "active"
    out.print(f"{user['username']}: {role}, {state}", highlight=False)


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable a user: their tokens and sessions stop working at once (site admins).

    Example:

        offload users disable mallory
    """
    _user_action("disable", username)


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Enable a disabled user again (site admins).

    Example:

        offload users enable mallory
    """
    _user_action("enable", username)


@users_app.command("promote")
def users_promote(username: str) -> None:
    """Make a user a site admin (site admins).

    Example:

        offload users promote alice
    """
    _user_action("promote", username)


@users_app.command("demote")
def users_demote(username: str) -> None:
    """Make a site admin a plain user again (site admins).

    Example:

        offload users demote alice
    """
    _user_action("demote", username)


@orgs_app.command("add")
def orgs_add(
    name: str,
    display_name: Annotated[str, typer.Option("--display-name", help="Its full name.")] = "",
) -> None:
    """Add an organization (site admins); then add its members with `orgs members --add`.

    Example:

        offload orgs add ml --display-name "Machine learning"
    """
    api(lambda c: call(c, "POST", "/api/orgs", json={"name": name, "displayName": display_name}))
    out.print(f"added organization {name}", highlight=False)


@orgs_app.command("list")
def orgs_list(as_json: AsJson = False) -> None:
    """List your organizations (site admins: all of them).

    Examples:

        offload orgs list

        offload orgs list --json | jq -r '.[].name'
    """
    found: list[dict[str, Any]] = api(lambda c: call(c, "GET", "/api/orgs"))
    if as_json:
        terminal.write_json(found)
        return
    for org in found:
        out.print(
            f"{org['name']}  {org['members']} member(s)  {org['displayName']}",
            highlight=False,
            markup=False,
        )


@orgs_app.command("members")
def orgs_members(
    name: str,
    add: Annotated[list[str] | None, typer.Option("--add", help="Add this user.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Remove this user.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Those added are its admins.")] = False,
    as_json: AsJson = False,
) -> None:
    """List an organization's members, or change them (its admins and site admins).

    Examples:

        offload orgs members ml

        offload orgs members ml --json | jq -r '.[] | select(.role == "admin") | .username'

        offload orgs members ml --add alice --add bob

        offload orgs members ml --add carol --admin

        offload orgs members ml --remove bob
    """
    role = "admin" if admin else "member"

    async def work(client: Any) -> list[dict[str, Any]]:
        for username in add or []:
            await call(client, "PUT", f"/api/orgs/{name}/members/{username}", json={"role": role})
        for username in remove or []:
            await call(client, "DELETE", f"/api/orgs/{name}/members/{username}")
        found: list[dict[str, Any]] = await call(client, "GET", f"/api/orgs/{name}/members")
        return found

    members = api(work)
    if as_json:
        terminal.write_json(members)
        return
    for member in members:
        out.print(f"{member['username']}  {member['role']}", highlight=False, markup=False)


async def _me(client: Any, user: str | None) -> str:
    return user or str((await call(client, "GET", "/api/me"))["username"])


@tokens_app.command("create")
def tokens_create(
    user: Annotated[
        str | None, typer.Option("--user", help="Whose token (site admins; default: yours).")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="user:all (default) or site-admin (repeatable)."),
    ] = None,
    note: Annotated[str, typer.Option(help="What the token is for.")] = "",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d or 12h (default: until revoked).")
    ] = None,
) -> None:
    """Create an access token; only the token is printed, once, on stdout.

    Examples:

        offload tokens create --note ci --expires 90d

        offload tokens create --scope user:all --scope site-admin --note ops

        offload tokens create --user alice --note "alice's laptop"    # site admins
    """
    from offload.config import parse_duration

    try:
        lifetime = parse_duration(expires) if expires else None
    except ValueError as exc:
        raise fail(f"--expires: {exc}", 2) from exc
    body: dict[str, Any] = {"scopes": scope or ["user:all"], "note": note}
    if lifetime is not None:
        body["expiresIn"] = int(lifetime.total_seconds())

    async def work(client: Any) -> dict[str, Any]:
        whose = await _me(client, user)
        made: dict[str, Any] = await call(client, "POST", f"/api/users/{whose}/tokens", json=body)
        return made

    made = api(work)
    err.print(f"token {made['id']} ({', '.join(made['scopes'])}); shown this once:")
    print(made["token"])


@tokens_app.command("list")
def tokens_list(
    user: Annotated[
        str | None, typer.Option("--user", help="Whose tokens (site admins; default: yours).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List access tokens (never their values).

    Examples:

        offload tokens list

        offload tokens list --json | jq -r '.[] | select(.revoked | not) | .id'
    """

    async def work(client: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await call(
            client, "GET", f"/api/users/{await _me(client, user)}/tokens"
        )
        return found

    found = api(work)
    if as_json:
        terminal.write_json(found)
        return
    listing = terminal.Listing(
        "id", "note", "scopes", "created", "expires", "last used", "state", whole={"id", "scopes"}
    )
    for t in found:
        listing.add(
            str(t["id"]),
            t["note"],
            ",".join(t["scopes"]),
            t["createdAt"][:19],
            (t["expiresAt"] or "never")[:19],
            (t["lastUsedAt"] or "never")[:19],
            "revoked" if t["revoked"] else "active",
        )
    listing.show(out)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[int, typer.Argument(metavar="ID", help="The token's id (tokens list).")],
    user: Annotated[
        str | None, typer.Option("--user", help="Whose token (site admins; default: yours).")
    ] = None,
) -> None:
    """Revoke an access token: it stops working within seconds.

    Example:

        offload tokens revoke 12
    """

    async def work(client: Any) -> None:
        await call(client, "DELETE", f"/api/users/{await _me(client, user)}/tokens/{token_id}")

    api(work)
    out.print(f"token {token_id} revoked", highlight=False)


def audit(
    actor: Annotated[str | None, typer.Option(help="Only what this user did.")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. sign-in.failed or batch.apply.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 50,
    as_json: AsJson = False,
) -> None:
    """Show the audit log: who did what, when, from where (site admins).

    Examples:

        offload audit

        offload audit --action sign-in.failed --limit 200

        offload audit --json | jq -r '.[] | select(.actor == "alice") | .action'
    """
    params: dict[str, Any] = {"limit": limit}
    params.update({k: v for k, v in (("actor", actor), ("action", action)) if v})
    entries: list[dict[str, Any]] = api(lambda c: call(c, "GET", "/api/audit", params=params))
    if as_json:
        terminal.write_json(entries)
        return
    listing = terminal.Listing(
        "when", "who", "action", "target", "from", "detail", whole={"who", "action", "target"}
    )
    for e in entries:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items())
        listing.add(e["at"][:19], e["actor"], e["action"], e["target"], e["address"], detail)
    listing.show(out)
