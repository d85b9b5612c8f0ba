"""codeintel: usage, ranking, index jobs, uploads and their documents, symbols and packages

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 03:00:00.000000
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "codeintel_configs",
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("repo_name"),
    )
    op.create_table(
        "codeintel_documents",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("num_occurrences", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_table(
        "codeintel_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "codeintel_index_jobs",
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
        sa.Column("cancel", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("commit_sha", sa.String(length=64), nullable=False),
        sa.Column("root", sa.Text(), server_default="", nullable=False),
        sa.Column("indexer", sa.Text(), nullable=False),
        sa.Column(
            "job",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="1", nullable=False),
        sa.Column("requested_by", sa.String(length=255), server_default="", nullable=False),
        sa.Column("upload_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "codeintel_index_jobs_dequeue_idx",
        "codeintel_index_jobs",
        ["queued_at", "id"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.create_index(
        "codeintel_index_jobs_priority_idx",
        "codeintel_index_jobs",
        ["priority", "queued_at", "id"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.create_index(
        "codeintel_index_jobs_processing_idx",
        "codeintel_index_jobs",
        ["last_heartbeat_at"],
        unique=False,
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.create_index(
        "codeintel_index_jobs_repo_idx",
        "codeintel_index_jobs",
        ["repo_name", "commit_sha", "root", "indexer"],
        unique=False,
    )
    op.create_index(
        "codeintel_index_jobs_state_finished_idx",
        "codeintel_index_jobs",
        ["state", "finished_at"],
        unique=False,
    )

    op.create_table(
        "codeintel_packages",
        sa.Column("upload_id", sa.BigInteger(), nullable=False),
        sa.Column("scheme", sa.String(length=255), nullable=False),
        sa.Column("manager", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=1024), nullable=False),
        sa.Column("version", sa.String(length=255), nullable=False),
        sa.Column("defines", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "scheme", "manager", "name", "version", "defines"),
    )
    op.create_index(
        "codeintel_packages_lookup_idx",
        "codeintel_packages",
        ["scheme", "manager", "name", "version", "defines"],
        unique=False,
    )

    op.create_table(
        "codeintel_ranking",
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("precise_week", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("search_week", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repo_name"),
    )
    op.create_table(
        "codeintel_repo_status",
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("last_scanned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_commit", sa.String(length=64), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=True),
        sa.Column(
            "errors",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "notes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("repo_name"),
    )
    op.create_table(
        "codeintel_symbol_ranges",
        sa.Column("upload_id", sa.BigInteger(), nullable=False),
        sa.Column("symbol_id", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("definitions", sa.LargeBinary(), nullable=True),
        sa.Column("refs", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("upload_id", "symbol_id", "path"),
    )
    op.create_table(
        "codeintel_symbols",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name_sha256", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name_sha256"),
    )
    op.create_table(
        "codeintel_upload_documents",
        sa.Column("upload_id", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("document_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("upload_id", "path"),
    )
    op.create_index(
        "codeintel_upload_documents_document_idx",
        "codeintel_upload_documents",
        ["document_id"],
        unique=False,
    )

    op.create_table(
        "codeintel_uploads",
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
        sa.Column("cancel", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.Column("lease_token", sa.String(length=64), nullable=True),
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("commit_sha", sa.String(length=64), nullable=False),
        sa.Column("root", sa.Text(), server_default="", nullable=False),
        sa.Column("indexer", sa.Text(), nullable=False),
        sa.Column("index_job_id", sa.BigInteger(), nullable=True),
        sa.Column("file_name", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("uploaded_by", sa.String(length=255), server_default="", nullable=False),
        sa.Column("num_documents", sa.Integer(), nullable=True),
        sa.Column("num_occurrences", sa.BigInteger(), nullable=True),
        sa.Column("dropped_paths", sa.Integer(), nullable=True),
        sa.Column("stored_bytes", sa.BigInteger(), nullable=True),
        sa.Column("indexer_version", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "codeintel_uploads_dequeue_idx",
        "codeintel_uploads",
        ["queued_at", "id"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.create_index(
        "codeintel_uploads_processing_idx",
        "codeintel_uploads",
        ["last_heartbeat_at"],
        unique=False,
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.create_index(
        "codeintel_uploads_repo_commit_idx",
        "codeintel_uploads",
        ["repo_name", "commit_sha", "root", "indexer"],
        unique=False,
    )
    op.create_index(
        "codeintel_uploads_state_finished_idx",
        "codeintel_uploads",
        ["state", "finished_at"],
        unique=False,
    )

    op.create_table(
        "codeintel_usage",
        sa.Column("repo_name", sa.String(length=255), nullable=False),
        sa.Column("week_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("precise", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("search", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("repo_name", "week_start"),
    )


def downgrade() -> None:
    op.drop_table("codeintel_usage")
    op.drop_index("codeintel_uploads_state_finished_idx", table_name="codeintel_uploads")
    op.drop_index("codeintel_uploads_repo_commit_idx", table_name="codeintel_uploads")
    op.drop_index(
        "codeintel_uploads_processing_idx",
        table_name="codeintel_uploads",
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.drop_index(
        "codeintel_uploads_dequeue_idx",
        table_name="codeintel_uploads",
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )

    op.drop_table("codeintel_uploads")
    op.drop_index(
        "codeintel_upload_documents_document_idx", table_name="codeintel_upload_documents"
    )

    op.drop_table("codeintel_upload_documents")
    op.drop_table("codeintel_symbols")
    op.drop_table("codeintel_symbol_ranges")
    op.drop_table("codeintel_repo_status")
    op.drop_table("codeintel_ranking")
    op.drop_index("codeintel_packages_lookup_idx", table_name="codeintel_packages")

    op.drop_table("codeintel_packages")
    op.drop_index("codeintel_index_jobs_state_finished_idx", table_name="codeintel_index_jobs")
    op.drop_index("codeintel_index_jobs_repo_idx", table_name="codeintel_index_jobs")
    op.drop_index(
        "codeintel_index_jobs_processing_idx",
        table_name="codeintel_index_jobs",
        postgresql_where=sa.text("state = 'processing'"),
        sqlite_where=sa.text("state = 'processing'"),
    )
    op.drop_index(
        "codeintel_index_jobs_priority_idx",
        table_name="codeintel_index_jobs",
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )
    op.drop_index(
        "codeintel_index_jobs_dequeue_idx",
        table_name="codeintel_index_jobs",
        postgresql_where=sa.text("state IN ('queued', 'errored')"),
        sqlite_where=sa.text("state IN ('queued', 'errored')"),
    )

    op.drop_table("codeintel_index_jobs")
    op.drop_table("codeintel_events")
    op.drop_table("codeintel_documents")
    op.drop_table("codeintel_configs")
