"""Step results: read from a finished job's log, kept in the step cache, made into changeset specs.

The executor's `post` step prints each step's result as one `offload-step-result:` line (see
helper.py). When a workspace job ends, every result it printed is stored under its step's
cache key (a failed job keeps its finished steps, so a retry resumes after them), and a
completed job's last result becomes the workspace's changeset specs.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from offload.batches import changeset_spec, diffs
from offload.batches.execution import StepKeys, secret_names
from offload.batches.helper import RESULT_PREFIX, decode_diff
from offload.batches.spec.model import Author, BatchSpec
from offload.batches.store import BatchSpecRow, BatchStore, WorkspaceRow
from offload.db.base import Database
from offload.dispatch.queue import FinishError
from offload.queue.consumer import JobFailed
from offload.queue.record import LogEntry
from offload.secrets.cipher import CipherError
from offload.secrets.store import Secrets, UnknownSecret

log = logging.getLogger(__name__)

DEFAULT_AUTHOR_EMAIL = "batch-changes@offload.local"
# How many cache keys one lookup statement carries.
_CHUNK = 400


class ResultError(FinishError):
    """A finished job's results cannot be used; the workspace fails with this message."""


def default_author(user: str) -> Author:
    """The commit author when the changeset template names none."""
    return Author(name=user, email=DEFAULT_AUTHOR_EMAIL)


def step_results(logs: Sequence[LogEntry]) -> dict[int, dict[str, Any]]:
    """Each step's result printed in a job's log, by step index (the latest attempt wins)."""
    out: dict[int, dict[str, Any]] = {}
    for entry in logs:
        if not entry.key.startswith("step.host.post."):
            continue
        for raw in entry.out.splitlines():
            # Log lines carry the stream they came from ("stdout: ...").
            line = raw.partition(": ")[2] if raw.startswith(("stdout: ", "stderr: ")) else raw
            if line.startswith(RESULT_PREFIX):
                try:
                    result = json.loads(line[len(RESULT_PREFIX) :])
                except ValueError as exc:
                    raise ResultError(
                        f"the result of {entry.key} is cut short or malformed ({exc}); a diff "
                        "this large does not fit in a log entry"
                    ) from exc
                out[int(result["stepIndex"])] = result
    return out


def result_version(key: str, job_id: int | None) -> str | None:
    """Which cached result a workspace's changeset specs come from: its key and the job that
    wrote it (a key's result is replaced when a job with its key runs again); None when the
    writer is not known (entries from before 0012), and they are never copied."""
    return None if job_id is None else f"{key}:{job_id}"


def stored_diff(diff: bytes) -> str:
    """A diff as the changeset_specs table keeps it: text, or base64 marked as such."""
    try:
        return diff.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(diff).decode()


def loaded_diff(text: str) -> bytes:
    """The bytes of a stored diff."""
    if text.startswith("base64:"):
        return base64.b64decode(text[len("base64:") :])
    return text.encode("utf-8")


class Results:
    """Step cache lookups and changeset specs for one database."""

    def __init__(self, db: Database, secrets: Secrets, store: BatchStore | None = None) -> None:
        self.db = db
        self.secrets = secrets
        self.store = store or BatchStore(db)

    async def _step_keys(self, row: BatchSpecRow, spec: BatchSpec) -> StepKeys:
        """Keys cover, besides the workspace, the secrets' values (as the spec's namespace
        sees them) and mounted files' digests; ResultError if a secret cannot be read."""
        try:
            values = await self.secrets.values_for_keys(row.user_name, secret_names(spec.steps))
        except (UnknownSecret, CipherError) as exc:
            raise ResultError(f"steps read {exc}") from exc
        return StepKeys(spec, values, await self.store.file_digests(row.id))

    async def _keys(self, row: BatchSpecRow, spec: BatchSpec, workspace: WorkspaceRow) -> list[str]:
        return (await self._step_keys(row, spec))(workspace)

    async def apply(
        self, row: BatchSpecRow, spec: BatchSpec, workspaces: Sequence[WorkspaceRow]
    ) -> list[WorkspaceRow]:
        """Answer what the cache can; the workspaces that still need to run, in order.

        Thousands of workspaces go through here while a user waits for the preview: the
        lookups, the cache marks and the changeset specs each go to the database in bulk.
        """
        try:
            step_keys = await self._step_keys(row, spec)
        except ResultError as exc:
            raise JobFailed(str(exc)) from exc
        keys = {w.id: step_keys(w) for w in workspaces}
        every = [k for ks in keys.values() for k in ks]
        found: dict[str, int | None] = {}
        for start in range(0, len(every), _CHUNK):
            chunk = every[start : start + _CHUNK]
            found.update(await self.store.cached_writers(row.user_name, chunk))
        # The same spec submitted again: its workspaces with the same results get the earlier
        # spec's changeset specs copied in SQL, not rendered again (45,000 of them take
        # seconds to render).
        earlier = await self.store.earlier_same_spec(row)
        reusable = await self.store.result_keys(earlier) if earlier is not None else set()
        pending = []
        marks: list[tuple[int, int, bool]] = []
        result_keys: dict[int, str] = {}
        copied: list[int] = []
        rendered: list[WorkspaceRow] = []
        for workspace in workspaces:
            hits = 0
            for key in keys[workspace.id]:
                if key not in found:
                    break
                hits += 1
            if hits == len(spec.steps):
                marks.append((workspace.id, hits, True))
                version = result_version(keys[workspace.id][-1], found[keys[workspace.id][-1]])
                if version is not None:
                    result_keys[workspace.id] = version
                if version is not None and (version, workspace.branch) in reusable:
                    copied.append(workspace.id)
                else:
                    rendered.append(workspace)
                continue
            if hits:
                marks.append((workspace.id, hits, False))
            pending.append(workspace)
        # Only the workspaces whose changeset specs are rendered need their results' values.
        lasts = [keys[w.id][-1] for w in rendered]
        values: dict[str, Any] = {}
        for start in range(0, len(lasts), _CHUNK):
            values.update(await self.store.cached(row.user_name, lasts[start : start + _CHUNK]))
        specs: dict[int | None, list[dict[str, Any]]] = {}
        gone: set[int] = set()
        for workspace in rendered:
            last = values.get(keys[workspace.id][-1])
            if last is None:
                gone.add(workspace.id)  # evicted between the two reads: it runs again
                continue
            specs[workspace.id] = self._changeset_specs(row, spec, workspace, last)
        if gone:
            marks = [m for m in marks if m[0] not in gone]
            waiting = gone | {w.id for w in pending}
            pending = [w for w in workspaces if w.id in waiting]
            for workspace_id in gone:
                result_keys.pop(workspace_id, None)
        await self.store.set_cached(marks, result_keys)
        if earlier is not None and copied:
            await self.store.copy_changeset_specs(earlier, row.id, copied)
        await self.store.add_changeset_specs(row.id, specs)
        return pending

    async def cached_result(
        self, row: BatchSpecRow, spec: BatchSpec, workspace: WorkspaceRow
    ) -> dict[str, Any] | None:
        """The cached result a job resumes from (of its last cached step), if any."""
        if workspace.cached_steps == 0:
            return None
        key = (await self._keys(row, spec, workspace))[workspace.cached_steps - 1]
        found = await self.store.cached(row.user_name, [key])
        return found.get(key)

    async def record(
        self,
        row: BatchSpecRow,
        workspace: WorkspaceRow,
        logs: Sequence[LogEntry],
        ok: bool,
        *,
        job_id: int | None = None,
    ) -> None:
        """Keep a finished job's step results (as written by job `job_id`); a completed one
        also gets its changeset specs."""
        spec = await row.parsed()
        results = step_results(logs)
        keys = await self._keys(row, spec, workspace)
        await self.store.cache(
            row.user_name,
            {keys[i]: result for i, result in results.items() if i < len(keys)},
            job_id=job_id,
        )
        if not ok:
            return
        last = len(spec.steps) - 1
        if last not in results:
            raise ResultError(
                f"the job of workspace {workspace.repo_name}:{workspace.path or '/'} finished "
                f"without a result for step {last}"
            )
        specs = self._changeset_specs(row, spec, workspace, results[last])
        version = result_version(keys[last], job_id)
        await self.store.replace_changeset_specs(row.id, workspace.id, specs, result_key=version)

    @staticmethod
    def _changeset_specs(
        row: BatchSpecRow,
        spec: BatchSpec,
        workspace: WorkspaceRow,
        result: Mapping[str, Any],
    ) -> list[dict[str, Any]]:
        """The changeset spec rows of a workspace's final step result."""
        files = result.get("changedFiles") or {}
        outcome = changeset_spec.WorkspaceResult(
            repo_name=workspace.repo_name,
            base_ref=workspace.branch,
            base_rev=workspace.commit,
            path=workspace.path,
            diff=decode_diff(result),
            outputs=dict(result.get("outputs") or {}),
            changed=diffs.ChangedFiles(
                modified=tuple(files.get("modified", ())),
                added=tuple(files.get("added", ())),
                deleted=tuple(files.get("deleted", ())),
                renamed=tuple(files.get("renamed", ())),
            ),
            search_result_paths=workspace.file_matches,
        )
        try:
            drafts = changeset_spec.build_changesets(
                spec, outcome, default_author=default_author(row.user_name)
            )
        except changeset_spec.ChangesetSpecError as exc:
            raise ResultError(str(exc)) from exc
        return [
            {
                "repo_name": d.repo_name,
                "kind": "branch",
                "external_id": None,
                "base_ref": d.base_ref,
                "base_rev": d.base_rev,
                "head_ref": d.head_ref,
                "title": d.title,
                "body": d.body,
                "commit_message": d.commit_message,
                "author_name": d.author_name,
                "author_email": d.author_email,
                "published": d.published,
                "diff": stored_diff(d.diff),
                "diff_added": d.diff_added,
                "diff_deleted": d.diff_deleted,
            }
            for d in drafts
        ]

    async def import_specs(self, row: BatchSpecRow, spec: BatchSpec) -> None:
        """Changeset specs that track existing pull requests (importChangesets)."""
        drafts = changeset_spec.import_drafts(spec)
        await self.store.replace_changeset_specs(
            row.id,
            None,
            [
                {
                    "repo_name": d.repo_name,
                    "kind": "existing",
                    "external_id": d.external_id,
                    "base_ref": "",
                    "base_rev": "",
                    "head_ref": "",
                    "title": "",
                    "body": "",
                    "commit_message": "",
                    "author_name": "",
                    "author_email": "",
                    "published": None,
                    "diff": "",
                    "diff_added": 0,
                    "diff_deleted": 0,
                }
                for d in drafts
            ],
        )
