"""Password hashes (argon2id), computed off the event loop: each costs tens of milliseconds."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
MIN_LENGTH = 12
MAX_LENGTH = 1024


class WeakPassword(ValueError):
    """A password too short or too long; the message says the bounds."""


def check(password: str) -> str:
    """`password` if its length is within bounds; WeakPassword otherwise."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise WeakPassword(f"a password needs {MIN_LENGTH} to {MAX_LENGTH} characters")
    return password


def generate() -> str:
    """A random password for a user created without one (shown once)."""
    return secrets.token_urlsafe(18)


async def hash_password(password: str) -> str:
    """The argon2id hash of `password`."""
    return await asyncio.to_thread(_HASHER.hash, check(password))


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


# Verifying against this hash when the user is unknown keeps a sign-in's time from telling
# which usernames exist.
_DUMMY = _HASHER.hash(secrets.token_hex(8))


async def verify(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored` (None: no password set, always False)."""
    if len(password) > MAX_LENGTH:
        return False
    ok = await asyncio.to_thread(_verify, stored or _DUMMY, password)
    return ok and stored is not None
