"""Column values as read back from either backend."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def decode_json(value: Any) -> Any:
    """A JSON column as read back from SQLite (text) or PostgreSQL (already decoded)."""
    if isinstance(value, str | bytes):
        return json.loads(value)
    return value


def parse_time(value: Any) -> datetime | None:
    """A timestamp column as read back from either backend, as timezone-aware UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
