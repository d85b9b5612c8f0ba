"""Secrets: values stored on the server, handed to jobs by name and redacted from their logs."""

from __future__ import annotations

import re
from datetime import datetime

from offload.clock import Clock, SystemClock
from offload.db.base import Database

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class UnknownSecret(LookupError):
    """A job asked for a secret that is not set; the message names it."""


def check_name(name: str) -> str:
    """`name` if it can be an environment variable name; ValueError saying why otherwise."""
    if not _NAME.match(name):
        raise ValueError(
            f"secret name {name!r} must be letters, digits and underscores, "
            "not starting with a digit"
        )
    return name


def placeholder(name: str) -> str:
    """What a secret's value is replaced with in logs."""
    return "${{ secrets." + name + " }}"


class Secrets:
    """The secrets table."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def set(self, name: str, value: str) -> None:
        """Create or replace a secret."""
        if not value:
            raise ValueError(f"secret {name} would be empty; give it a value on stdin")
        now: datetime = self.clock.now()
        await self.db.fetch(
            "INSERT INTO secrets (name, value, created_at, updated_at)"
            " VALUES (:name, :value, :now, :now)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            {"name": check_name(name), "value": value, "now": now},
        )

    async def names(self) -> list[str]:
        """Every secret's name (never the values)."""
        return [r["name"] for r in await self.db.fetch("SELECT name FROM secrets ORDER BY name")]

    async def values(self, names: list[str]) -> dict[str, str]:
        """The values of `names`; UnknownSecret naming any that is not set."""
        if not names:
            return {}
        found = {
            r["name"]: r["value"]
            for r in await self.db.fetch("SELECT name, value FROM secrets")
            if r["name"] in names
        }
        missing = [n for n in names if n not in found]
        if missing:
            raise UnknownSecret(
                f"secret {', '.join(missing)} is not set; set it with `offload secrets set NAME`"
            )
        return found

    async def delete(self, name: str) -> bool:
        """Remove a secret; False when there was none."""
        rows = await self.db.fetch(
            "DELETE FROM secrets WHERE name = :name RETURNING name", {"name": name}
        )
        return bool(rows)
