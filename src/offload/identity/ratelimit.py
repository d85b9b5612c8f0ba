"""Failed sign-ins per username and per address, in a sliding window, to slow guessing."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class SignInLimiter:
    """At most `limit` failed sign-ins per key in `window` seconds; then refusals until the
    oldest failure leaves the window. Kept in the server's memory: each server counts its own."""

    def __init__(
        self,
        limit: int = 5,
        window: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float]:
        now = self.clock()
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, *keys: str) -> float:
        """Seconds until a sign-in under `keys` may be tried again (0: now)."""
        waits = [
            recent[0] + self.window - self.clock()
            for key in keys
            if len(recent := self._recent(key)) >= self.limit
        ]
        return max(waits, default=0.0)

    def failed(self, *keys: str) -> None:
        """Count a failed sign-in under each of `keys`."""
        for key in keys:
            self._failures.setdefault(key, deque()).append(self.clock())
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            # Many addresses at once: forget the longest quiet rather than grow without bound.
            self._failures.popitem(last=False)
