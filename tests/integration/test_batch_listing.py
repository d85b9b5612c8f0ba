"""A batch change's summary (burndown and status counts) for its page: counted on every view
while counting is cheap; kept a few seconds once counting takes long, so that a batch change
of tens of thousands of changesets does not cost each viewer a full count. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from batch_seed import finished_spec

from offload.batches.listing import BatchListing
from offload.batches.service import BatchService
from offload.db.base import Database


async def merge_one(db: Database, change_id: int) -> None:
    """What the syncer stores when a pull request was merged (the burndown's times too)."""
    now = datetime.now(UTC)
    await db.fetch(
        "UPDATE changesets SET state = 'completed', external_state = 'merged', "
        "published_at = :now, merged_at = :now WHERE id = "
        "(SELECT MIN(id) FROM changesets WHERE batch_change_id = :b)",
        {"now": now, "b": change_id},
    )


async def test_a_cheap_summary_is_counted_on_every_view_a_costly_one_is_kept(
    db: Database,
) -> None:
    seeded = await finished_spec(db, "olive", "summary", done=3, failed=0)
    service = BatchService(db)
    applied = await service.apply(seeded.spec.rand_id)
    change_id = int(applied["id"])
    since = datetime.now(UTC) - timedelta(hours=1)

    fresh = BatchListing(service)
    first = await fresh.summary(change_id, since)
    assert first.counts == {"processing": 3} and not first.kept
    assert first.burndown.series["total"][-1] == 3
    assert first.burndown.series["total"][0] == 0  # none existed an hour ago
    await merge_one(db, change_id)
    second = await fresh.summary(change_id, since)
    assert not second.kept and second.counts == {"merged": 1, "processing": 2}
    assert second.burndown.series["merged"][-1] == 1

    # Counting "took long" (every count, here): the next view shows the kept one.
    kept = BatchListing(service, summaries_cached_from=0.0)
    counted = await kept.summary(change_id, since)
    await merge_one(db, change_id)  # the same one again: nothing changes
    await db.fetch(
        "UPDATE changesets SET detached = true WHERE id = "
        "(SELECT MAX(id) FROM changesets WHERE batch_change_id = :b)",
        {"b": change_id},
    )
    again = await kept.summary(change_id, since)
    assert again.kept and again.counts == counted.counts
    assert again.counted_at == counted.counted_at
    assert (await fresh.summary(change_id, since)).counts == {
        "merged": 1,
        "processing": 1,
        "detached": 1,
    }
