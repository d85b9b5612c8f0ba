"""Namespaces: the user or organization that owns a job, batch change or secret."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from offload.db.base import Database, Transaction

# Usernames and organization names share one space, as in Sourcegraph: `alice/fix-typos` must
# name one batch change whoever alice is.
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62})$")

NamespaceKind = Literal["user", "org"]
# Names that mean something else where namespaces are named (`/api/secrets/global`).
RESERVED = frozenset({"global"})


class BadName(ValueError):
    """A username or organization name that cannot be one; the message says why."""


class NameTaken(ValueError):
    """The name already belongs to a user or an organization."""


def check_name(name: str, what: str = "name") -> str:
    """`name` if it can name a user or organization; BadName saying why otherwise."""
    if not _NAME.match(name):
        raise BadName(
            f"{what} {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name.lower() in RESERVED:
        raise BadName(f"{what} {name!r} is reserved; choose another")
    return name


@dataclass(frozen=True)
class Namespace:
    """A user's or an organization's name, and which of the two it is."""

    kind: NamespaceKind
    name: str


async def require_free(tx: Transaction, name: str) -> None:
    """NameTaken if a user or an organization already has `name` (case-insensitively); call
    it in the transaction that takes the name."""
    rows = await tx.fetch(
        "SELECT 1 FROM users WHERE lower(username) = lower(:n)"
        " UNION ALL SELECT 1 FROM organizations WHERE lower(name) = lower(:n)",
        {"n": name},
    )
    if rows:
        raise NameTaken(f"the name {name!r} is taken by a user or an organization")


async def resolve(db: Database, name: str) -> Namespace | None:
    """The namespace called `name`, or None."""
    rows = await db.fetch(
        "SELECT 'user' AS kind, username AS name FROM users WHERE username = :n"
        " UNION ALL SELECT 'org' AS kind, name FROM organizations WHERE name = :n",
        {"n": name},
    )
    if not rows:
        return None
    kind: NamespaceKind = "org" if rows[0]["kind"] == "org" else "user"
    return Namespace(kind, str(rows[0]["name"]))
