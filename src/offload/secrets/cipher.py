"""The key secrets are encrypted with at rest: Fernet (AES-128-CBC and HMAC-SHA256) tokens.

Each stored value carries the id of the key that encrypted it (a fingerprint, never the key),
so a value whose key is missing says which key to bring back. The key comes from
OFFLOAD_ENCRYPTION_KEY or OFFLOAD_ENCRYPTION_KEY_FILE; with neither, offload makes
`encryption.key` in its data dir on first start, readable by its owner only. A key file holds
the key on its first line; further lines are older keys, accepted for reading (the state a
rotation of the default key file passes through). OFFLOAD_ENCRYPTION_OLD_KEYS adds more.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from offload.config import Settings

KEY_FILE = "encryption.key"
# The key id of rows migration 0010 kept in plain text until a server encrypts them.
PLAINTEXT = "plaintext"
_MAKE_ONE = "make one with `openssl rand -base64 32 | tr '+/' '-_'`"


class KeySettingError(ValueError):
    """A key setting (or the file it names) is malformed; the message names the setting."""


class CipherError(ValueError):
    """A stored value cannot be decrypted: its key is not configured, or it was altered."""


def key_id(key: bytes) -> str:
    """A short fingerprint naming `key` (safe to store and show: it reveals nothing of it)."""
    return hashlib.sha256(b"offload-secrets-key:" + key).hexdigest()[:16]


def new_key() -> bytes:
    """A fresh random key."""
    return Fernet.generate_key()


def parse_key(text: str, where: str) -> bytes:
    """The key written in `text`; KeySettingError naming `where` (never echoing the text)."""
    key = text.strip().encode()
    try:
        Fernet(key)
    except ValueError:
        raise KeySettingError(
            f"{where} is not an encryption key: it must be 32 random bytes in url-safe "
            f"base64 (44 characters); {_MAKE_ONE}"
        ) from None
    return key


def read_key_file(path: Path, where: str) -> list[bytes]:
    """The keys of a key file, its key first; KeySettingError naming `where` if unusable."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise KeySettingError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise KeySettingError(f"{where}: {path} is empty; put a key in it ({_MAKE_ONE})")
    return [parse_key(line, f"{where} ({path}, line {n})") for n, line in enumerate(lines, 1)]


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replace `path` with `keys` (the key first), atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    _write_private(temporary, keys)
    try:
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    _sync_dir(path.parent)


def default_key_file(data_dir: Path, *, create: bool) -> list[bytes] | None:
    """The keys of `<data_dir>/encryption.key`, made now if missing and `create` (else None)."""
    path = data_dir / KEY_FILE
    where = f"the key file offload made ({path}; OFFLOAD_ENCRYPTION_KEY_FILE is unset)"
    if path.exists() or not create:
        return read_key_file(path, where) if path.exists() else None
    data_dir.mkdir(parents=True, exist_ok=True)
    key = new_key()
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    _write_private(temporary, [key])
    try:
        # A hard link fails if the file exists: a server and a worker starting together
        # both end up with the one key whichever made it first, never half of one.
        os.link(temporary, path)
    except FileExistsError:
        pass
    except OSError:
        # A file system without hard links: O_EXCL still lets only one of them make it.
        with contextlib.suppress(FileExistsError):
            _write_private(path, [key])
    finally:
        temporary.unlink()
    _sync_dir(data_dir)
    return read_key_file(path, where)


def _write_private(path: Path, keys: Sequence[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(b"".join(k + b"\n" for k in keys))
        out.flush()
        os.fsync(out.fileno())


def _sync_dir(path: Path) -> None:
    # The new name must survive a crash too, not only the file's content.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def configured_keys(settings: Settings, *, create: bool = True) -> list[bytes] | None:
    """The keys of the settings, the one to encrypt with first; None if the default key file
    does not exist and `create` is false. KeySettingError naming a malformed setting."""
    old = [
        parse_key(part, f"OFFLOAD_ENCRYPTION_OLD_KEYS (key {n})")
        for n, part in enumerate(_split(settings.encryption_old_keys), 1)
    ]
    if settings.encryption_key is not None and settings.encryption_key_file is not None:
        raise KeySettingError(
            "set one of OFFLOAD_ENCRYPTION_KEY and OFFLOAD_ENCRYPTION_KEY_FILE, not both"
        )
    if settings.encryption_key is not None:
        keys = [parse_key(settings.encryption_key.get_secret_value(), "OFFLOAD_ENCRYPTION_KEY")]
    elif settings.encryption_key_file is not None:
        keys = read_key_file(settings.encryption_key_file, "OFFLOAD_ENCRYPTION_KEY_FILE")
    else:
        found = default_key_file(settings.data_dir, create=create)
        if found is None:
            return None
        keys = found
    return list(dict.fromkeys([*keys, *old]))


def check_key_settings(settings: Settings) -> None:
    """KeySettingError if a key setting, or a key file that exists, is malformed; makes
    nothing (for commands that check settings before they start)."""
    configured_keys(settings, create=False)


def _split(value: SecretStr | None) -> list[str]:
    if value is None:
        return []
    return [part for part in (p.strip() for p in value.get_secret_value().split(",")) if part]


class Cipher:
    """Encrypts under one key; decrypts under it or any older key it was given."""

    def __init__(self, key: bytes, old_keys: Sequence[bytes] = ()) -> None:
        self.key_id = key_id(key)
        self._keys = {key_id(k): k for k in (key, *old_keys)}
        self._fernets = {kid: Fernet(k) for kid, k in self._keys.items()}

    @classmethod
    def from_settings(cls, settings: Settings) -> Cipher:
        """The cipher of the settings (making the default key file if needed);
        KeySettingError naming a malformed setting."""
        keys = configured_keys(settings, create=True)
        if not keys:
            raise KeySettingError(f"no encryption key in {settings.data_dir / KEY_FILE}")
        return cls(keys[0], keys[1:])

    @property
    def keys(self) -> list[bytes]:
        """Every key, the one it encrypts with first (for writing a key file)."""
        return list(self._keys.values())

    def key_ids(self) -> list[str]:
        """The ids of every key it holds, the one it encrypts with first."""
        return list(self._keys)

    def encrypt(self, plaintext: bytes) -> str:
        """A token of `plaintext` under the primary key (whose id is `self.key_id`)."""
        return self._fernets[self.key_id].encrypt(plaintext).decode("ascii")

    def decrypt(self, token: str, key_id: str) -> bytes:
        """The plaintext of a token made under key `key_id`; CipherError if that key is not
        configured or the token was altered."""
        fernet = self._fernets.get(key_id)
        if fernet is None:
            raise CipherError(
                f"it was encrypted with key {key_id}, which this server does not have "
                f"(its keys: {', '.join(self._keys)}); add that key to "
                "OFFLOAD_ENCRYPTION_OLD_KEYS"
            )
        try:
            return fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise CipherError(
                f"its stored value does not decrypt under key {key_id}: it was altered"
            ) from None
