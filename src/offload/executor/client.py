"""The executor's side of the protocol: the queue verbs as HTTP calls to the server.

It implements the consumer loop's QueueStore, so the worker's loop runs unchanged here.
Records get local ids (the same id can exist in two queues); the client maps them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import platform
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import ValidationError

from offload import __version__
from offload.executor import uploads
from offload.executor.uploads import Digest
from offload.http import client
from offload.protocol import routes
from offload.protocol.wire import (
    DequeueRequest,
    ExecutionLogEntry,
    HeartbeatRequest,
    HeartbeatResponse,
    Job,
)
from offload.queue.record import Heartbeat, Lease, LogEntry, NotOwned, Record
from offload.queue.states import State

log = logging.getLogger(__name__)

# Server errors and outages on per-job calls are retried this many times, with backoff
# (0.5 s doubling to 15 s: about 45 s in all). That outlasts a server restart and a queue's
# stalled_after (25 s): a job whose step ended must not fail because its logs could not be
# written while the server was down, as long as the job is still its executor's.
RETRIES = 8


class Unauthorized(RuntimeError):
    """The server refused the executor token: retrying cannot help."""


class ServerError(RuntimeError):
    """The server answered with an error the executor cannot act on."""


@dataclass(frozen=True)
class Held:
    """What the client remembers of a job it handed to the consumer loop."""

    queue: str
    job_id: int
    token: str
    # A job of another's bundle: the consumer loop does not know it, its handler reports it.
    rider: bool = False


def git_version() -> str:
    """The version of the executor's git, for its heartbeat."""
    try:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False)
        return out.stdout.strip().removeprefix("git version ")
    except OSError:
        return ""


class ExecutorClient:
    """Queue verbs over HTTP, for one executor."""

    def __init__(
        self,
        base_url: str,
        token: str,
        queues: Sequence[str],
        *,
        name: str,
        runtime: str = "",
        limits: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        retry_delay: float = 0.5,
        queue_path: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # A queue of its own (a batch spec run on the user's machine): dequeue and heartbeat
        # go to `{queue_path}/dequeue` and `/heartbeat`; job calls stay the protocol's.
        self.queue_path = queue_path
        self.token = token
        self.queues = list(queues)
        self.name = name
        self.runtime = runtime
        # What each job may use, for the executors page (None: not reported).
        self.limits = dict(limits) if limits is not None else None
        self.retry_delay = retry_delay
        self.http = http or client(self.base_url, timeout=60.0)
        self._ids = itertools.count(1)
        self._held: dict[int, Held] = {}
        # Bundled jobs the server no longer gives this executor ("lost") or wants stopped
        # ("canceled"), by local id, as heartbeats tell; shared with the heartbeat twin.
        self._stopped: dict[int, str] = {}
        self._git_version = git_version()

    async def close(self) -> None:
        """Close connections."""
        await self.http.aclose()

    def _executor_headers(self) -> dict[str, str]:
        # A local run's queue is its user's batch spec: it calls with the user's access token.
        scheme = "token" if self.queue_path else "token-executor"
        return {"Authorization": f"{scheme} {self.token}"} if self.token else {}

    def _job_headers(self, held: Held) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {held.token}",
            routes.JOB_ID_HEADER: str(held.job_id),
            routes.EXECUTOR_NAME_HEADER: self.name,
        }

    def twin(self) -> ExecutorClient:
        """A client like this one with its own connections that shares its table of held
        jobs: for the heartbeat thread, which runs its own event loop."""
        other = ExecutorClient(
            self.base_url,
            self.token,
            self.queues,
            name=self.name,
            runtime=self.runtime,
            limits=self.limits,
            retry_delay=self.retry_delay,
            queue_path=self.queue_path,
        )
        other._held = self._held
        other._stopped = self._stopped
        return other

    @contextlib.asynccontextmanager
    async def heartbeat_store(self) -> AsyncIterator[ExecutorClient]:
        """A twin for the consumer's heartbeat thread, closed when the thread ends."""
        own = self.twin()
        try:
            yield own
        finally:
            await own.close()

    def job_headers_for(self, job: Job) -> dict[str, str]:
        """The headers of calls made for `job` (git through the proxy, files)."""
        return self._job_headers(Held(job.queue, job.id, job.token))

    def held(self, lease: Lease) -> Held:
        """The server-side identity of a local lease."""
        return self._held[lease.id]

    def ride(self, job: Job) -> Lease:
        """Hold a job that came in another's bundle: heartbeats keep it, its handler reports
        it (its logs and outcome go out with its own id and token)."""
        local = next(self._ids)
        queue = job.queue or self.queues[0]
        self._held[local] = Held(queue, job.id, job.token, rider=True)
        return Lease(queue, local, self.name, job.token)

    def forget(self, lease: Lease) -> None:
        """Drop a bundled job the server no longer gives this executor."""
        self._held.pop(lease.id, None)
        self._stopped.pop(lease.id, None)

    def stopped(self, lease: Lease) -> str:
        """Why a bundled job must stop ("lost", "canceled"), or "" while it may go on."""
        return self._stopped.get(lease.id, "")

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code == 401:
            raise Unauthorized(
                f"the server at {self.base_url} refused the executor token ({what}): "
                f"{response.text.strip()}; check EXECUTOR_REGISTRATION_TOKEN against "
                "`offload executors token` on the server"
            )
        if response.status_code >= 400:
            raise ServerError(f"{what}: HTTP {response.status_code}: {response.text.strip()[:500]}")

    async def check_auth(self) -> None:
        """Fail fast with Unauthorized when the token is wrong."""
        response = await self.http.get(routes.AUTH_CHECK, headers=self._executor_headers())
        self._check(response, "auth check")

    # -- QueueStore -----------------------------------------------------------------------

    async def dequeue(self, holder: str, *, limit: int = 1, wait: float = 0.0) -> list[Record]:
        """Ask the server for one job (the protocol hands out one per call)."""
        body = DequeueRequest(
            executor_name=holder,
            queues=self.queues if len(self.queues) > 1 else None,
            version=__version__,
            wait=wait,
        )
        path = (
            f"{self.queue_path}/dequeue"
            if self.queue_path
            else routes.dequeue(None if len(self.queues) > 1 else self.queues[0])
        )
        response = await self.http.post(
            path,
            json=body.dump(),
            headers=self._executor_headers(),
            timeout=httpx.Timeout(60.0 + wait),
        )
        if response.status_code == 204:
            return []
        self._check(response, "dequeue")
        raw = response.json()
        try:
            job = Job.model_validate(raw)
        except ValidationError as exc:
            await self._refuse(raw, exc)
            return []
        local = next(self._ids)
        self._held[local] = Held(job.queue or self.queues[0], job.id, job.token)
        now = datetime.now(UTC)
        record = Record(
            queue=job.queue or self.queues[0],
            id=local,
            state=State.PROCESSING,
            queued_at=now,
            started_at=now,
            last_heartbeat_at=now,
            finished_at=None,
            process_after=None,
            num_resets=0,
            num_failures=0,
            worker_hostname=holder,
            cancel=False,
            failure_message=None,
            lease_token=job.token,
            fields={"job": job},
            units=1 + len(job.bundle),
        )
        return [record]

    async def _refuse(self, raw: Any, exc: ValidationError) -> None:
        """Fail a job whose payload this executor cannot read, so no executor loops on it."""
        message = f"malformed job payload: {exc.error_count()} error(s): " + "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )
        log.error("%s", message)
        if not isinstance(raw, dict) or "id" not in raw or "token" not in raw:
            return
        held = Held(str(raw.get("queue") or self.queues[0]), int(raw["id"]), str(raw["token"]))
        response = await self.http.post(
            routes.job_call(held.queue, "markFailed"),
            json={"executorName": self.name, "jobId": held.job_id, "errorMessage": message},
            headers=self._job_headers(held),
        )
        if response.status_code >= 400:
            log.error("could not fail job %s: HTTP %s", held.job_id, response.status_code)

    async def heartbeat(self, holder: str, ids: Sequence[int]) -> Heartbeat:
        """Report running jobs; learn which are lost and which to cancel."""
        riders = [i for i, h in list(self._held.items()) if h.rider and i not in self._stopped]
        by_uid = {
            f"{self._held[i].job_id}-{self._held[i].queue}": i
            for i in [*ids, *riders]
            if i in self._held
        }
        body = HeartbeatRequest(
            executor_name=holder,
            job_ids=list(by_uid),
            queue_names=self.queues,
            os=platform.system().lower(),
            architecture=platform.machine(),
            executor_version=__version__,
            git_version=self._git_version,
            runtime=self.runtime,
            limits=self.limits,
        )
        path = f"{self.queue_path}/heartbeat" if self.queue_path else routes.heartbeat()
        response = await self.http.post(path, json=body.dump(), headers=self._executor_headers())
        self._check(response, "heartbeat")
        answer = HeartbeatResponse.model_validate(response.json())
        known = {by_uid[u] for u in answer.known_ids if u in by_uid}
        canceled = {by_uid[u] for u in answer.cancel_ids if u in by_uid}
        for rider in riders:
            if rider not in self._held:
                continue  # reported while the heartbeat was on its way
            if rider not in known:
                self._stopped[rider] = "lost"
            elif rider in canceled:
                self._stopped[rider] = "canceled"
        return Heartbeat(
            known_ids=sorted(by_uid[u] for u in answer.known_ids if u in by_uid),
            cancel_ids=sorted(by_uid[u] for u in answer.cancel_ids if u in by_uid),
        )

    async def _job_call(
        self, lease: Lease, verb: str, extra: dict[str, Any] | None = None
    ) -> httpx.Response:
        """A per-job call, retried through server errors and outages; NotOwned on 404."""
        held = self._held[lease.id]
        body = {"executorName": self.name, "jobId": held.job_id, **(extra or {})}
        delay = self.retry_delay
        for attempt in range(1, RETRIES + 1):
            try:
                response = await self.http.post(
                    routes.job_call(held.queue, verb), json=body, headers=self._job_headers(held)
                )
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise ServerError(f"{verb} of job {held.job_id}: {exc}") from exc
                log.warning(
                    "%s of job %s failed (%s); retrying in %.1fs", verb, held.job_id, exc, delay
                )
            else:
                # 404: not ours any more; 401: its token was revoked (the job ended or was
                # handed to someone else). Either way the job is lost to this executor.
                if response.status_code in (401, 404):
                    raise NotOwned(Lease(held.queue, held.job_id, self.name, held.token), verb)
                if response.status_code < 500:
                    self._check(response, f"{verb} of job {held.job_id}")
                    return response
                if attempt == RETRIES:
                    self._check(response, f"{verb} of job {held.job_id}")
                log.warning(
                    "%s of job %s: server answered %s; retrying in %.1fs",
                    verb,
                    held.job_id,
                    response.status_code,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)
        raise AssertionError("unreachable")

    async def _finish(self, lease: Lease, verb: str, extra: dict[str, Any] | None = None) -> None:
        try:
            await self._job_call(lease, verb, extra)
        finally:
            if self._held.get(lease.id, Held("", 0, "")).rider:
                # A rider is reported once, by its handler: whatever the answer, it is done.
                self._held.pop(lease.id, None)
                self._stopped.pop(lease.id, None)
        self._held.pop(lease.id, None)

    async def mark_complete(self, lease: Lease) -> State:
        """The job succeeded."""
        await self._finish(lease, "markComplete")
        return State.COMPLETED

    async def mark_errored(self, lease: Lease, message: str) -> State:
        """The job failed and may be retried."""
        await self._finish(lease, "markErrored", {"errorMessage": message})
        return State.ERRORED

    async def mark_failed(self, lease: Lease, message: str) -> State:
        """The job failed for good (or was canceled)."""
        await self._finish(lease, "markFailed", {"errorMessage": message})
        return State.FAILED

    async def release(self, lease: Lease) -> None:
        """Hand an unfinished job back."""
        await self._finish(lease, "release")

    async def upload(self, lease: Lease, fd: int, digest: Digest) -> dict[str, Any]:
        """Send the file at `fd` (its first `digest.size` bytes) to the upload route as the
        job's; retried from its start through outages. UploadRefused when the server refuses
        it (too large, a checksum that differs), NotOwned when the job is no longer ours."""
        held = self._held[lease.id]
        headers = {
            **self._job_headers(held),
            routes.UPLOAD_SHA256_HEADER: digest.sha256,
            "Content-Length": str(digest.size),
            "Content-Type": "application/octet-stream",
        }
        delay = self.retry_delay
        for attempt in range(1, RETRIES + 1):
            try:
                response = await self.http.post(
                    routes.UPLOADS, content=uploads.chunks(fd, digest.size), headers=headers
                )
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise ServerError(f"upload of job {held.job_id}: {exc}") from exc
                log.warning("upload of job %s failed (%s); retrying", held.job_id, exc)
            else:
                if response.status_code in (401, 404):
                    raise NotOwned(Lease(held.queue, held.job_id, self.name, held.token), "upload")
                if 400 <= response.status_code < 500:
                    raise uploads.UploadRefused(
                        f"the server refused the upload ({response.status_code}): "
                        f"{_error_text(response)}"
                    )
                if response.status_code < 300:
                    answer: dict[str, Any] = response.json()
                    return answer
                if attempt == RETRIES:
                    self._check(response, f"upload of job {held.job_id}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)
        raise AssertionError("unreachable")

    # -- logs -----------------------------------------------------------------------------

    @staticmethod
    def _entry(entry: LogEntry) -> dict[str, Any]:
        return ExecutionLogEntry.of(entry).dump()

    async def add_log_entry(self, lease: Lease, entry: LogEntry) -> int:
        """Append a log entry to the job; the entry's id."""
        response = await self._job_call(lease, "addExecutionLogEntry", self._entry(entry))
        return int(response.json())

    async def add_log_entries(self, lease: Lease, entries: Sequence[LogEntry]) -> list[int]:
        """Append several log entries to the job in one call; their ids, in order."""
        body = {"entries": [self._entry(entry) for entry in entries]}
        response = await self._job_call(lease, "addExecutionLogEntries", body)
        return [int(i) for i in response.json()]

    async def update_log_entry(self, lease: Lease, entry_id: int, entry: LogEntry) -> None:
        """Replace a log entry of the job."""
        await self._job_call(
            lease, "updateExecutionLogEntry", {**self._entry(entry), "entryId": entry_id}
        )


def _error_text(response: httpx.Response) -> str:
    """The message of an error answer: its JSON `detail` or `error`, else its text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body)[:500]
    return str(body)[:500]
