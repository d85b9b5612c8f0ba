"""A consumer process for the crash and concurrency tests: `python consumer_process.py ...`.

It runs offload's real Consumer against the generic jobs queue and appends one line per
handled job to its record file: `<id> <holder> <start_ns> <end_ns>` (CLOCK_MONOTONIC, which
Linux shares between processes). With --hang the handler never finishes, to be killed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import socket
import time
import uuid
from datetime import timedelta
from pathlib import Path

from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.jobs.queue import spec as job_queue
from offload.queue.consumer import Consumer
from offload.queue.record import Record
from offload.queue.store import SqlQueueStore


class Recorder:
    """Records each job's start and end; hangs instead when told to."""

    def __init__(self, holder: str, path: Path, hang: bool) -> None:
        self.holder = holder
        self.file = path.open("a", buffering=1)
        self.hang = hang

    async def handle(self, record: Record) -> None:
        start = time.monotonic_ns()
        if self.hang:
            self.file.write(f"started {record.id} {self.holder}\n")
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        self.file.write(f"{record.id} {self.holder} {start} {time.monotonic_ns()}\n")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("records", type=Path)
    parser.add_argument("--slots", type=int, default=5)
    parser.add_argument("--hang", action="store_true")
    parser.add_argument("--stalled-after", type=float, default=25.0)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    args = parser.parse_args()
    holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    db = await open_database(DatabaseURL.parse(args.url), pool_size=args.slots + 2)
    spec = dataclasses.replace(job_queue(), stalled_after=timedelta(seconds=args.stalled_after))
    consumer = Consumer(
        SqlQueueStore(db, spec),
        Recorder(holder, args.records, args.hang),
        holder=holder,
        slots=args.slots,
        poll_wait=1.0,
        heartbeat_interval=args.heartbeat,
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, consumer.stop, 5.0)
    print(f"ready {holder}", flush=True)
    await consumer.run()
    await db.close()


if __name__ == "__main__":
    asyncio.run(main())
