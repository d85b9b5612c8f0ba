"""Secrets: values kept encrypted on the server, handed to jobs by name, redacted from logs.

A secret belongs to a namespace: a user's or an organization's name, or `GLOBAL` ('') for the
site's own. A job reads each secret it names from its own namespace, else the global one;
nothing else (a job in a user's namespace never sees an organization's secret). Every value
handed to a job leaves one row in secret_access_log.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from offload.clock import Clock, SystemClock
from offload.db.base import Database, Row
from offload.db.values import parse_time
from offload.secrets.cipher import PLAINTEXT, Cipher, CipherError

GLOBAL = ""
NAME_MAX = 128
NAMESPACE_MAX = 255
# Bytes of UTF-8: an environment variable, not a place to keep files.
VALUE_MAX = 64 * 1024
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COLUMNS = "id, namespace, name, value_encrypted, key_id"


class UnknownSecret(LookupError):
    """A secret that is not set where it was looked for; the message names both."""


def check_name(name: str) -> str:
    """`name` if it can be an environment variable name; ValueError saying why otherwise."""
    if not _NAME.match(name) or len(name) > NAME_MAX:
        raise ValueError(
            f"secret name {name[:NAME_MAX]!r} must be letters, digits and underscores, "
            f"not starting with a digit, at most {NAME_MAX} characters"
        )
    return name


def check_value(name: str, value: str) -> str:
    """`value` if a job can take it as an environment variable; ValueError saying why."""
    size = len(value.encode("utf-8"))
    if size == 0:
        raise ValueError(f"secret {name} would be empty; give it a value")
    if size > VALUE_MAX:
        raise ValueError(f"secret {name} is {size} bytes; the most a secret holds is {VALUE_MAX}")
    if "\x00" in value:
        raise ValueError(f"secret {name} holds a NUL byte, which no environment variable can")
    return value


def placeholder(name: str) -> str:
    """What a secret's value is replaced with in logs."""
    return "${{ secrets." + name + " }}"


def where(namespace: str) -> str:
    """How messages name a namespace of secrets."""
    return "global" if namespace == GLOBAL else f"namespace {namespace}"


def _missing(names: Sequence[str], namespace: str) -> UnknownSecret:
    listed = ", ".join(names)
    what = f"secret {listed} is" if len(names) == 1 else f"secrets {listed} are"
    flag = "--global" if namespace == GLOBAL else f"--namespace {namespace}"
    looked = "globally" if namespace == GLOBAL else f"in namespace {namespace} or globally"
    how = f"set it with `offload secrets set {listed} {flag}`"
    if len(names) > 1:
        how = f"set each with `offload secrets set NAME {flag}`"
    return UnknownSecret(f"{what} not set {looked}; {how}")


@dataclass(frozen=True)
class SecretInfo:
    """What anyone may know of a secret: where it is, its name and when it changed."""

    namespace: str
    name: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> SecretInfo:
        """A secrets row (its value column unread)."""
        return cls(
            namespace=str(row["namespace"]),
            name=str(row["name"]),
            created_at=parse_time(row["created_at"]) or datetime.min,
            updated_at=parse_time(row["updated_at"]) or datetime.min,
        )


@dataclass(frozen=True)
class SecretAccess:
    """One use of a secret by a job."""

    id: int
    job_namespace: str
    job_queue: str
    job_id: int
    at: datetime

    @classmethod
    def from_row(cls, row: Row) -> SecretAccess:
        """A secret_access_log row."""
        return cls(
            id=int(row["id"]),
            job_namespace=str(row["job_namespace"]),
            job_queue=str(row["job_queue"]),
            job_id=int(row["job_id"]),
            at=parse_time(row["at"]) or datetime.min,
        )


def _sealed(namespace: str, name: str, value: str) -> bytes:
    # The row's place is encrypted with its value: a value moved to another row in the
    # database (another user's namespace) no longer opens there.
    return json.dumps(
        {"namespace": namespace, "name": name, "value": value}, separators=(",", ":")
    ).encode("utf-8")


class Secrets:
    """The secrets table and its access log."""

    def __init__(self, db: Database, cipher: Cipher, *, clock: Clock | None = None) -> None:
        self.db = db
        self.cipher = cipher
        self.clock = clock or SystemClock()

    async def set(self, namespace: str, name: str, value: str) -> None:
        """Create or replace a secret of `namespace` ('' for a global one)."""
        check_name(name)
        check_value(name, value)
        if len(namespace) > NAMESPACE_MAX:
            raise ValueError(f"a namespace has at most {NAMESPACE_MAX} characters")
        await self.db.fetch(
            "INSERT INTO secrets (namespace, name, value_encrypted, key_id, created_at,"
            " updated_at) VALUES (:namespace, :name, :value, :key_id, :now, :now)"
            " ON CONFLICT (namespace, name) DO UPDATE SET"
            " value_encrypted = excluded.value_encrypted, key_id = excluded.key_id,"
            " updated_at = excluded.updated_at",
            {
                "namespace": namespace,
                "name": name,
                "value": self.cipher.encrypt(_sealed(namespace, name, value)),
                "key_id": self.cipher.key_id,
                "now": self.clock.now(),
            },
        )

    async def names(self, namespace: str) -> list[SecretInfo]:
        """The secrets of `namespace` by name, never their values."""
        rows = await self.db.fetch(
            "SELECT namespace, name, created_at, updated_at FROM secrets"
            " WHERE namespace = :namespace ORDER BY name",
            {"namespace": namespace},
        )
        return [SecretInfo.from_row(r) for r in rows]

    async def info(self, namespace: str, name: str) -> SecretInfo | None:
        """One secret of `namespace`, never its value; None if it is not set."""
        rows = await self.db.fetch(
            "SELECT namespace, name, created_at, updated_at FROM secrets"
            " WHERE namespace = :namespace AND name = :name",
            {"namespace": namespace, "name": name},
        )
        return SecretInfo.from_row(rows[0]) if rows else None

    async def delete(self, namespace: str, name: str) -> bool:
        """Remove a secret and its access log; False when there was none."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(
                "DELETE FROM secrets WHERE namespace = :namespace AND name = :name RETURNING id",
                {"namespace": namespace, "name": name},
            )
            if rows:
                # SQLite may give a later secret this id again: it must not inherit the log.
                await tx.fetch(
                    "DELETE FROM secret_access_log WHERE secret_id = :id", {"id": rows[0]["id"]}
                )
        return bool(rows)

    async def _find(self, namespace: str, names: Sequence[str]) -> dict[str, Row]:
        """The row each name resolves to for a job of `namespace`; UnknownSecret otherwise."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return {}
        marks = {f"n{i}": n for i, n in enumerate(wanted)}
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM secrets WHERE namespace IN (:namespace, '')"
            f" AND name IN ({', '.join(':' + m for m in marks)})",
            {"namespace": namespace, **marks},
        )
        found: dict[str, Row] = {}
        for row in rows:
            # The job's own namespace wins over the global one.
            if row["name"] not in found or row["namespace"] == namespace:
                found[row["name"]] = row
        missing = [n for n in wanted if n not in found]
        if missing:
            raise _missing(missing, namespace)
        return found

    def _open(self, row: Row, cipher: Cipher | None = None) -> str:
        """The value of a secrets row; CipherError naming the secret if it does not open."""
        namespace, name = str(row["namespace"]), str(row["name"])
        if row["key_id"] == PLAINTEXT:
            return str(row["value_encrypted"])
        token, key_id = str(row["value_encrypted"]), str(row["key_id"])
        try:
            sealed = json.loads((cipher or self.cipher).decrypt(token, key_id))
        except CipherError as exc:
            raise CipherError(f"secret {name} ({where(namespace)}) cannot be read: {exc}") from exc
        if sealed.get("namespace") != namespace or sealed.get("name") != name:
            raise CipherError(
                f"secret {name} ({where(namespace)}) holds the value of another secret: "
                "it was moved in the database; set it again"
            )
        return str(sealed["value"])

    async def require(self, namespace: str, names: Sequence[str]) -> None:
        """UnknownSecret naming each of `names` a job of `namespace` could not read."""
        await self._find(namespace, names)

    async def values_for_job(
        self, namespace: str, names: Sequence[str], *, queue: str, job_id: int
    ) -> dict[str, str]:
        """The values a job of `namespace` gets for `names`, each use logged; UnknownSecret
        naming any not set there nor globally, CipherError for one that does not decrypt."""
        found = await self._find(namespace, names)
        values = {name: self._open(row) for name, row in found.items()}
        if found:
            now = self.clock.now()
            await self.db.executemany(
                "INSERT INTO secret_access_log (secret_id, secret_namespace, secret_name,"
                " job_namespace, job_queue, job_id, at) VALUES (:secret_id, :secret_namespace,"
                " :secret_name, :job_namespace, :job_queue, :job_id, :at)",
                [
                    {
                        "secret_id": row["id"],
                        "secret_namespace": row["namespace"],
                        "secret_name": row["name"],
                        "job_namespace": namespace,
                        "job_queue": queue,
                        "job_id": job_id,
                        "at": now,
                    }
                    for row in found.values()
                ],
            )
        return values

    async def values_for_keys(self, namespace: str, names: Sequence[str]) -> dict[str, str]:
        """The values a job of `namespace` would get, for the step cache keys to hash; they
        reach no job, so this is not logged."""
        found = await self._find(namespace, names)
        return {name: self._open(row) for name, row in found.items()}

    async def global_value(self, name: str) -> str:
        """A global secret's value, for the server's own use (a code host's token)."""
        found = await self._find(GLOBAL, [name])
        return self._open(found[name])

    async def accesses(
        self, namespace: str, name: str, *, limit: int = 100, before: int | None = None
    ) -> list[SecretAccess]:
        """The uses of a secret, newest first, before access id `before` (keyset pages);
        UnknownSecret if it is not set."""
        rows = await self.db.fetch(
            "SELECT id FROM secrets WHERE namespace = :namespace AND name = :name",
            {"namespace": namespace, "name": name},
        )
        if not rows:
            raise UnknownSecret(f"secret {name} is not set ({where(namespace)})")
        params: dict[str, Any] = {"id": rows[0]["id"], "limit": limit}
        older = ""
        if before is not None:
            older = " AND id < :before"
            params["before"] = before
        found = await self.db.fetch(
            "SELECT id, job_namespace, job_queue, job_id, at FROM secret_access_log"
            f" WHERE secret_id = :id{older} ORDER BY id DESC LIMIT :limit",
            params,
        )
        return [SecretAccess.from_row(r) for r in found]

    async def encrypt_plaintext(self) -> int:
        """Encrypt the rows migration 0010 kept in plain text (run when a server starts);
        how many there were."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM secrets WHERE key_id = :plain", {"plain": PLAINTEXT}
        )
        for row in rows:
            # Another server starting at once may have done it: only a plain row changes.
            await self.db.fetch(
                "UPDATE secrets SET value_encrypted = :value, key_id = :key_id"
                " WHERE id = :id AND key_id = :plain",
                {**self._resealed(self.cipher, row), "id": row["id"], "plain": PLAINTEXT},
            )
        return len(rows)

    async def rotate(self, cipher: Cipher) -> int:
        """Re-encrypt every secret under `cipher`'s key, all or none, reading each with
        `cipher` (its older keys); how many changed. CipherError naming one no key opens."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch(f"SELECT {_COLUMNS} FROM secrets ORDER BY id")
            changed = [r for r in rows if r["key_id"] != cipher.key_id]
            for row in changed:
                await tx.fetch(
                    "UPDATE secrets SET value_encrypted = :value, key_id = :key_id WHERE id = :id",
                    {**self._resealed(cipher, row), "id": row["id"]},
                )
        return len(changed)

    def _resealed(self, cipher: Cipher, row: Row) -> dict[str, str]:
        value = self._open(row, cipher)
        sealed = _sealed(str(row["namespace"]), str(row["name"]), value)
        return {"value": cipher.encrypt(sealed), "key_id": cipher.key_id}


async def expire_accesses(db: Database, before: datetime) -> int:
    """Delete access log entries from before `before` (the janitor's retention); how many."""
    rows = await db.fetch("DELETE FROM secret_access_log WHERE at < :t RETURNING id", {"t": before})
    return len(rows)
