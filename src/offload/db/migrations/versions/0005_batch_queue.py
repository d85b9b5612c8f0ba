"""batch workspace execution jobs, ordered fairly between users

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 13:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TABLE = "batch_workspace_jobs"
_WAITING = sa.text("state IN ('queued', 'errored')")
_PROCESSING = sa.text("state = 'processing'")


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("state", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("process_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("num_resets", sa.Integer(), server_default="0", nullable=False),
        sa.Column("num_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("worker_hostname", sa.Text(), nullable=True),
        sa.Column("cancel", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("batch_spec_id", sa.BigInteger(), nullable=False),
        sa.Column("workspace_id", sa.BigInteger(), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("fair_key", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        f"{_TABLE}_dequeue_idx",
        _TABLE,
        ["queued_at", "id"],
        postgresql_where=_WAITING,
        sqlite_where=_WAITING,
    )
    op.create_index(
        f"{_TABLE}_processing_idx",
        _TABLE,
        ["last_heartbeat_at"],
        postgresql_where=_PROCESSING,
        sqlite_where=_PROCESSING,
    )
    op.create_index(f"{_TABLE}_state_finished_idx", _TABLE, ["state", "finished_at"])
    op.create_index(
        f"{_TABLE}_fair_idx",
        _TABLE,
        ["fair_key", "id"],
        postgresql_where=_WAITING,
        sqlite_where=_WAITING,
    )
    op.create_table(
        "batch_queue_users",
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("last_key", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_name"),
    )


def downgrade() -> None:
    op.drop_table("batch_queue_users")
    for name in ("fair_idx", "state_finished_idx", "processing_idx", "dequeue_idx"):
        op.drop_index(f"{_TABLE}_{name}", table_name=_TABLE)
    op.drop_table(_TABLE)
