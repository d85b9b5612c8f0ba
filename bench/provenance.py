"""Where a benchmark's result comes from: package and tool versions, offload's commit and source.

Every result records these beside its figures ("machine" in the JSON), so that two results can
be told apart by the code that produced them, not only by their date: the commit says which
revision ran, and the source digest tells apart uncommitted edits made on top of it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def package_version(name: str) -> str | None:
    """The installed version of `name`, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_digest() -> str:
    """A digest of offload's installed source (SQL included), to tell apart uncommitted edits."""
    import offload

    root = Path(offload.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".sql") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def git_commit() -> str | None:
    """The commit of the checkout this runs from, with '+dirty' when it has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def tool_version(*argv: str) -> str | None:
    """The first line `argv` prints, or None."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else None


def software(packages: Iterable[str]) -> dict[str, Any]:
    """The versions of `packages`, offload's commit and its source digest, as results key them."""
    return {
        "packages": {name: package_version(name) for name in packages},
        "offload_commit": git_commit(),
        "offload_source_sha256": source_digest(),
    }
