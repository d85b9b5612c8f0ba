"""Paths of the executor protocol, relative to the server's URL."""

from __future__ import annotations

PREFIX = "/.executors"


def dequeue(queue: str | None = None) -> str:
    """Single-queue dequeue, or multi-queue when `queue` is None."""
    return f"{PREFIX}/queue/{queue}/dequeue" if queue else f"{PREFIX}/queue/dequeue"


def heartbeat(queue: str | None = None) -> str:
    """Single- or multi-queue heartbeat."""
    return f"{PREFIX}/queue/{queue}/heartbeat" if queue else f"{PREFIX}/queue/heartbeat"


def job_call(queue: str, verb: str) -> str:
    """addExecutionLogEntry, addExecutionLogEntries, updateExecutionLogEntry, markComplete, ...."""
    return f"{PREFIX}/queue/{queue}/{verb}"


def git(repo: str) -> str:
    """The git smart-HTTP base of a repository (append /info/refs or /git-upload-pack)."""
    return f"{PREFIX}/git/{repo}"


AUTH_CHECK = f"{PREFIX}/test/auth"

# offload: where a job's uploads go (with its job token), e.g. an index job's index.scip.
UPLOADS = f"{PREFIX}/uploads"
# The upload's sha256 (hex) as the executor computed it; the server refuses a body that differs.
UPLOAD_SHA256_HEADER = "X-Offload-Upload-SHA256"

# Headers of per-job calls, next to `Authorization: Bearer <job token>`.
JOB_ID_HEADER = "X-Offload-Job-ID"
EXECUTOR_NAME_HEADER = "X-Offload-Executor-Name"
# Sourcegraph executors send these; accepted as the same.
JOB_ID_HEADER_COMPAT = "X-Sourcegraph-Job-ID"
EXECUTOR_NAME_HEADER_COMPAT = "X-Sourcegraph-Executor-Name"
