"""Database URLs: the one place that tells SQLite from PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

Dialect = Literal["sqlite", "postgresql"]

EXAMPLES = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE or sqlite:///PATH/TO/offload.db"


class DatabaseURLError(ValueError):
    """The database URL cannot be used; the message says why and what would work."""


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed database URL."""

    dialect: Dialect
    raw: str
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = ""
    database: str = ""
    path: Path | None = None

    @classmethod
    def parse(cls, raw: str, *, source: str = "OFFLOAD_DATABASE_URL") -> DatabaseURL:
        """Parse `raw`, raising DatabaseURLError that names `source` when it is malformed."""
        text = raw.strip()
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError as exc:
            raise DatabaseURLError(
                f"{source} is not a valid URL ({exc}); expected {EXAMPLES}"
            ) from exc
        scheme = parts.scheme.split("+", 1)[0]
        if scheme in ("postgresql", "postgres"):
            database = parts.path.lstrip("/")
            if not parts.hostname and "host" not in parse_qs(parts.query):
                raise DatabaseURLError(f"{source} has no host: {text!r}; expected {EXAMPLES}")
            if not database or "/" in database:
                raise DatabaseURLError(
                    f"{source} must name exactly one database after the host: {text!r}; "
                    f"expected {EXAMPLES}"
                )
            return cls(
                dialect="postgresql",
                raw=text,
                host=parts.hostname or "",
                port=port or 5432,
                user=unquote(parts.username or ""),
                password=unquote(parts.password or ""),
                database=unquote(database),
            )
        if scheme == "sqlite":
            # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them.
            if parts.netloc:
                raise DatabaseURLError(
                    f"{source} for SQLite takes three slashes and a path, not a host: {text!r}; "
                    f"expected {EXAMPLES}"
                )
            path = parts.path[1:] if parts.path.startswith("/") else parts.path
            if not path:
                raise DatabaseURLError(
                    f"{source} for SQLite names no file: {text!r}; expected {EXAMPLES}"
                )
            return cls(dialect="sqlite", raw=text, path=Path(unquote(path)))
        raise DatabaseURLError(
            f"{source} has unsupported scheme {parts.scheme or '(none)'!r} in {text!r}; "
            f"expected {EXAMPLES}"
        )

    @classmethod
    def for_sqlite(cls, path: Path) -> DatabaseURL:
        """The URL of the SQLite file at `path`."""
        return cls(dialect="sqlite", raw=f"sqlite:///{path}", path=path)

    def sqlalchemy_url(self) -> str:
        """The same database in SQLAlchemy's async spelling (used by migrations)."""
        if self.dialect == "sqlite":
            return f"sqlite+aiosqlite:///{self.path}"
        rest = self.raw.split("://", 1)[1]
        return f"postgresql+asyncpg://{rest}"

    def redacted(self) -> str:
        """The URL with its password replaced, fit for logs."""
        if self.password:
            return self.raw.replace(f":{self.password}@", ":***@", 1)
        return self.raw
