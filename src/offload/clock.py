"""Time as the rest of offload sees it: injected, so tests need not sleep."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """A source of the current time."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return datetime.now(UTC)


class Sleeper(Protocol):
    """Something that waits."""

    async def __call__(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...


async def real_sleep(seconds: float) -> None:
    """Sleep on the event loop."""
    await asyncio.sleep(seconds)
