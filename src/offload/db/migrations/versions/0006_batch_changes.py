"""batch specs, workspaces, step cache, changeset specs, batch changes, changesets, pull requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 15:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_spec_files",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_spec_id", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_spec_id", "path", name="batch_spec_files_spec_path_key"),
    )
    op.create_table(
        "batch_changes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("batch_spec_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_name", "name", name="batch_changes_user_name_key"),
    )
    op.create_table(
        "batch_resolution_jobs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("state", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("process_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("num_resets", sa.Integer(), server_default="0", nullable=False),
        sa.Column("num_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("worker_hostname", sa.Text(), nullable=True),
        sa.Column("cancel", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("batch_spec_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_spec_id"),
    )
    op.create_index(
        "batch_resolution_jobs_dequeue_idx",
        "batch_resolution_jobs",
        ["queued_at", "id"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.create_index(
        "batch_resolution_jobs_processing_idx",
        "batch_resolution_jobs",
        ["last_heartbeat_at"],
        unique=False,
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.create_index(
        "batch_resolution_jobs_state_finished_idx",
        "batch_resolution_jobs",
        ["state", "finished_at"],
        unique=False,
    )
    op.create_table(
        "batch_specs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("rand_id", sa.String(length=32), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("raw_spec", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("batch_change_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rand_id"),
    )
    op.create_table(
        "batch_step_cache",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column(
            "value",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_name", "key", name="batch_step_cache_user_key"),
    )
    op.create_table(
        "batch_workspaces",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_spec_id", sa.BigInteger(), nullable=False),
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("branch", sa.Text(), nullable=False),
        sa.Column("base_rev", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "file_matches",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "only_fetch_workspace", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("ignored", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("skipped", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("cached_steps", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "cached_result_found", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "batch_workspaces_spec_idx", "batch_workspaces", ["batch_spec_id", "id"], unique=False
    )
    op.create_table(
        "changeset_specs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("batch_spec_id", sa.BigInteger(), nullable=False),
        sa.Column("workspace_id", sa.BigInteger(), nullable=True),
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("base_ref", sa.Text(), server_default="", nullable=False),
        sa.Column("base_rev", sa.String(length=64), server_default="", nullable=False),
        sa.Column("head_ref", sa.Text(), server_default="", nullable=False),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column("body", sa.Text(), server_default="", nullable=False),
        sa.Column("commit_message", sa.Text(), server_default="", nullable=False),
        sa.Column("author_name", sa.Text(), server_default="", nullable=False),
        sa.Column("author_email", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "published",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("diff", sa.Text(), server_default="", nullable=False),
        sa.Column("diff_added", sa.Integer(), server_default="0", nullable=False),
        sa.Column("diff_deleted", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "changeset_specs_spec_idx", "changeset_specs", ["batch_spec_id", "id"], unique=False
    )
    op.create_table(
        "changesets",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("state", sa.String(length=16), server_default="queued", nullable=False),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("process_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("num_resets", sa.Integer(), server_default="0", nullable=False),
        sa.Column("num_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("worker_hostname", sa.Text(), nullable=True),
        sa.Column("cancel", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("batch_change_id", sa.BigInteger(), nullable=False),
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("spec_id", sa.BigInteger(), nullable=True),
        sa.Column("previous_spec_id", sa.BigInteger(), nullable=True),
        sa.Column("owned", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "publication_state", sa.String(length=16), server_default="unpublished", nullable=False
        ),
        sa.Column("external_id", sa.String(length=255), nullable=True),
        sa.Column("external_state", sa.String(length=16), nullable=True),
        sa.Column("external_url", sa.Text(), nullable=True),
        sa.Column("review_state", sa.String(length=32), nullable=True),
        sa.Column("checks_state", sa.String(length=32), nullable=True),
        sa.Column("head_ref", sa.Text(), nullable=True),
        sa.Column("pushed_commit", sa.String(length=64), nullable=True),
        sa.Column("closing", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("detached", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "changesets_batch_change_idx", "changesets", ["batch_change_id", "id"], unique=False
    )
    op.create_index(
        "changesets_dequeue_idx",
        "changesets",
        ["queued_at", "id"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.create_index(
        "changesets_processing_idx",
        "changesets",
        ["last_heartbeat_at"],
        unique=False,
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.create_index(
        "changesets_state_finished_idx", "changesets", ["state", "finished_at"], unique=False
    )
    op.create_table(
        "pull_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), server_default="", nullable=False),
        sa.Column("base_ref", sa.Text(), nullable=False),
        sa.Column("head_ref", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("merge_commit", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("repo_name", "number", name="pull_requests_repo_number_key"),
    )
    op.create_index("batch_workspace_jobs_workspace_idx", "batch_workspace_jobs", ["workspace_id"])
    op.create_index("changeset_specs_workspace_idx", "changeset_specs", ["workspace_id"])


def downgrade() -> None:
    op.drop_index("changeset_specs_workspace_idx", table_name="changeset_specs")
    op.drop_index("batch_workspace_jobs_workspace_idx", table_name="batch_workspace_jobs")
    op.drop_table("batch_spec_files")
    op.drop_table("pull_requests")
    op.drop_index("changesets_state_finished_idx", table_name="changesets")
    op.drop_index(
        "changesets_processing_idx",
        table_name="changesets",
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.drop_index(
        "changesets_dequeue_idx",
        table_name="changesets",
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.drop_index("changesets_batch_change_idx", table_name="changesets")
    op.drop_table("changesets")
    op.drop_index("changeset_specs_spec_idx", table_name="changeset_specs")
    op.drop_table("changeset_specs")
    op.drop_index("batch_workspaces_spec_idx", table_name="batch_workspaces")
    op.drop_table("batch_workspaces")
    op.drop_table("batch_step_cache")
    op.drop_table("batch_specs")
    op.drop_index("batch_resolution_jobs_state_finished_idx", table_name="batch_resolution_jobs")
    op.drop_index(
        "batch_resolution_jobs_processing_idx",
        table_name="batch_resolution_jobs",
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.drop_index(
        "batch_resolution_jobs_dequeue_idx",
        table_name="batch_resolution_jobs",
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.drop_table("batch_resolution_jobs")
    op.drop_table("batch_changes")
