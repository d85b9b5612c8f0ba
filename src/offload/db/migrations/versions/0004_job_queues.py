"""generic jobs in named queues

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_WAITING = "state IN ('queued', 'errored')"
_PROCESSING = "state = 'processing'"


def _indexes(lead: list[str]) -> None:
    op.create_index(
        "jobs_dequeue_idx",
        "jobs",
        [*lead, "queued_at", "id"],
        postgresql_where=sa.text(_WAITING),
        sqlite_where=sa.text(_WAITING),
    )
    op.create_index(
        "jobs_processing_idx",
        "jobs",
        [*lead, "last_heartbeat_at"],
        postgresql_where=sa.text(_PROCESSING),
        sqlite_where=sa.text(_PROCESSING),
    )
    op.create_index("jobs_state_finished_idx", "jobs", [*lead, "state", "finished_at"])


def _drop_indexes() -> None:
    for name in ("jobs_dequeue_idx", "jobs_processing_idx", "jobs_state_finished_idx"):
        op.drop_index(name, table_name="jobs")


def upgrade() -> None:
    # Existing jobs were all in the one generic queue there was.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("queue", sa.String(length=64), server_default="default", nullable=False)
        )
    _drop_indexes()
    _indexes(["queue"])


def downgrade() -> None:
    _drop_indexes()
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("queue")
    _indexes([])
