"""Generic jobs as executor jobs: the payload is the job, secrets are resolved here."""

from __future__ import annotations

from pydantic import ValidationError

from offload.db.base import Database
from offload.dispatch.queue import TransformError
from offload.dispatch.secrets import Secrets, placeholder
from offload.protocol.wire import Job
from offload.queue.record import Record


async def to_executor_job(record: Record, db: Database) -> Job:
    """The executor job of a generic job record, with its secrets as env and redactions."""
    payload = dict(record.fields["payload"])
    names = list(payload.pop("secrets", []))
    try:
        job = Job.model_validate({**payload, "id": record.id, "queue": record.queue})
    except ValidationError as exc:
        raise TransformError(f"job {record.id} has a malformed payload: {exc}") from exc
    values = await Secrets(db).values(names)
    if values:
        env = [f"{name}={value}" for name, value in values.items()]
        for step in job.docker_steps:
            step.env = [*step.env, *env]
        job.redacted_values = {
            **job.redacted_values,
            **{v: placeholder(n) for n, v in values.items()},
        }
    return job
