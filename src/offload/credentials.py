"""The CLI's sign-in: the server's URL and an access token, in a file only its owner can read."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

FILE = "credentials.json"


def path() -> Path:
    """Where `offload login` keeps the sign-in (the user's config directory)."""
    return Path(platformdirs.user_config_dir("offload")) / FILE


@dataclass(frozen=True)
class Credentials:
    """A server and the token to call it with."""

    url: str
    token: str


def load() -> Credentials | None:
    """The stored sign-in, or None (none stored, or unreadable)."""
    try:
        data = json.loads(path().read_text())
        return Credentials(str(data["url"]), str(data["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(credentials: Credentials) -> Path:
    """Store the sign-in with mode 0600 (its directory 0700); the file's path."""
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    # Created 0600 from the start: the token is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"url": credentials.url, "token": credentials.token}, out)
    os.replace(tmp, target)
    return target


def forget() -> bool:
    """Remove the stored sign-in; False if there was none."""
    try:
        path().unlink()
    except FileNotFoundError:
        return False
    return True
