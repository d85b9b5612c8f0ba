"""batch specs that run on the user's own machine (`offload batch preview --local`)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 22:50:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The resolver queues no workspace of such a spec: the user's CLI claims them itself.
    with op.batch_alter_table("batch_specs") as batch:
        batch.add_column(
            sa.Column("runs_locally", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("batch_specs") as batch:
        batch.drop_column("runs_locally")
