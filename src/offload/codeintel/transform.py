"""Index jobs as executor jobs: pre-index steps, the indexer, then the index uploaded.

As Sourcegraph's executors run them: each pre-index step is a docker step in its own image
and root (`pre-index.<i>`), then the indexer's image runs the job's `local_steps` and its
`indexer_args` in the job's root (`indexer`). Where Sourcegraph adds a third container that
runs src-cli to upload the index, offload's executor sends the file itself (`Job.uploads`)
with the job's token, so the sandbox needs no network and no credential.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from offload.codeintel.config import DEFAULT_OUTFILE
from offload.db.base import Database
from offload.dispatch.queue import FinishError, TransformError
from offload.protocol.wire import DockerStep, Job, JobUpload
from offload.queue.record import LogEntry, Record
from offload.secrets.cipher import CipherError
from offload.secrets.store import GLOBAL, Secrets, UnknownSecret, placeholder

# Where the repository is checked out in the workspace; step dirs are relative to it.
REPOSITORY_DIR = "repository"


def indexer_name(image: str) -> str:
    """How users read an indexer image: without `sourcegraph/`, a tag or a digest."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name.removeprefix("sourcegraph/")


def _within_checkout(relative: str) -> str:
    return posixpath.normpath(posixpath.join(REPOSITORY_DIR, relative))


def steps_of(job: dict[str, Any]) -> list[DockerStep]:
    """The docker steps of an IndexJob payload (config.IndexJob.payload)."""
    root = str(job.get("root") or "")
    steps = [
        DockerStep(
            key=f"pre-index.{index}",
            image=str(step["image"]),
            commands=[str(c) for c in step.get("commands", [])],
            dir=_within_checkout(str(step.get("root") or root)),
        )
        for index, step in enumerate(job.get("steps", []))
    ]
    commands = [str(c) for c in job.get("local_steps", [])]
    if args := [str(a) for a in job.get("indexer_args", [])]:
        commands.append(shlex.join(args))
    steps.append(
        DockerStep(
            key="indexer",
            image=str(job["indexer"]),
            commands=commands,
            dir=_within_checkout(root),
        )
    )
    return steps


async def to_executor_job(
    record: Record, db: Database, *, secrets: Secrets, network: bool = False
) -> Job:
    """The executor job of an index job record, with the global secrets its configuration
    requests as env, and network access when the site gives index jobs it (bind `secrets`
    and `network` with functools.partial to make it a queue's Transform)."""
    job = record.fields["job"]
    if not isinstance(job, dict) or "indexer" not in job:
        raise TransformError(f"index job {record.id} has a malformed payload")
    root = str(job.get("root") or "")
    outfile = str(job.get("outfile") or DEFAULT_OUTFILE)
    steps = steps_of(job)
    redacted: dict[str, str] = {}
    requested = [str(n) for n in job.get("requestedEnvVars", [])]
    if requested:
        # Index jobs belong to the site: they read global secrets, and only the ones set.
        present = {info.name for info in await secrets.names(GLOBAL)}
        try:
            values = await secrets.values_for_job(
                GLOBAL, [n for n in requested if n in present], queue=record.queue, job_id=record.id
            )
        except (UnknownSecret, CipherError) as exc:
            raise TransformError(str(exc)) from exc
        env = [f"{name}={value}" for name, value in values.items()]
        for step in steps:
            step.env = [*step.env, *env]
        redacted = {value: placeholder(name) for name, value in values.items()}
    return Job(
        id=record.id,
        queue=record.queue,
        repository_name=str(record.fields["repo_name"]),
        repository_directory=REPOSITORY_DIR,
        commit=str(record.fields["commit_sha"]),
        shallow_clone=True,
        docker_steps=steps,
        redacted_values=redacted,
        allow_network=network,
        uploads=[
            JobUpload(key="upload", path=_within_checkout(posixpath.join(root, outfile))),
        ],
    )


async def finish(record: Record, db: Database, logs: list[LogEntry], succeeded: bool) -> None:
    """An index job that reports success must have sent its index (an executor that predates
    uploads would complete it without one): else it fails, saying why."""
    if not succeeded:
        return
    rows = await db.fetch(
        "SELECT upload_id FROM codeintel_index_jobs WHERE id = :id", {"id": record.id}
    )
    if not rows or rows[0]["upload_id"] is None:
        raise FinishError(
            f"index job {record.id} reported success but sent no index; executors send it "
            "to /.executors/uploads after the last step (upgrade an executor that does not)"
        )
