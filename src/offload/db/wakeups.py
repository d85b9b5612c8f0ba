"""In-process wake-ups shared by both database backends."""

from __future__ import annotations

import asyncio
from collections import defaultdict


class LocalWaiter:
    """A waiter woken through its Hub, in this process."""

    def __init__(self, hub: Hub, channel: str) -> None:
        self._hub = hub
        self._channel = channel
        self._event = asyncio.Event()

    def wake(self) -> None:
        """Signal that work may have arrived."""
        self._event.set()

    def clear(self) -> None:
        """Forget wake-ups seen so far."""
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """Wait for a wake-up since the last clear(); False after `timeout` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Stop listening."""
        self._hub.remove(self._channel, self)


class Hub:
    """Fans wake-ups on a channel out to every waiter of this process."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[LocalWaiter]] = defaultdict(set)

    def waiter(self, channel: str) -> LocalWaiter:
        """A new waiter on `channel`."""
        waiter = LocalWaiter(self, channel)
        self._waiters[channel].add(waiter)
        return waiter

    def remove(self, channel: str, waiter: LocalWaiter) -> None:
        """Forget `waiter`."""
        self._waiters[channel].discard(waiter)

    def wake(self, channel: str) -> None:
        """Wake every waiter on `channel`."""
        for waiter in self._waiters.get(channel, ()):
            waiter.wake()

    def wake_all(self) -> None:
        """Wake every waiter (used when wake-ups from elsewhere may have been missed)."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.wake()

    def channels(self) -> list[str]:
        """Channels that have waiters."""
        return [channel for channel, waiters in self._waiters.items() if waiters]
