"""What a test does when this machine lacks something: skip locally, fail on CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip, except on CI, where every runtime must really run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: these machines can run it, so it must not skip)")
    pytest.skip(reason)
