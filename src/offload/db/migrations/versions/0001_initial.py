"""initial schema: generic jobs and execution logs

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 07:56:48.408771
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_logs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("queue", sa.String(length=64), nullable=False),
        sa.Column("record_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column(
            "command",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("out", sa.Text(), server_default="", nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "execution_logs_record_idx", "execution_logs", ["queue", "record_id", "id"], unique=False
    )
    op.create_table(
        "jobs",
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
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "jobs_dequeue_idx",
        "jobs",
        ["queued_at", "id"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.create_index(
        "jobs_processing_idx",
        "jobs",
        ["last_heartbeat_at"],
        unique=False,
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.create_index("jobs_state_finished_idx", "jobs", ["state", "finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("jobs_state_finished_idx", table_name="jobs")
    op.drop_index(
        "jobs_processing_idx",
        table_name="jobs",
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.drop_index(
        "jobs_dequeue_idx",
        table_name="jobs",
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.drop_table("jobs")
    op.drop_index("execution_logs_record_idx", table_name="execution_logs")
    op.drop_table("execution_logs")
