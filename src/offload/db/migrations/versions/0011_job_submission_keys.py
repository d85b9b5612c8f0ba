"""idempotency keys of job submissions

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-18 09:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "job_submission_keys",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("submitted_by", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("job_id", sa.BigInteger()),
        sa.Column("created_at", TIME, nullable=False),
        sa.UniqueConstraint("submitted_by", "key", name="job_submission_keys_user_key"),
    )
    op.create_index("job_submission_keys_created_idx", "job_submission_keys", ["created_at"])


def downgrade() -> None:
    # Only retry protection is lost: a submission retried after this is made again.
    op.drop_index("job_submission_keys_created_idx", table_name="job_submission_keys")
    op.drop_table("job_submission_keys")
