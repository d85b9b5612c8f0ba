"""the step cache key of the result each workspace's changeset specs come from

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 19:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A spec submitted again unchanged copies the changeset specs of workspaces whose result is
    # the same (same key) instead of rendering them again. Older workspaces know no key: NULL,
    # and theirs are rendered as before.
    with op.batch_alter_table("batch_workspaces") as batch:
        batch.add_column(sa.Column("result_key", sa.Text(), nullable=True))
    op.create_index(
        "batch_workspaces_result_idx", "batch_workspaces", ["batch_spec_id", "result_key"]
    )


def downgrade() -> None:
    op.drop_index("batch_workspaces_result_idx", table_name="batch_workspaces")
    with op.batch_alter_table("batch_workspaces") as batch:
        batch.drop_column("result_key")
