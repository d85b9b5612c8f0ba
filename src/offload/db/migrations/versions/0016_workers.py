"""worker processes and the release each runs, for the site admin's versions table

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 12:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("jobs", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("git_version", sa.String(length=64), server_default="", nullable=False),
        sa.Column("os", sa.String(length=64), server_default="", nullable=False),
        sa.Column("architecture", sa.String(length=64), server_default="", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hostname", "jobs", name="workers_hostname_jobs_key"),
    )


def downgrade() -> None:
    op.drop_table("workers")
