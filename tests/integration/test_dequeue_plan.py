"""SQLite's dequeue reads each queue's ordering index and never sorts the waiting rows.

Without statistics SQLite's planner prefers the state index for `state IN (...)` and then sorts
every waiting row at each dequeue: 50 ms per job with 45,000 batch workspaces waiting, which
halved a large batch change's throughput. The plan is the behaviour, so it is what is checked.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from offload.config import Settings
from offload.queue.statements import Statements
from offload.queues import record_queues

QUEUES = record_queues(Settings(job_queues=["default", "gpu"]))


@pytest.mark.parametrize("name", sorted(QUEUES))
def test_dequeue_walks_the_queues_own_index_in_order(name: str, sqlite_template: Path) -> None:
    spec = QUEUES[name]
    statement = Statements("sqlite", spec)["dequeue"]
    params = {"now": "2026-01-01T00:00:00", "holder": "executor-1", "limit": 1}
    sql = re.sub(r":(\w+)", lambda m: repr(params[m.group(1)]), statement)
    with sqlite3.connect(sqlite_template) as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    assert any(spec.dequeue_index_name in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
