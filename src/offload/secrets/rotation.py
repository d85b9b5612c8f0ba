"""Key rotation: every secret re-encrypted under a new key, all rows or none.

With OFFLOAD_ENCRYPTION_KEY or OFFLOAD_ENCRYPTION_KEY_FILE the site admin brings the new key
(and names the old one in OFFLOAD_ENCRYPTION_OLD_KEYS); with neither, offload makes the new
key and replaces its key file. That file holds both keys, the new one first, while the rows
change, so a crash at any point leaves every secret readable; afterwards it holds the new key
only, and no copy of the old one is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from offload.config import Settings
from offload.db.base import Database
from offload.secrets.cipher import KEY_FILE, Cipher, new_key, write_key_file
from offload.secrets.store import Secrets


@dataclass(frozen=True)
class Rotation:
    """What a rotation did."""

    key_id: str
    # Rows re-encrypted (those already under the key are left as they are).
    rows: int
    # The key file offload replaced; None when the key came from the settings.
    key_file: Path | None


def keeps_own_key(settings: Settings) -> bool:
    """Whether offload keeps the key in its data dir (neither key setting is set)."""
    return settings.encryption_key is None and settings.encryption_key_file is None


async def rotate_key(db: Database, settings: Settings) -> Rotation:
    """Re-encrypt every secret under the settings' key, or under a new key in offload's own
    key file; CipherError naming a secret none of the keys opens (nothing changes then)."""
    current = Cipher.from_settings(settings)
    if not keeps_own_key(settings):
        rows = await Secrets(db, current).rotate(current)
        return Rotation(current.key_id, rows, None)
    path = settings.data_dir / KEY_FILE
    rotated = Cipher(new_key(), current.keys)
    write_key_file(path, rotated.keys)
    # Should this fail, the file keeps both keys: whether or not the rows changed (a commit
    # cut short cannot tell), each stays readable.
    rows = await Secrets(db, rotated).rotate(rotated)
    write_key_file(path, rotated.keys[:1])
    return Rotation(rotated.key_id, rows, path)
