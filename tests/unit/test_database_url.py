"""Database URLs: what users write in OFFLOAD_DATABASE_URL, and what they are told when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from offload.db.url import DatabaseURL, DatabaseURLError


def test_postgres_urls_parse() -> None:
    url = DatabaseURL.parse("postgresql://offload:s3cret@db.internal:6543/prod")
    assert (url.dialect, url.host, url.port, url.user, url.database) == (
        "postgresql",
        "db.internal",
        6543,
        "offload",
        "prod",
    )
    assert url.redacted() == "postgresql://offload:***@db.internal:6543/prod"
    assert DatabaseURL.parse("postgres://u@h/d").port == 5432


def test_sqlite_urls_parse_relative_and_absolute() -> None:
    assert DatabaseURL.parse("sqlite:///data/offload.db").path == Path("data/offload.db")
    assert DatabaseURL.parse("sqlite:////srv/offload.db").path == Path("/srv/offload.db")
    assert DatabaseURL.for_sqlite(Path("/x/y.db")).sqlalchemy_url() == "sqlite+aiosqlite:////x/y.db"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("mysql://u@h/d", "unsupported scheme 'mysql'"),
        ("postgres//nohost", "unsupported scheme '(none)'"),
        ("postgresql://u@h", "must name exactly one database"),
        ("postgresql:///d", "has no host"),
        ("postgresql://u@h:99999/d", "not a valid URL"),
        ("sqlite://host/x.db", "not a host"),
        ("sqlite://", "names no file"),
    ],
)
def test_malformed_urls_say_what_and_where(raw: str, says: str) -> None:
    with pytest.raises(DatabaseURLError) as caught:
        DatabaseURL.parse(raw)
    message = str(caught.value)
    assert says in message
    assert message.startswith("OFFLOAD_DATABASE_URL")
    assert "expected postgresql://" in message
