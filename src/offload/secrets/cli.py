"""`offload secrets`: set, list and delete secrets and read who used them, over the HTTP API;
`rotate-key`, where the server's key settings are."""

from __future__ import annotations

import getpass
import socket
import sys
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import httpx
import typer

from offload import terminal
from offload.apicall import api, call, fail
from offload.secrets.store import VALUE_MAX, check_name

secrets_app = typer.Typer(
    help="Secrets handed to jobs by name: encrypted on the server, redacted from logs, "
    "never shown again.",
    no_args_is_help=True,
)
out = terminal.stdout()
err = terminal.stderr()
AsJson = Annotated[
    bool, typer.Option("--json", help="Print one JSON document: the API's list of objects.")
]
# How the API names the site's own namespace (secrets/routes.py).
GLOBAL_NAME = "global"

Namespace = Annotated[
    str | None,
    typer.Option(
        "--namespace", "-n", help="A user's or organization's secrets (default: your own)."
    ),
]
Global = Annotated[
    bool, typer.Option("--global", help="The site's global secrets, which every job can read.")
]


async def _namespace(client: httpx.AsyncClient, namespace: str | None, global_: bool) -> str:
    """The namespace as the API names it: the one given, `global`, or the caller's own."""
    if namespace is not None and global_:
        raise fail("give --namespace or --global, not both", 2)
    if global_:
        return GLOBAL_NAME
    if namespace is not None:
        return namespace
    me: dict[str, Any] = await call(client, "GET", "/api/me")
    return str(me["username"])


def _path(namespace: str, name: str | None = None) -> str:
    path = f"/api/secrets/{quote(namespace, safe='')}"
    return path if name is None else f"{path}/{quote(name, safe='')}"


def _where(namespace: str) -> str:
    return "globally" if namespace == GLOBAL_NAME else f"in {namespace}"


def _time(text: str) -> str:
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S")


def _named(name: str) -> str:
    try:
        return check_name(name)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc


def _read_value(name: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"value of {name}: ")
    raw = sys.stdin.buffer.read(VALUE_MAX + 2)
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"the value of {name} on stdin is not UTF-8 text ({exc.reason})", 2) from exc
    # `echo` adds a newline the value does not have.
    value = value.removesuffix("\n")
    if len(value.encode("utf-8")) > VALUE_MAX:
        raise fail(f"the value of {name} is longer than {VALUE_MAX} bytes", 2)
    return value


@secrets_app.command("set")
def set_secret(name: str, namespace: Namespace = None, global_: Global = False) -> None:
    """Set a secret; its value is read from stdin (or asked for), never from the command line.

    Jobs name the secrets they need (`offload run --secret NAME`, or a batch spec step's
    `env`); each is read from the job's namespace, else from the global ones. A user's
    secrets are set by that user, an organization's by its admins, global ones by site admins.

    Examples:

        printf %s "$API_KEY" | offload secrets set API_KEY

        offload secrets set NPM_TOKEN --namespace acme < npm-token.txt

        printf %s "$GH_TOKEN" | offload secrets set GH_TOKEN --global
    """
    value = _read_value(_named(name))
    if not value:
        raise fail(f"secret {name} would be empty; give it a value on stdin", 2)

    async def work(client: httpx.AsyncClient) -> str:
        where = await _namespace(client, namespace, global_)
        await call(client, "PUT", _path(where, name), json={"value": value})
        return where

    where = api(work)
    out.print(f"secret {name} set {_where(where)}", highlight=False)


@secrets_app.command("list")
def list_secrets(
    namespace: Namespace = None,
    global_: Global = False,
    as_json: AsJson = False,
) -> None:
    """List a namespace's secrets and when they were set (never their values).

    Examples:

        offload secrets list

        offload secrets list --namespace acme

        offload secrets list --global --json | jq -r '.[].name'
    """

    async def work(client: httpx.AsyncClient) -> tuple[str, list[dict[str, Any]]]:
        where = await _namespace(client, namespace, global_)
        return where, await call(client, "GET", _path(where))

    where, found = api(work)
    if as_json:
        terminal.write_json(found)
        return
    if not found:
        err.print(f"no secrets in {where}", highlight=False, markup=False)
        return
    # Which namespace, for the reader: on stderr, so that stdout is only the rows.
    err.print(f"secrets {_where(where)}:", highlight=False, markup=False)
    listing = terminal.Listing("name", "updated (UTC)", "created (UTC)", whole={"name"})
    for s in found:
        listing.add(s["name"], _time(s["updatedAt"]), _time(s["createdAt"]))
    listing.show(out)


@secrets_app.command("delete")
def delete_secret(name: str, namespace: Namespace = None, global_: Global = False) -> None:
    """Delete a secret (and the record of which jobs used it); jobs that need it then fail.

    Examples:

        offload secrets delete API_KEY

        offload secrets delete NPM_TOKEN --namespace acme
    """

    async def work(client: httpx.AsyncClient) -> str:
        where = await _namespace(client, namespace, global_)
        await call(client, "DELETE", _path(where, name))
        return where

    where = api(work)
    out.print(f"secret {name} deleted {_where(where)}", highlight=False)


@secrets_app.command("accesses")
def accesses(
    name: str,
    namespace: Namespace = None,
    global_: Global = False,
    limit: Annotated[int, typer.Option(help="Show this many, newest first.", min=1, max=1000)] = 50,
    as_json: AsJson = False,
) -> None:
    """Show which jobs were handed a secret, newest first (whoever may change the secret).

    Examples:

        offload secrets accesses API_KEY

        offload secrets accesses GH_TOKEN --global --limit 200

        offload secrets accesses API_KEY --json | jq -r '.[].jobId'
    """

    async def work(client: httpx.AsyncClient) -> list[dict[str, Any]]:
        where = await _namespace(client, namespace, global_)
        path = f"{_path(where, name)}/accesses"
        return list(await call(client, "GET", path, params={"limit": limit}))

    found = api(work)
    if as_json:
        terminal.write_json(found)
        return
    if not found:
        err.print(f"no job has used {name} yet", highlight=False, markup=False)
        return
    listing = terminal.Listing(
        "at (UTC)", "job", "queue", "job's namespace", whole={"job", "queue", "job's namespace"}
    )
    for a in found:
        listing.add(_time(a["at"]), str(a["jobId"]), a["jobQueue"], a["jobNamespace"] or "-")
    listing.show(out)


def _server_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 0.5):
            return True
    except OSError:
        return False


@secrets_app.command("rotate-key")
def rotate_key() -> None:
    """Re-encrypt every secret under a new key (site admins, on the server's machine).

    It reads the database and the key settings directly, as `offload migrate` does, and
    changes every secret or none.

    With OFFLOAD_ENCRYPTION_KEY (or OFFLOAD_ENCRYPTION_KEY_FILE): put the new key there and
    the old one in OFFLOAD_ENCRYPTION_OLD_KEYS, restart servers and workers, run this, then
    remove OFFLOAD_ENCRYPTION_OLD_KEYS and restart them again.

    With neither: offload makes a new key, re-encrypts, and replaces the key file in its data
    dir, keeping no copy of the old key. Stop `offload up` (or the server and the worker)
    first: they read the key when they start.

    Examples:

        offload secrets rotate-key

        OFFLOAD_ENCRYPTION_KEY="$NEW" OFFLOAD_ENCRYPTION_OLD_KEYS="$OLD" \\
            offload secrets rotate-key
    """
    from offload import commands as root
    from offload.secrets.rotation import keeps_own_key

    config = root.settings()
    if keeps_own_key(config) and _server_answers(config.server_url()):
        raise fail(
            f"an offload server answers at {config.server_url()}: stop it (and the worker) "
            "first; they read the key file only when they start",
            1,
        )

    async def main() -> int:
        from offload.db import schema
        from offload.db.connect import connect
        from offload.secrets.cipher import CipherError
        from offload.secrets.rotation import rotate_key as rotate

        url = config.database()
        db = await connect(url, attempts=1)
        try:
            await schema.require_current(url)
            try:
                done = await rotate(db, config)
            except CipherError as exc:
                raise fail(f"{exc}; no secret was changed", 1) from exc
        finally:
            await db.close()
        out.print(
            f"re-encrypted {done.rows} secret{'' if done.rows == 1 else 's'} under key "
            f"{done.key_id}",
            highlight=False,
        )
        if done.key_file is not None:
            out.print(f"the new key is in {done.key_file}", highlight=False)
        else:
            out.print(
                "once every server and worker runs with the new key, remove "
                "OFFLOAD_ENCRYPTION_OLD_KEYS",
                highlight=False,
            )
        return 0

    root.run(main)
