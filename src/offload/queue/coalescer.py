"""Group commit for the hot path: concurrent single calls written as one statement."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class Coalescer(Generic[K, R]):
    """Gathers items submitted by concurrent callers and writes them in batches.

    A caller that arrives while a batch is being written joins the next one, so under load
    many completions share one statement and one commit, while a lone caller waits for
    nothing but its own statement.
    """

    def __init__(
        self, write: Callable[[Sequence[K]], Awaitable[Mapping[K, R]]], *, max_batch: int = 500
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._pending: dict[K, asyncio.Future[R | None]] = {}
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: K) -> R | None:
        """Write `item` with whatever else is pending; its result, or None when it had none."""
        if item in self._pending:
            return await asyncio.shield(self._pending[item])
        future: asyncio.Future[R | None] = asyncio.get_running_loop().create_future()
        self._pending[item] = future
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        # Shielded: a caller that gives up must not take the write of the others down with it.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let callers of this same turn of the loop join the batch
        while self._pending:
            items = list(self._pending)[: self._max_batch]
            futures = [self._pending.pop(item) for item in items]
            try:
                results = await self._write(items)
            except BaseException as exc:
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for item, future in zip(items, futures, strict=True):
                if not future.done():
                    future.set_result(results.get(item))
