"""users, organizations, access tokens, sessions, queue grants, audit log; namespaced secrets

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 12:10:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def _id() -> sa.Column[int]:
    return sa.Column("id", ID, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "users",
        _id(),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.Text(), nullable=False, server_default=""),
        sa.Column("email", sa.Text(), nullable=False, server_default=""),
        sa.Column("site_admin", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("disabled_at", TIME),
        sa.Column("password_hash", sa.Text()),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "organizations",
        _id(),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_table(
        "organization_members",
        _id(),
        sa.Column("org_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False, server_default="member"),
        sa.Column("created_at", TIME, nullable=False),
        sa.UniqueConstraint("org_id", "user_id", name="organization_members_org_user_key"),
    )
    op.create_index("organization_members_user_idx", "organization_members", ["user_id"])
    op.create_table(
        "access_tokens",
        _id(),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("value_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.Column("scopes", JSON, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME),
        sa.Column("last_used_at", TIME),
        sa.Column("revoked_at", TIME),
    )
    op.create_index("access_tokens_user_idx", "access_tokens", ["user_id", "id"])
    op.create_table(
        "sessions",
        _id(),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("value_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("address", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("expires_at", TIME, nullable=False),
    )
    op.create_index("sessions_user_idx", "sessions", ["user_id"])
    op.create_table(
        "queue_grants",
        _id(),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(255), nullable=False),
        sa.Column("permission", sa.String(16), nullable=False),
        sa.Column("granted_by", sa.String(64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.UniqueConstraint("queue", "namespace", "permission", name="queue_grants_key"),
    )
    op.create_table(
        "audit_log",
        _id(),
        sa.Column("at", TIME, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.Text(), nullable=False, server_default=""),
        sa.Column("address", sa.Text(), nullable=False, server_default=""),
        sa.Column("detail", JSON, nullable=False),
    )
    op.create_index("audit_log_at_idx", "audit_log", ["at"])
    op.create_table(
        "secret_access_log",
        _id(),
        sa.Column("secret_id", sa.BigInteger(), nullable=False),
        sa.Column("secret_namespace", sa.String(255), nullable=False),
        sa.Column("secret_name", sa.String(255), nullable=False),
        sa.Column("job_namespace", sa.String(255), nullable=False),
        sa.Column("job_queue", sa.String(64), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("at", TIME, nullable=False),
    )
    op.create_index("secret_access_log_secret_idx", "secret_access_log", ["secret_id", "id"])

    # Secrets become namespaced and encrypted. The old rows are global ones in plain text:
    # they are kept with key_id 'plaintext', and the server encrypts them when it starts
    # with its key (a migration has no key to encrypt with).
    op.rename_table("secrets", "secrets_before_0010")
    op.create_table(
        "secrets",
        _id(),
        sa.Column("namespace", sa.String(255), nullable=False, server_default=""),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value_encrypted", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.UniqueConstraint("namespace", "name", name="secrets_namespace_name_key"),
    )
    op.execute(
        "INSERT INTO secrets (namespace, name, value_encrypted, key_id, created_at, updated_at)"
        " SELECT '', name, value, 'plaintext', created_at, updated_at FROM secrets_before_0010"
    )
    op.drop_table("secrets_before_0010")

    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("namespace", sa.String(255), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("submitted_by", sa.String(64), nullable=False, server_default="")
        )
    op.create_index("jobs_namespace_idx", "jobs", ["namespace", "id"])
    with op.batch_alter_table("batch_specs") as batch:
        batch.add_column(sa.Column("created_by", sa.String(64), nullable=False, server_default=""))
    with op.batch_alter_table("pull_requests") as batch:
        batch.add_column(sa.Column("author", sa.String(255), nullable=False, server_default=""))


def downgrade() -> None:
    # The secrets are encrypted now and hold namespaced rows the old schema cannot express.
    raise NotImplementedError(
        "revision 0010 cannot be undone: restore the database backup taken before upgrading"
    )
