"""The repository registry: which repositories the server mirrors, from where, and how they fare."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from offload.clock import Clock, SystemClock
from offload.db.base import Database
from offload.db.values import parse_time

MAX_NAME = 255
# Each segment becomes a directory or file name (the last one with `.git` after it), which a
# filesystem holds to 255 bytes.
MAX_SEGMENT = 200
# A segment starts with a letter, digit or underscore: no `.`/`..`, no hidden directories
# (the mirror root keeps its own under `.`), no option-like `-x`.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# Mirrors live at <root>/<name>.git: a segment ending in .git would nest one repository's files
# inside another's mirror, and .lock is what git names its own lock files.
_RESERVED_SUFFIXES = (".git", ".lock")
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.*)$")
NAME_RULES = (
    "segments of letters, digits, '_', '.' and '-' separated by '/', each starting with a "
    "letter, digit or '_' and not ending in .git or .lock, at most 200 characters each and "
    "255 in all"
)


class RepoNameError(ValueError):
    """A repository name (or a source no name can be made from) that offload cannot use."""


class SourceError(ValueError):
    """A repository source that is neither a git URL nor a local path."""


class DuplicateRepo(ValueError):
    """A repository of that name is already registered."""


class UnknownRepo(LookupError):
    """No repository of that name is registered."""


def validate_name(name: str) -> str:
    """`name` if it is a valid repository name; RepoNameError saying what is wrong otherwise."""
    if not name or len(name) > MAX_NAME:
        raise RepoNameError(f"repository name {name!r} must be 1 to {MAX_NAME} characters long")
    for segment in name.split("/"):
        bad = not _SEGMENT.match(segment) or len(segment) > MAX_SEGMENT
        if bad or segment.endswith(_RESERVED_SUFFIXES):
            raise RepoNameError(
                f"repository name {name!r} is not valid at {segment!r}: use {NAME_RULES} "
                "(e.g. github.com/org/project)"
            )
    return name


def is_local_path(source: str) -> bool:
    """Whether git would read `source` as a local path (no scheme, no `host:path`)."""
    if "://" in source:
        return False
    colon, slash = source.find(":"), source.find("/")
    return colon < 0 or (0 <= slash < colon)


def normalize_source(source: str) -> str:
    """A URL as given, or a local path made absolute; SourceError when it cannot be one."""
    text = source.strip()
    if not text:
        raise SourceError("the repository source is empty: give a local path or a git URL")
    if text.startswith("-"):
        raise SourceError(f"repository source {text!r} looks like an option, not a path or URL")
    if "\n" in text or "\0" in text:
        raise SourceError(f"repository source {text!r} contains a newline or NUL")
    if is_local_path(text):
        return str(Path(text).expanduser().resolve())
    return text


def _sanitize(segment: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", segment).lstrip(".-")
    while cleaned.endswith(_RESERVED_SUFFIXES):
        cleaned = cleaned.rsplit(".", 1)[0]
    return cleaned


def default_name(source: str) -> str:
    """The name a source gets when none is given: `host/path` for URLs, the dir name for paths.

    `https://github.com/org/project.git` and `git@github.com:org/project` both give
    `github.com/org/project`; `/srv/git/project.git` and `file:///srv/git/project` give `project`.
    """
    text = source.strip()
    scp = None if is_local_path(text) or "://" in text else _SCP_LIKE.match(text)
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme == "file":
            segments = [_last_dir(parts.path)]
        else:
            segments = [(parts.hostname or "").lower(), *parts.path.split("/")]
    elif scp is not None:
        segments = [scp.group("host").lower(), *scp.group("path").split("/")]
    else:
        segments = [_last_dir(str(Path(text).expanduser().resolve()))]
    cleaned = [s for s in (_sanitize(seg) for seg in segments if seg) if s]
    if not cleaned:
        raise RepoNameError(f"cannot make a repository name from {source!r}: pass --name NAME")
    return validate_name("/".join(cleaned)[:MAX_NAME].rstrip("/"))


def _last_dir(path: str) -> str:
    """The directory name a local repository is known by (`x` for `x`, `x.git` and `x/.git`)."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[-1] == ".git":
        parts.pop()
    return parts[-1] if parts else ""


def redact_source(source: str) -> str:
    """`source` fit for display and logs: no password, and no user name on http(s) (a token)."""
    if "://" not in source:
        return source
    parts = urlsplit(source)
    if "@" not in parts.netloc:
        return source
    userinfo, host = parts.netloc.rsplit("@", 1)
    if parts.scheme in ("http", "https"):
        userinfo = "***"
    elif ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return parts._replace(netloc=f"{userinfo}@{host}").geturl()


@dataclass(frozen=True)
class Repo:
    """One registered repository and the outcome of its latest sync."""

    id: int
    name: str
    source: str
    created_at: datetime
    default_branch: str | None
    head_commit: str | None
    last_attempt_at: datetime | None
    last_synced_at: datetime | None
    last_error: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Repo:
        """Build from a row of the repos table, decoding the backend's types."""
        created_at = parse_time(row["created_at"])
        assert created_at is not None
        return cls(
            id=int(row["id"]),
            name=str(row["name"]),
            source=str(row["source"]),
            created_at=created_at,
            default_branch=row["default_branch"],
            head_commit=row["head_commit"],
            last_attempt_at=parse_time(row["last_attempt_at"]),
            last_synced_at=parse_time(row["last_synced_at"]),
            last_error=row["last_error"],
        )

    @property
    def display_source(self) -> str:
        """The source without credentials."""
        return redact_source(self.source)


class RepoRegistry:
    """The `repos` table: add, list, get, remove, and the results of syncs."""

    def __init__(self, db: Database, *, clock: Clock | None = None) -> None:
        self.db = db
        self.clock = clock or SystemClock()

    async def add(self, source: str, *, name: str | None = None) -> Repo:
        """Register `source` under `name` (or its default name); DuplicateRepo if taken."""
        normalized = normalize_source(source)
        chosen = validate_name(name) if name is not None else default_name(normalized)
        rows = await self.db.fetch(
            "INSERT INTO repos (name, source, created_at) VALUES (:name, :source, :now) "
            "ON CONFLICT (name) DO NOTHING RETURNING *",
            {"name": chosen, "source": normalized, "now": self.clock.now()},
        )
        if not rows:
            raise DuplicateRepo(
                f"a repository named {chosen!r} is already registered; "
                "pass --name to register this source under another name"
            )
        return Repo.from_row(rows[0])

    async def list(self) -> list[Repo]:
        """Every repository, by name."""
        rows = await self.db.fetch("SELECT * FROM repos ORDER BY name")
        return [Repo.from_row(row) for row in rows]

    async def page(self, *, after: str = "", contains: str = "", limit: int) -> Sequence[Repo]:
        """Repositories by name after `after` (a keyset page), whose name holds `contains`
        in any case."""
        sql = "SELECT * FROM repos WHERE name > :after"
        params: dict[str, Any] = {"after": after, "limit": limit}
        if contains:
            # LIKE's own characters in the text match themselves.
            escaped = re.sub(r"([\\%_])", r"\\\1", contains.lower())
            sql += " AND LOWER(name) LIKE :pattern ESCAPE '\\'"
            params["pattern"] = f"%{escaped}%"
        rows = await self.db.fetch(sql + " ORDER BY name LIMIT :limit", params)
        return [Repo.from_row(row) for row in rows]

    async def get(self, name: str) -> Repo | None:
        """The repository called `name`, if any."""
        rows = await self.db.fetch("SELECT * FROM repos WHERE name = :name", {"name": name})
        return Repo.from_row(rows[0]) if rows else None

    async def require(self, name: str) -> Repo:
        """The repository called `name`; UnknownRepo saying how to find the right one."""
        repo = await self.get(name)
        if repo is None:
            raise UnknownRepo(
                f"no repository named {name!r} is registered; see `offload repos list`"
            )
        return repo

    async def remove(self, name: str) -> bool:
        """Forget the repository called `name`; False when there was none."""
        rows = await self.db.fetch(
            "DELETE FROM repos WHERE name = :name RETURNING id", {"name": name}
        )
        return bool(rows)

    async def record_success(
        self, name: str, *, default_branch: str | None, head_commit: str | None
    ) -> Repo | None:
        """Note a successful sync (clearing the last error); None if the repo was removed."""
        rows = await self.db.fetch(
            "UPDATE repos SET default_branch = :branch, head_commit = :head, "
            "last_attempt_at = :now, last_synced_at = :now, last_error = NULL "
            "WHERE name = :name RETURNING *",
            {"name": name, "branch": default_branch, "head": head_commit, "now": self.clock.now()},
        )
        return Repo.from_row(rows[0]) if rows else None

    async def record_failure(self, name: str, error: str) -> Repo | None:
        """Note a failed sync and why; None if the repo was removed."""
        rows = await self.db.fetch(
            "UPDATE repos SET last_attempt_at = :now, last_error = :error "
            "WHERE name = :name RETURNING *",
            {"name": name, "error": error, "now": self.clock.now()},
        )
        return Repo.from_row(rows[0]) if rows else None


__all__ = [
    "DuplicateRepo",
    "Repo",
    "RepoNameError",
    "RepoRegistry",
    "SourceError",
    "UnknownRepo",
    "default_name",
    "normalize_source",
    "redact_source",
    "validate_name",
]
