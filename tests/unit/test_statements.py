"""The hot-path SQL: both dialects define the same statements, filled only from the spec."""

from __future__ import annotations

import pytest

from offload.db.postgres import compile_named
from offload.jobs.queue import spec as job_queue
from offload.queue.spec import QueueSpec
from offload.queue.statements import Statements, load


def test_both_dialects_define_the_same_statements() -> None:
    assert set(load("postgresql")) == set(load("sqlite"))
    assert {"enqueue", "dequeue", "heartbeat", "mark_complete", "reset_stalled"} <= set(
        load("sqlite")
    )


def test_statements_are_filled_from_the_spec_and_leave_no_placeholders() -> None:
    for dialect in ("postgresql", "sqlite"):
        statements = Statements(dialect, job_queue("gpu"))  # type: ignore[arg-type]
        for name in load(dialect):
            assert "{" not in statements[name].replace("{}", ""), (dialect, name)
        columns = "payload, namespace, submitted_by"
        assert (
            f"INSERT INTO jobs (state, queued_at, process_after, {columns}, queue)"
            in statements["enqueue"]
        )
        values = "VALUES ('queued', :now, :process_after, :payload, :namespace, :submitted_by"
        assert f"{values}, 'gpu')" in statements["enqueue"]
        # Every statement that picks rows by state, not by a lease, sees only its queue's rows.
        for name in ("dequeue", "reset_stalled", "fail_stalled", "counts", "oldest_queued"):
            assert "AND queue = 'gpu'" in statements[name], (dialect, name)
        unscoped = Statements(dialect, QueueSpec(name="q", table="t"))  # type: ignore[arg-type]
        assert "queue =" not in unscoped["dequeue"]


def test_named_parameters_become_positional_outside_casts() -> None:
    text, names = compile_named("SELECT :a, :b::bigint[], :a, '12:30' FROM t WHERE x = :c")
    assert text == "SELECT $1, $2::bigint[], $1, '12:30' FROM t WHERE x = $3"
    assert names == ("a", "b", "c")


@pytest.mark.parametrize(
    "changes",
    [
        {"table": "jobs; DROP TABLE jobs"},
        {"columns": ("payload)",)},
        {"name": "Has Spaces"},
        {"name": "q'--"},
        {"partition": "queue = queue OR 1"},
    ],
)
def test_specs_refuse_anything_but_identifiers(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        QueueSpec(**{"name": "q", "table": "jobs", **changes})  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_cap() -> None:
    from datetime import timedelta

    spec = QueueSpec(
        name="q", table="t", retry_backoff=timedelta(seconds=10), max_backoff=timedelta(seconds=60)
    )
    assert [spec.backoff(n).total_seconds() for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
