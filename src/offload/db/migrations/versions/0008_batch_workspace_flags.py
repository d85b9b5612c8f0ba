"""batch workspaces counted by spec and flags

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 22:40:00.000000
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A spec's progress counts its workspaces by flag from the index alone, polled while
    # tens of thousands of them run.
    op.create_index(
        "batch_workspaces_spec_flags_idx",
        "batch_workspaces",
        ["batch_spec_id", "ignored", "skipped", "cached_result_found"],
    )


def downgrade() -> None:
    op.drop_index("batch_workspaces_spec_flags_idx", table_name="batch_workspaces")
