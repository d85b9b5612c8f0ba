"""Every table of offload, in SQLAlchemy Core: the single source the migrations must match."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite has no BIGINT rowid alias: INTEGER PRIMARY KEY is what makes ids auto-increment there.
IdType = BigInteger().with_variant(Integer(), "sqlite")
TIME = DateTime(timezone=True)


def record_queue_columns() -> list[Column[object]]:
    """The columns every record-queue table carries (see queue/README.md)."""
    return [
        Column("id", IdType, primary_key=True, autoincrement=True),
        Column("state", String(16), nullable=False, server_default="queued"),
        Column("failure_message", Text),
        Column("queued_at", TIME, nullable=False),
        Column("started_at", TIME),
        Column("last_heartbeat_at", TIME),
        Column("finished_at", TIME),
        Column("process_after", TIME),
        Column("num_resets", Integer, nullable=False, server_default="0"),
        Column("num_failures", Integer, nullable=False, server_default="0"),
        Column("worker_hostname", Text),
        Column("cancel", Boolean, nullable=False, server_default=text("false")),
        # Minted at each dequeue; fences every later call of the holder (see queue/store.py).
        Column("lease_token", String(64)),
    ]


def record_queue_indexes(table: str, partition: str | None = None) -> list[Index]:
    """Indexes that keep dequeue, heartbeat and the resetter off full scans.

    `partition`: the column naming each row's queue when queues share the table; it leads
    every index, since every statement of such a queue filters on it.
    """
    lead = [partition] if partition else []
    return [
        Index(
            f"{table}_dequeue_idx",
            *lead,
            "queued_at",
            "id",
            postgresql_where=text("state IN ('queued', 'errored')"),
            sqlite_where=text("state IN ('queued', 'errored')"),
        ),
        Index(
            f"{table}_processing_idx",
            *lead,
            "last_heartbeat_at",
            postgresql_where=text("state = 'processing'"),
            sqlite_where=text("state = 'processing'"),
        ),
        Index(f"{table}_state_finished_idx", *lead, "state", "finished_at"),
    ]


# Generic jobs: a command run against a repository on an executor (`offload run`).
jobs = Table(
    "jobs",
    metadata,
    *record_queue_columns(),
    # Which generic queue the job waits in (`offload run --queue`, OFFLOAD_JOB_QUEUES).
    Column("queue", String(64), nullable=False, server_default="default"),
    Column("payload", JSONType, nullable=False),
    # Whose job it is (a user's or an organization's name), and the user who submitted it.
    Column("namespace", String(255), nullable=False, server_default=""),
    Column("submitted_by", String(64), nullable=False, server_default=""),
    *record_queue_indexes("jobs", partition="queue"),
    Index("jobs_namespace_idx", "namespace", "id"),
)

# Idempotency keys of job submissions (jobs/submissions.py): a POST /api/jobs retried with
# the same key by the same user returns the job the first one made. Kept for a day.
job_submission_keys = Table(
    "job_submission_keys",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("submitted_by", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    # sha256 of the submission, so that the key reused for another one is refused.
    Column("request_sha256", String(64), nullable=False),
    # NULL while the first submission is being made.
    Column("job_id", BigInteger),
    Column("created_at", TIME, nullable=False),
    UniqueConstraint("submitted_by", "key", name="job_submission_keys_user_key"),
    Index("job_submission_keys_created_idx", "created_at"),
)

# One row per command a job ran, appended and updated while it runs (any queue's records).
execution_logs = Table(
    "execution_logs",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("queue", String(64), nullable=False),
    Column("record_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("key", Text, nullable=False),
    Column("command", JSONType, nullable=False),
    Column("start_time", TIME, nullable=False),
    Column("exit_code", Integer),
    Column("out", Text, nullable=False, server_default=""),
    Column("duration_ms", Integer),
    Index("execution_logs_record_idx", "queue", "record_id", "id"),
)

# Repositories the server mirrors (repos/registry.py), each in <data_dir>/repos/<name>.git.
repos = Table(
    "repos",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("source", Text, nullable=False),
    Column("created_at", TIME, nullable=False),
    Column("default_branch", Text),
    Column("head_commit", String(64)),
    # Every sync sets last_attempt_at; only a successful one sets last_synced_at and clears
    # last_error, so a failing source still shows how old its mirror is.
    Column("last_attempt_at", TIME),
    Column("last_synced_at", TIME),
    Column("last_error", Text),
    Index("repos_name_idx", "name", unique=True),
)

# Site settings the server keeps in the database (the executor token, for one).
site_config = Table(
    "site_config",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

# Executors, registered and kept current by their heartbeats.
executors = Table(
    "executors",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("hostname", String(255), nullable=False, unique=True),
    Column("queues", JSONType, nullable=False),
    Column("os", String(64), nullable=False, server_default=""),
    Column("architecture", String(64), nullable=False, server_default=""),
    Column("executor_version", String(64), nullable=False, server_default=""),
    Column("git_version", String(64), nullable=False, server_default=""),
    Column("docker_version", String(64), nullable=False, server_default=""),
    Column("runtime", String(64), nullable=False, server_default=""),
    Column("first_seen_at", TIME, nullable=False),
    Column("last_seen_at", TIME, nullable=False),
    # As the last heartbeat said: the limits of its jobs by kind (NULL: not reported), and
    # the jobs it holds by queue ({"default": [12, 13]}).
    Column("job_limits", JSONType),
    Column("running_jobs", JSONType),
)

# Worker processes, kept current by their own heartbeats: which release runs the background
# jobs (one row per host and set of jobs, so a restarted worker takes its row back).
workers = Table(
    "workers",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("hostname", String(255), nullable=False),
    Column("jobs", Text, nullable=False),
    Column("version", String(64), nullable=False),
    Column("git_version", String(64), nullable=False, server_default=""),
    Column("os", String(64), nullable=False, server_default=""),
    Column("architecture", String(64), nullable=False, server_default=""),
    Column("started_at", TIME, nullable=False),
    Column("last_seen_at", TIME, nullable=False),
    UniqueConstraint("hostname", "jobs", name="workers_hostname_jobs_key"),
)

# Per-job tokens: only their sha256 is kept; one per job and queue at a time.
executor_job_tokens = Table(
    "executor_job_tokens",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("value_sha256", String(64), nullable=False, unique=True),
    Column("job_id", BigInteger, nullable=False),
    Column("queue", String(64), nullable=False),
    Column("repo", Text, nullable=False),
    Column("holder", Text, nullable=False),
    Column("lease_token", String(64), nullable=False),
    Column("created_at", TIME, nullable=False),
    UniqueConstraint("job_id", "queue", name="executor_job_tokens_job_queue_key"),
)

# Secrets handed to jobs by name; values never leave the server except to a job's executor.
# namespace: '' for a global secret, else the user's or organization's name.
secrets = Table(
    "secrets",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("namespace", String(255), nullable=False, server_default=""),
    Column("name", String(255), nullable=False),
    # Fernet token of the value under the key named by key_id (secrets/store.py).
    Column("value_encrypted", Text, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("created_at", TIME, nullable=False),
    Column("updated_at", TIME, nullable=False),
    UniqueConstraint("namespace", "name", name="secrets_namespace_name_key"),
)

# Every use of a secret by a job: listable by whoever owns the secret.
secret_access_log = Table(
    "secret_access_log",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("secret_id", BigInteger, nullable=False),
    Column("secret_namespace", String(255), nullable=False),
    Column("secret_name", String(255), nullable=False),
    # The namespace the job ran in, and which job.
    Column("job_namespace", String(255), nullable=False),
    Column("job_queue", String(64), nullable=False),
    Column("job_id", BigInteger, nullable=False),
    Column("at", TIME, nullable=False),
    Index("secret_access_log_secret_idx", "secret_id", "id"),
)

# People who use offload. Usernames and organization names share one space of names, since
# either can own a namespace (identity/namespaces.py keeps them apart).
users = Table(
    "users",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", Text, nullable=False, server_default=""),
    Column("email", Text, nullable=False, server_default=""),
    Column("site_admin", Boolean, nullable=False, server_default=text("false")),
    Column("disabled_at", TIME),
    # argon2id; NULL: the user signs in with access tokens only.
    Column("password_hash", Text),
    Column("created_at", TIME, nullable=False),
    Column("updated_at", TIME, nullable=False),
)

organizations = Table(
    "organizations",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("display_name", Text, nullable=False, server_default=""),
    Column("created_at", TIME, nullable=False),
)

# role: member | admin (an organization's admins manage its members and secrets).
organization_members = Table(
    "organization_members",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("org_id", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("role", String(16), nullable=False, server_default="member"),
    Column("created_at", TIME, nullable=False),
    UniqueConstraint("org_id", "user_id", name="organization_members_org_user_key"),
    Index("organization_members_user_idx", "user_id"),
)

# Personal access tokens: only their sha256 is kept; shown once when created.
access_tokens = Table(
    "access_tokens",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, nullable=False),
    Column("value_sha256", String(64), nullable=False, unique=True),
    Column("note", Text, nullable=False, server_default=""),
    # user:all, site-admin
    Column("scopes", JSONType, nullable=False),
    Column("created_at", TIME, nullable=False),
    Column("expires_at", TIME),
    Column("last_used_at", TIME),
    Column("revoked_at", TIME),
    Index("access_tokens_user_idx", "user_id", "id"),
)

# Signed-in browser sessions: the cookie carries the session's random value, signed.
sessions = Table(
    "sessions",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("user_id", BigInteger, nullable=False),
    Column("value_sha256", String(64), nullable=False, unique=True),
    Column("csrf_token", String(64), nullable=False),
    Column("address", Text, nullable=False, server_default=""),
    Column("created_at", TIME, nullable=False),
    Column("expires_at", TIME, nullable=False),
    Index("sessions_user_idx", "user_id"),
)

# Which namespaces may use which executor queues, and give their jobs network access there.
queue_grants = Table(
    "queue_grants",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("queue", String(64), nullable=False),
    Column("namespace", String(255), nullable=False),
    # use: may submit jobs to the queue; network: may also let them reach the network.
    Column("permission", String(16), nullable=False),
    Column("granted_by", String(64), nullable=False),
    Column("created_at", TIME, nullable=False),
    UniqueConstraint("queue", "namespace", "permission", name="queue_grants_key"),
)

# Who did what, when, from where: sign-ins, tokens, grants, secrets, applies, merges, cancels.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("at", TIME, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False, server_default=""),
    Column("address", Text, nullable=False, server_default=""),
    Column("detail", JSONType, nullable=False),
    Index("audit_log_at_idx", "at"),
)


# One execution job per batch spec workspace, consumed by executors in the `batches` queue.
# fair_key orders them round-robin between users (batches/queue.py says how it is assigned).
batch_workspace_jobs = Table(
    "batch_workspace_jobs",
    metadata,
    *record_queue_columns(),
    Column("batch_spec_id", BigInteger, nullable=False),
    Column("workspace_id", BigInteger, nullable=False),
    Column("user_name", String(255), nullable=False),
    Column("fair_key", BigInteger, nullable=False),
    *record_queue_indexes("batch_workspace_jobs"),
    # A spec's workspace states join their jobs by workspace (batches/service.py).
    Index("batch_workspace_jobs_workspace_idx", "workspace_id"),
    # A spec's progress counts its jobs by state (batches/service.py).
    Index("batch_workspace_jobs_spec_state_idx", "batch_spec_id", "state"),
    Index(
        "batch_workspace_jobs_fair_idx",
        "fair_key",
        "id",
        postgresql_where=text("state IN ('queued', 'errored')"),
        sqlite_where=text("state IN ('queued', 'errored')"),
    ),
)

# The last fair_key handed to each user's batch workspace jobs.
batch_queue_users = Table(
    "batch_queue_users",
    metadata,
    Column("user_name", String(255), primary_key=True),
    Column("last_key", BigInteger, nullable=False),
)

# A batch spec as submitted: its YAML, who submitted it, and (once applied) its batch change.
batch_specs = Table(
    "batch_specs",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("rand_id", String(32), nullable=False, unique=True),
    # The namespace the spec belongs to (a user's or an organization's name).
    Column("user_name", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("raw_spec", Text, nullable=False),
    # The user who submitted it (the namespace may be an organization).
    Column("created_by", String(64), nullable=False, server_default=""),
    Column("created_at", TIME, nullable=False),
    Column("applied_at", TIME),
    Column("batch_change_id", BigInteger),
    # `offload batch preview --local`: the user's CLI runs the workspaces, not the executors.
    Column("runs_locally", Boolean, nullable=False, server_default=text("false")),
)

# Local files a spec's steps mount (`mount`), uploaded with the spec by the CLI.
batch_spec_files = Table(
    "batch_spec_files",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("batch_spec_id", BigInteger, nullable=False),
    Column("path", Text, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
    UniqueConstraint("batch_spec_id", "path", name="batch_spec_files_spec_path_key"),
)

# Turns a batch spec into workspaces (`batches.resolver`); one row per spec.
batch_resolution_jobs = Table(
    "batch_resolution_jobs",
    metadata,
    *record_queue_columns(),
    Column("batch_spec_id", BigInteger, nullable=False, unique=True),
    *record_queue_indexes("batch_resolution_jobs"),
)

# One repository (branch, directory) a batch spec's steps run in.
batch_workspaces = Table(
    "batch_workspaces",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("batch_spec_id", BigInteger, nullable=False),
    Column("repo_name", String(255), nullable=False),
    Column("branch", Text, nullable=False),
    Column("base_rev", String(64), nullable=False),
    Column("path", Text, nullable=False, server_default=""),
    Column("file_matches", JSONType, nullable=False),
    Column("only_fetch_workspace", Boolean, nullable=False, server_default=text("false")),
    Column("ignored", Boolean, nullable=False, server_default=text("false")),
    Column("skipped", Boolean, nullable=False, server_default=text("false")),
    # How many leading steps the step cache already answers, and whether it answers them all.
    Column("cached_steps", Integer, nullable=False, server_default="0"),
    Column("cached_result_found", Boolean, nullable=False, server_default=text("false")),
    # The step cache key of the result its changeset specs were made from: the same spec
    # submitted again copies them for workspaces with the same result (batches/results.py).
    Column("result_key", Text),
    Index("batch_workspaces_spec_idx", "batch_spec_id", "id"),
    Index("batch_workspaces_result_idx", "batch_spec_id", "result_key"),
    # A spec's progress counts its workspaces by flag (batches/service.py).
    Index(
        "batch_workspaces_spec_flags_idx",
        "batch_spec_id",
        "ignored",
        "skipped",
        "cached_result_found",
    ),
)

# Step results by cache key (batches/cache.py): an unchanged step is never run twice.
batch_step_cache = Table(
    "batch_step_cache",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("user_name", String(255), nullable=False),
    Column("key", String(128), nullable=False),
    Column("value", JSONType, nullable=False),
    Column("created_at", TIME, nullable=False),
    # The batch_workspace_jobs row whose run wrote it (NULL: written before 0012), so the logs
    # of a workspace the cache answered can show that run's.
    Column("job_id", BigInteger),
    UniqueConstraint("user_name", "key", name="batch_step_cache_user_key"),
    # batches.spec-expirer deletes the oldest entries.
    Index("batch_step_cache_created_idx", "created_at"),
)

# What one workspace's changes should become on the code host (or a pull request to import).
changeset_specs = Table(
    "changeset_specs",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("batch_spec_id", BigInteger, nullable=False),
    Column("workspace_id", BigInteger),
    Column("repo_name", String(255), nullable=False),
    # 'branch' (a change offload makes) or 'existing' (a pull request to track).
    Column("kind", String(16), nullable=False),
    Column("external_id", String(255)),
    Column("base_ref", Text, nullable=False, server_default=""),
    Column("base_rev", String(64), nullable=False, server_default=""),
    Column("head_ref", Text, nullable=False, server_default=""),
    Column("title", Text, nullable=False, server_default=""),
    Column("body", Text, nullable=False, server_default=""),
    Column("commit_message", Text, nullable=False, server_default=""),
    Column("author_name", Text, nullable=False, server_default=""),
    Column("author_email", Text, nullable=False, server_default=""),
    Column("published", JSONType),
    Column("diff", Text, nullable=False, server_default=""),
    Column("diff_added", Integer, nullable=False, server_default="0"),
    Column("diff_deleted", Integer, nullable=False, server_default="0"),
    Column("created_at", TIME, nullable=False),
    Index("changeset_specs_spec_idx", "batch_spec_id", "id"),
    # A workspace that runs again replaces its changeset specs by workspace.
    Index("changeset_specs_workspace_idx", "workspace_id"),
)

# A batch change: the named, applied result of a namespace's batch specs.
batch_changes = Table(
    "batch_changes",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    # Its namespace: a user's or an organization's name (addressed as namespace/name).
    Column("user_name", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("batch_spec_id", BigInteger, nullable=False),
    Column("created_at", TIME, nullable=False),
    Column("updated_at", TIME, nullable=False),
    Column("closed_at", TIME),
    UniqueConstraint("user_name", "name", name="batch_changes_user_name_key"),
)

# A pull request a batch change owns or tracks; also the reconciler's record queue.
changesets = Table(
    "changesets",
    metadata,
    *record_queue_columns(),
    Column("batch_change_id", BigInteger, nullable=False),
    Column("repo_name", String(255), nullable=False),
    Column("spec_id", BigInteger),
    Column("previous_spec_id", BigInteger),
    Column("owned", Boolean, nullable=False, server_default=text("true")),
    # unpublished | draft | published: what the reconciler has made of it on the host.
    Column("publication_state", String(16), nullable=False, server_default="unpublished"),
    Column("external_id", String(255)),
    Column("external_state", String(16)),
    Column("external_url", Text),
    Column("review_state", String(32)),
    Column("checks_state", String(32)),
    Column("head_ref", Text),
    Column("pushed_commit", String(64)),
    Column("closing", Boolean, nullable=False, server_default=text("false")),
    Column("detached", Boolean, nullable=False, server_default=text("false")),
    Column("synced_at", TIME),
    Column("updated_at", TIME, nullable=False),
    # For the burndown: when apply made it, and when its pull request was first seen on the
    # host, merged and closed (NULL again if it was reopened).
    Column("created_at", TIME),
    Column("published_at", TIME),
    Column("merged_at", TIME),
    Column("closed_at", TIME),
    *record_queue_indexes("changesets"),
    Index("changesets_batch_change_idx", "batch_change_id", "id"),
)

# Pull requests of the built-in code host: repositories the server holds from a local path.
pull_requests = Table(
    "pull_requests",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("repo_name", String(255), nullable=False),
    Column("number", Integer, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False, server_default=""),
    Column("base_ref", Text, nullable=False),
    Column("head_ref", Text, nullable=False),
    # open | draft | merged | closed
    Column("state", String(16), nullable=False),
    Column("merge_commit", String(64)),
    # The namespace that opened it (a batch change's); it may merge and close it.
    Column("author", String(255), nullable=False, server_default=""),
    Column("created_at", TIME, nullable=False),
    Column("updated_at", TIME, nullable=False),
    UniqueConstraint("repo_name", "number", name="pull_requests_repo_number_key"),
)

# Code-navigation usage, as reported (codeintel/popularity.py folds these into the ranking).
codeintel_events = Table(
    "codeintel_events",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("repo_name", String(255), nullable=False),
    # precise | search
    Column("kind", String(16), nullable=False),
    Column("count", Integer, nullable=False),
    Column("occurred_at", TIME, nullable=False),
)

# Results per repository and week (weeks start on Monday, UTC), folded from codeintel_events.
codeintel_usage = Table(
    "codeintel_usage",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("week_start", TIME, primary_key=True),
    Column("precise", BigInteger, nullable=False, server_default="0"),
    Column("search", BigInteger, nullable=False, server_default="0"),
)

# One row per repository the scheduler knows: the last week's usage and when it was last
# indexed, in the order the scheduler takes them (codeintel/ranking.py).
codeintel_ranking = Table(
    "codeintel_ranking",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("precise_week", BigInteger, nullable=False, server_default="0"),
    Column("search_week", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", TIME, nullable=False),
)

# What the scheduler last decided for each repository: what it read, when, and what was wrong.
codeintel_repo_status = Table(
    "codeintel_repo_status",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("last_scanned_at", TIME),
    Column("last_queued_at", TIME),
    Column("last_commit", String(64)),
    # configuration | sourcegraph.yaml | inferred
    Column("source", String(32)),
    Column("errors", JSONType),
    Column("notes", JSONType),
)

# Index configuration set for a repository (`offload codeintel config set`): wins over all.
codeintel_configs = Table(
    "codeintel_configs",
    metadata,
    Column("repo_name", String(255), primary_key=True),
    Column("config", Text, nullable=False),
    Column("updated_at", TIME, nullable=False),
    Column("updated_by", String(255), nullable=False, server_default=""),
)

# The `codeintel` queue: one indexer run over one root of one commit, run by executors.
codeintel_index_jobs = Table(
    "codeintel_index_jobs",
    metadata,
    *record_queue_columns(),
    Column("repo_name", String(255), nullable=False),
    Column("commit_sha", String(64), nullable=False),
    Column("root", Text, nullable=False, server_default=""),
    Column("indexer", Text, nullable=False),
    # The IndexJob (Sourcegraph's configuration shape) the executor's steps are made from.
    Column("job", JSONType, nullable=False),
    # configuration | sourcegraph.yaml | inferred
    Column("source", String(32), nullable=False),
    # 0: asked for by someone (`offload codeintel index`), 1: scheduled; lower runs first.
    Column("priority", Integer, nullable=False, server_default="1"),
    Column("requested_by", String(255), nullable=False, server_default=""),
    Column("upload_id", BigInteger),
    *record_queue_indexes("codeintel_index_jobs"),
    Index(
        "codeintel_index_jobs_priority_idx",
        "priority",
        "queued_at",
        "id",
        postgresql_where=text("state IN ('queued', 'errored')"),
        sqlite_where=text("state IN ('queued', 'errored')"),
    ),
    Index("codeintel_index_jobs_repo_idx", "repo_name", "commit_sha", "root", "indexer"),
)

# The `codeintel.uploads` queue: an uploaded SCIP index, processed into the tables below.
codeintel_uploads = Table(
    "codeintel_uploads",
    metadata,
    *record_queue_columns(),
    Column("repo_name", String(255), nullable=False),
    Column("commit_sha", String(64), nullable=False),
    Column("root", Text, nullable=False, server_default=""),
    Column("indexer", Text, nullable=False),
    Column("index_job_id", BigInteger),
    # The file under <data_dir>/uploads/ until processing ends; its size and sha256 as sent.
    Column("file_name", String(128), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("uploaded_by", String(255), nullable=False, server_default=""),
    # Filled by processing: what the upload holds and what was left out.
    Column("num_documents", Integer),
    Column("num_occurrences", BigInteger),
    Column("dropped_paths", Integer),
    Column("stored_bytes", BigInteger),
    Column("indexer_version", Text),
    *record_queue_indexes("codeintel_uploads"),
    Index("codeintel_uploads_repo_commit_idx", "repo_name", "commit_sha", "root", "indexer"),
)

# Documents of processed uploads, deduplicated by content: one row however many uploads
# hold the same file's index (codeintel/documents.py encodes `payload`).
codeintel_documents = Table(
    "codeintel_documents",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("payload", LargeBinary, nullable=False),
    Column("num_occurrences", Integer, nullable=False),
)

# Which document each path of an upload is.
codeintel_upload_documents = Table(
    "codeintel_upload_documents",
    metadata,
    Column("upload_id", BigInteger, primary_key=True),
    Column("path", Text, primary_key=True),
    Column("document_id", BigInteger, nullable=False),
    Index("codeintel_upload_documents_document_idx", "document_id"),
)

# Symbol names, stored once (looked up by the sha256 of the name).
codeintel_symbols = Table(
    "codeintel_symbols",
    metadata,
    Column("id", IdType, primary_key=True, autoincrement=True),
    Column("name_sha256", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
)

# Where each symbol of an upload occurs, per path: definition and reference ranges, encoded
# (codeintel/ranges.py), not one row per occurrence.
codeintel_symbol_ranges = Table(
    "codeintel_symbol_ranges",
    metadata,
    Column("upload_id", BigInteger, primary_key=True),
    Column("symbol_id", BigInteger, primary_key=True),
    Column("path", Text, primary_key=True),
    Column("definitions", LargeBinary),
    Column("refs", LargeBinary),
)

# Packages an upload defines (a definition of one of its symbols) or references.
codeintel_packages = Table(
    "codeintel_packages",
    metadata,
    Column("upload_id", BigInteger, primary_key=True),
    Column("scheme", String(255), primary_key=True),
    Column("manager", String(255), primary_key=True),
    Column("name", String(1024), primary_key=True),
    Column("version", String(255), primary_key=True),
    Column("defines", Boolean, primary_key=True),
    Index("codeintel_packages_lookup_idx", "scheme", "manager", "name", "version", "defines"),
)
