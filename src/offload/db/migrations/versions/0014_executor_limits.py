"""what each executor's jobs may use, and which jobs it runs, for the executors page

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 22:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    # Both come with each heartbeat. Executors that predate the limits field, and rows
    # written before this, know neither: NULL, and the page says "not reported".
    with op.batch_alter_table("executors") as batch:
        batch.add_column(sa.Column("job_limits", JSON, nullable=True))
        batch.add_column(sa.Column("running_jobs", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("executors") as batch:
        batch.drop_column("running_jobs")
        batch.drop_column("job_limits")
