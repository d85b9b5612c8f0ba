"""Specs a worker process parsed, remembered by their text: code that still parses on the
event loop (a stored spec, once per process) finds them here instead of parsing again."""

from __future__ import annotations

import hashlib

from offload.batches.spec.model import BatchSpec

# Specs parsed by a worker, by their text's digest: code that still parses on the loop (a
# stored spec, once per process) finds them here. Few, as the store's own cache keeps few.
_REMEMBERED: dict[bytes, BatchSpec] = {}
_REMEMBER_AT_MOST = 64


def remember(text: str, spec: BatchSpec) -> None:
    """Keep `spec` as the parse of `text`, for recalled()."""
    key = _digest(text)
    _REMEMBERED.pop(key, None)
    _REMEMBERED[key] = spec
    while len(_REMEMBERED) > _REMEMBER_AT_MOST:
        del _REMEMBERED[next(iter(_REMEMBERED))]


def recalled(text: str) -> BatchSpec | None:
    """The spec a worker parsed from exactly `text`, if it is still remembered."""
    return _REMEMBERED.get(_digest(text)) if _REMEMBERED else None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
