"""JSON bodies of the executor protocol, with the field names executors already speak."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from offload.queue.record import LogEntry

# The most log entries one addExecutionLogEntries call may carry.
MAX_LOG_BATCH = 100


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


class DequeueRequest(Wire):
    """Ask for one job of a queue (or of any of `queues`)."""

    executor_name: str
    queues: list[str] | None = None
    version: str = ""
    num_cpus: int = Field(default=0, alias="numCPUs")
    memory: str = ""
    disk_space: str = ""
    # offload: wait up to this many seconds for a job before answering 204 (long poll).
    wait: float = 0.0


class QueueJobIds(Wire):
    """The running jobs of one queue, in a multi-queue heartbeat."""

    queue_name: str
    job_ids: list[str]


class HeartbeatRequest(Wire):
    """An executor's periodic report: who it is and which jobs it runs."""

    version: str = "V2"
    executor_name: str
    job_ids: list[str] = Field(default_factory=list)
    job_ids_by_queue: list[QueueJobIds] = Field(default_factory=list)
    queue_names: list[str] = Field(default_factory=list)
    os: str = ""
    architecture: str = ""
    docker_version: str = ""
    executor_version: str = ""
    git_version: str = ""
    ignite_version: str = ""
    src_cli_version: str = ""
    prometheus_metrics: str = ""
    # offload: which runtime isolates this executor's jobs.
    runtime: str = ""

    @field_validator("job_ids", mode="before")
    @classmethod
    def _ids_as_text(cls, value: object) -> object:
        # Executors send ids as numbers or strings; both mean the same job.
        return [str(v) for v in value] if isinstance(value, list) else value

    def ids_by_queue(self, queue: str | None) -> dict[str, list[int]]:
        """The reported job ids by queue; `queue` names the one a single-queue route serves."""
        if queue is not None:
            return {queue: [int(i) for i in self.job_ids]}
        # Multi-queue executors name jobs "<id>-<queue>" or group them by queue.
        ids: dict[str, list[int]] = {}
        for uid in self.job_ids:
            job_id, _, name = uid.partition("-")
            ids.setdefault(name, []).append(int(job_id))
        for group in self.job_ids_by_queue:
            ids.setdefault(group.queue_name, []).extend(int(i) for i in group.job_ids)
        return ids


class HeartbeatResponse(Wire):
    """Which of the reported jobs are still the executor's, and which should stop."""

    known_ids: list[str]
    cancel_ids: list[str]


class JobOperation(Wire):
    """Any per-job call: which executor, which job."""

    executor_name: str
    job_id: int


class ExecutionLogEntry(Wire):
    """One command of a job: its output so far and, once it ended, its exit code."""

    key: str
    command: list[str]
    start_time: datetime
    exit_code: int | None = None
    out: str = ""
    duration_ms: int | None = None

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

    entry_id: int


class MarkErrored(JobOperation):
    """Finish a job with an error message (markErrored and markFailed)."""

    error_message: str
