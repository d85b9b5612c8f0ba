"""Generic jobs as executor jobs: the payload is the job, secrets are resolved here."""

from __future__ import annotations

from pydantic import ValidationError

from offload.db.base import Database
from offload.dispatch.queue import TransformError
from offload.protocol.wire import Job
from offload.queue.record import Record
from offload.secrets.cipher import CipherError
from offload.secrets.store import Secrets, UnknownSecret, placeholder


async def to_executor_job(record: Record, db: Database, *, secrets: Secrets) -> Job:
    """The executor job of a generic job record, with the secrets of its namespace as env and
    redactions (bind `secrets` with functools.partial to make it a queue's Transform)."""
    payload = dict(record.fields["payload"])
    names = list(payload.pop("secrets", []))
    try:
        job = Job.model_validate({**payload, "id": record.id, "queue": record.queue})
    except ValidationError as exc:
        raise TransformError(f"job {record.id} has a malformed payload: {exc}") from exc
    namespace = str(record.fields.get("namespace") or "")
    try:
        values = await secrets.values_for_job(
            namespace, names, queue=record.queue, job_id=record.id
        )
    except (UnknownSecret, CipherError) as exc:
        raise TransformError(str(exc)) from exc
    if values:
        env = [f"{name}={value}" for name, value in values.items()]
        for step in job.docker_steps:
            step.env = [*step.env, *env]
        job.redacted_values = {
            **job.redacted_values,
            **{v: placeholder(n) for n, v in values.items()},
        }
    return job
