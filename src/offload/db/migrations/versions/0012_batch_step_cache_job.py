"""the workspace job that produced each step cache entry

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # `offload batch logs` of a workspace the cache answered shows the run that produced its
    # result. Entries written before this know no job: NULL, and the logs say so.
    with op.batch_alter_table("batch_step_cache") as batch:
        batch.add_column(sa.Column("job_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # Only the link to the producing run is lost; the cached results stay.
    with op.batch_alter_table("batch_step_cache") as batch:
        batch.drop_column("job_id")
