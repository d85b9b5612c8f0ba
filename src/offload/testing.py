"""Fakes shipped with offload for deterministic tests (never used by the product itself)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        """The current fake time."""
        return self._now

    def advance(self, delta: timedelta | float) -> None:
        """Move time forward by `delta` (seconds when a number)."""
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)


class RecordingSleep:
    """A sleep that returns at once and remembers how long it was asked to wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        """Record `seconds` and return."""
        self.delays.append(seconds)
