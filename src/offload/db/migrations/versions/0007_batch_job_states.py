"""batch workspace jobs counted by spec and state; step cache entries by age

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 19:45:00.000000
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A spec's progress counts its jobs by state while tens of thousands of them run.
    op.create_index(
        "batch_workspace_jobs_spec_state_idx",
        "batch_workspace_jobs",
        ["batch_spec_id", "state"],
    )
    # batches.spec-expirer deletes the oldest step cache entries.
    op.create_index("batch_step_cache_created_idx", "batch_step_cache", ["created_at"])


def downgrade() -> None:
    op.drop_index("batch_step_cache_created_idx", table_name="batch_step_cache")
    op.drop_index("batch_workspace_jobs_spec_state_idx", table_name="batch_workspace_jobs")
