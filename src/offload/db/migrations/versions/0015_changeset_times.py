"""when each changeset was created, published, merged and closed, for the burndown chart

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 00:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # A burndown counts, at each moment, the changesets created, open, merged and closed by
    # then: four times per changeset, not a history table, so that the chart of tens of
    # thousands of changesets is one aggregate. Rows from before know none: NULL, and the
    # chart counts them from their last update.
    with op.batch_alter_table("changesets") as batch:
        batch.add_column(sa.Column("created_at", TIME, nullable=True))
        batch.add_column(sa.Column("published_at", TIME, nullable=True))
        batch.add_column(sa.Column("merged_at", TIME, nullable=True))
        batch.add_column(sa.Column("closed_at", TIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("changesets") as batch:
        for column in ("closed_at", "merged_at", "published_at", "created_at"):
            batch.drop_column(column)
