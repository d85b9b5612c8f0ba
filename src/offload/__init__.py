"""offload: run expensive, untrusted work on a fleet of sandboxed executors."""

from __future__ import annotations

import functools


@functools.cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("offload")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    # Looked up on first use: reading package metadata costs ~40 ms, which every host-side
    # step helper of a batch job would otherwise pay at start.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'offload' has no attribute {name!r}")
