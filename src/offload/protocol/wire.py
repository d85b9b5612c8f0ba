"""JSON bodies of the executor protocol, with the field names executors already speak."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from offload.queue.record import LogEntry

# The most log entries one addExecutionLogEntries call may carry.
MAX_LOG_BATCH = 100
# Ids are 64-bit in the database: a larger number must be refused here, not by the driver.
INT64_MAX = 2**63 - 1
# The most jobs one dequeue may hand out together (a job and its bundle).
MAX_BUNDLE = 256
# The most running jobs, and queues, one executor may report in a heartbeat.
MAX_HEARTBEAT_IDS = 1000
MAX_QUEUES = 64
# The longest executor-reported texts kept or compared (their columns are sized to match).
MAX_NAME = 255
MAX_LABEL = 64
MAX_KEY = 1024
MAX_COMMAND_WORDS = 10_000
MAX_COMMAND_WORD = 1024 * 1024
MAX_ERROR_MESSAGE = 1024 * 1024
MAX_METRICS = 1024 * 1024
# The most job limits one heartbeat may report (memory, cpu, pids, disk, tmp, output, time).
MAX_LIMITS = 16


def _printable(value: str) -> str:
    # Names end up in log lines, headers and the executors page: no newlines, no NUL.
    if not value.isprintable():
        raise ValueError("must be printable characters, without newlines or control characters")
    return value


# An executor's name: who holds a job (the protocol's hostname).
ExecutorName = Annotated[str, Field(min_length=1, max_length=MAX_NAME), AfterValidator(_printable)]
# A short descriptive text: a queue name, a version, an operating system.
Label = Annotated[str, Field(max_length=MAX_LABEL), AfterValidator(_printable)]
# A record id: what the database's BIGINT primary keys can hold.
RecordId = Annotated[int, Field(ge=1, le=INT64_MAX)]

# A job id in a heartbeat: "<id>", or "<id>-<queue>" from a multi-queue executor.
_JOB_UID = re.compile(r"^([0-9]{1,19})(?:-([a-z0-9][a-z0-9._-]{0,63}))?$")


def _job_uid(value: str) -> str:
    match = _JOB_UID.match(value)
    if match is None or not 1 <= int(match[1]) <= INT64_MAX:
        raise ValueError(
            f"{value[:40]!r} is not a job id: write a number from 1 to {INT64_MAX}, "
            "or <id>-<queue> on the multi-queue route"
        )
    return value


JobUid = Annotated[str, AfterValidator(_job_uid)]


def split_uid(uid: str) -> tuple[int, str]:
    """The id and queue of a validated job uid (queue "" when it names none)."""
    job_id, _, queue = uid.partition("-")
    return int(job_id), queue


class Wire(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields from newer peers ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, object]:
        """The JSON object to send."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StepMount(Wire):
    """A file or directory of the workspace, shown to one docker step at another path."""

    source: str  # relative to the workspace root
    target: str  # absolute, inside the step's container
    read_only: bool = True


class DockerStep(Wire):
    """A step run in a container image (or the runtime's default root)."""

    key: str = ""
    image: str = ""
    commands: list[str]
    dir: str = ""
    env: list[str] = Field(default_factory=list)  # "NAME=value"
    # offload: workspace paths bound elsewhere in the container (batch specs' `files`).
    mounts: list[StepMount] = Field(default_factory=list)


class CliStep(Wire):
    """A step run on the executor host; `command` starts with one of its host tools' names."""

    key: str = ""
    commands: list[str] = Field(alias="command")
    dir: str = ""
    env: list[str] = Field(default_factory=list)


class JobFile(Wire):
    """A file written into the workspace before the steps run."""

    content: str


class JobUpload(Wire):
    """offload: a file the job leaves in its workspace, sent to the server once every step
    succeeded (an index job's `index.scip`)."""

    key: str = Field(default="upload", max_length=MAX_KEY)
    # Relative to the workspace root; the executor opens it without following symlinks.
    path: str = Field(min_length=1, max_length=4096)


class Job(Wire):
    """What the executor receives from a dequeue."""

    version: int = 2
    id: int
    queue: str = ""
    token: str = ""
    repository_name: str = ""
    repository_directory: str = ""
    commit: str = ""
    fetch_tags: bool = False
    shallow_clone: bool = False
    sparse_checkout: list[str] = Field(default_factory=list)
    files: dict[str, JobFile] = Field(default_factory=dict)
    docker_steps: list[DockerStep] = Field(default_factory=list)
    cli_steps: list[CliStep] = Field(default_factory=list)
    redacted_values: dict[str, str] = Field(default_factory=dict)
    # offload: whether steps may use the network (off unless the job asks for it).
    allow_network: bool = False
    # offload: the keys of docker and cli steps in the order to run them; empty: every
    # docker step, then every cli step.
    sequence: list[str] = Field(default_factory=list)
    # offload: which run of the job this is (1, then one more per reset or failure), so a
    # job's logs and steps can tell a re-run from its first run; servers that do not send it
    # mean 1.
    attempt: int = Field(default=1, ge=1)
    # offload: files sent to the server's upload route after the last step succeeded.
    uploads: list[JobUpload] = Field(default_factory=list, max_length=16)
    # offload: more jobs of the same repository, commit and checkout options, leased to this
    # executor with this one. It checks the repository out once and runs each of them in its
    # own copy, reporting each job (logs, outcome) with that job's own id and token.
    bundle: list[Job] = Field(default_factory=list, max_length=MAX_BUNDLE)


class DequeueRequest(Wire):
    """Ask for one job of a queue (or of any of `queues`)."""

    executor_name: ExecutorName
    queues: list[Label] | None = Field(default=None, max_length=MAX_QUEUES)
    version: Label = ""
    num_cpus: int = Field(default=0, alias="numCPUs", ge=0, le=2**31 - 1)
    memory: Label = ""
    disk_space: Label = ""
    # offload: wait up to this many seconds for a job before answering 204 (long poll).
    wait: float = Field(default=0.0, ge=0.0, le=3600.0, allow_inf_nan=False)


def _as_text(value: object) -> object:
    # Executors send ids as numbers or strings; both mean the same job.
    return [str(v) for v in value] if isinstance(value, list) else value


class QueueJobIds(Wire):
    """The running jobs of one queue, in a multi-queue heartbeat."""

    queue_name: Label
    job_ids: list[JobUid] = Field(max_length=MAX_HEARTBEAT_IDS)

    @field_validator("job_ids", mode="before")
    @classmethod
    def _ids_as_text(cls, value: object) -> object:
        return _as_text(value)


class HeartbeatRequest(Wire):
    """An executor's periodic report: who it is and which jobs it runs."""

    version: Label = "V2"
    executor_name: ExecutorName
    job_ids: list[JobUid] = Field(default_factory=list, max_length=MAX_HEARTBEAT_IDS)
    job_ids_by_queue: list[QueueJobIds] = Field(default_factory=list, max_length=MAX_QUEUES)
    queue_names: list[Label] = Field(default_factory=list, max_length=MAX_QUEUES)
    os: Label = ""
    architecture: Label = ""
    docker_version: Label = ""
    executor_version: Label = ""
    git_version: Label = ""
    ignite_version: Label = ""
    src_cli_version: Label = ""
    prometheus_metrics: str = Field(default="", max_length=MAX_METRICS)
    # offload: which runtime isolates this executor's jobs.
    runtime: Label = ""
    # offload: the limits each job of this executor runs under, by kind ("memory": "2G",
    # "time": "30m"; "none" where there is none). Absent from executors that predate it.
    limits: dict[Label, Label] | None = Field(default=None, max_length=MAX_LIMITS)

    @field_validator("job_ids", mode="before")
    @classmethod
    def _ids_as_text(cls, value: object) -> object:
        return _as_text(value)

    def ids_by_queue(self, queue: str | None) -> dict[str, list[int]]:
        """The reported job ids by queue; `queue` names the one a single-queue route serves.

        On a single-queue route an id that names another queue is left out: the executor
        learns that it is unknown there.
        """
        ids: dict[str, list[int]] = {}
        # Multi-queue executors name jobs "<id>-<queue>" or group them by queue.
        for uid in self.job_ids:
            job_id, name = split_uid(uid)
            ids.setdefault(name or (queue or ""), []).append(job_id)
        for group in self.job_ids_by_queue:
            ids.setdefault(group.queue_name, []).extend(split_uid(u)[0] for u in group.job_ids)
        if queue is not None:
            return {queue: ids.get(queue, [])}
        return ids


class HeartbeatResponse(Wire):
    """Which of the reported jobs are still the executor's, and which should stop."""

    known_ids: list[str]
    cancel_ids: list[str]


class JobOperation(Wire):
    """Any per-job call: which executor, which job."""

    executor_name: ExecutorName
    job_id: RecordId


class ExecutionLogEntry(Wire):
    """One command of a job: its output so far and, once it ended, its exit code."""

    key: str = Field(max_length=MAX_KEY)
    command: list[Annotated[str, Field(max_length=MAX_COMMAND_WORD)]] = Field(
        max_length=MAX_COMMAND_WORDS
    )
    start_time: datetime
    # Sized to the database's INTEGER columns.
    exit_code: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    # Unbounded here: the request's size limit bounds it, and the store keeps head and tail.
    out: str = ""
    duration_ms: int | None = Field(default=None, ge=0, le=2**31 - 1)

    @classmethod
    def of(cls, entry: LogEntry) -> ExecutionLogEntry:
        """The wire form of a stored log entry."""
        return cls(
            key=entry.key,
            command=list(entry.command),
            start_time=entry.start_time,
            exit_code=entry.exit_code,
            out=entry.out,
            duration_ms=entry.duration_ms,
        )

    def entry(self) -> LogEntry:
        """The log entry this wire form carries."""
        return LogEntry(
            key=self.key,
            command=list(self.command),
            start_time=self.start_time,
            exit_code=self.exit_code,
            out=self.out,
            duration_ms=self.duration_ms,
        )


class AddExecutionLogEntry(JobOperation, ExecutionLogEntry):
    """Append a log entry; the answer is the new entry's id."""


class AddExecutionLogEntries(JobOperation):
    """Append several log entries at once (an offload addition); the answer is their ids.

    An executor sends the entries that queued up behind a request in flight together:
    setup commands end faster than a request takes.
    """

    entries: list[ExecutionLogEntry] = Field(min_length=1, max_length=MAX_LOG_BATCH)


class UpdateExecutionLogEntry(AddExecutionLogEntry):
    """Replace a log entry by id."""

    entry_id: RecordId


class MarkErrored(JobOperation):
    """Finish a job with an error message (markErrored and markFailed)."""

    error_message: str = Field(max_length=MAX_ERROR_MESSAGE)
