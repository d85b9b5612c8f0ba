"""The shared executor token: generated on first start, shown by `offload executors token`."""

from __future__ import annotations

import hmac
import secrets

from offload.db.base import Database
from offload.db.site_config import set_setting, setting_once

KEY = "executors.access_token"


def new_token() -> str:
    """A new random executor token."""
    return secrets.token_hex(24)


async def executor_token(db: Database) -> str:
    """The executor token, generated (and stored) the first time it is asked for."""
    return await setting_once(db, KEY, new_token)


async def set_executor_token(db: Database, value: str) -> None:
    """Replace the executor token (executors with the old one are refused from then on)."""
    if len(value) < 16:
        raise ValueError("an executor token needs at least 16 characters")
    await set_setting(db, KEY, value)


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison of tokens."""
    return hmac.compare_digest(given.encode(), expected.encode())
