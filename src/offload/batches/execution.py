"""What one workspace's execution needs: its input for the helper, and its step cache keys.

A step's cache key covers everything that determines its result: the repository and commit,
the workspace path and how it was fetched, the file matches, the batch change's name and
description, every step up to it (as written in the spec), the values of the secrets
those steps read and the content of the files they mount. Changing step N changes the keys
of N and after, never those before.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from offload.batches.spec.model import BatchSpec, Step
from offload.batches.store import WorkspaceRow


def step_json(step: Step) -> dict[str, Any]:
    """A spec step as the helper reads it (and as its cache key covers it)."""
    return {
        "run": step.run,
        "container": step.container,
        "env": [{"name": e.name, "value": e.value} for e in step.env],
        "files": dict(step.files),
        "outputs": {n: {"value": o.value, "format": o.format} for n, o in step.outputs.items()},
        "if": step.if_,
        "mount": [{"path": m.path, "mountpoint": m.mountpoint} for m in step.mount],
    }


def secret_names(steps: Sequence[Step]) -> list[str]:
    """The environment names the steps take from outside (offload's secrets)."""
    return sorted({e.name for s in steps for e in s.env if e.value is None})


def _repository(workspace: WorkspaceRow) -> dict[str, Any]:
    return {"name": workspace.repo_name, "branch": workspace.branch}


def mounted(path: str, files: Mapping[str, Any]) -> dict[str, Any]:
    """The uploaded files a mount of `path` covers (the file itself, or a directory's)."""
    clean = posixpath.normpath(path)
    return {f: v for f, v in sorted(files.items()) if f == clean or f.startswith(clean + "/")}


def execution_input(
    spec: BatchSpec,
    workspace: WorkspaceRow,
    *,
    start_at: int = 0,
    cached_result: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """The helper's input.json for one workspace."""
    return {
        "repository": _repository(workspace),
        "commit": workspace.commit,
        "path": workspace.path,
        "onlyFetchWorkspace": workspace.only_fetch_workspace,
        "searchResultPaths": list(workspace.file_matches),
        "batchChange": {"name": spec.name, "description": spec.description},
        "steps": [step_json(s) for s in spec.steps],
        "startAt": start_at,
        "cachedResult": dict(cached_result) if cached_result is not None else None,
        "secretNames": secret_names(spec.steps),
        "mountFiles": {p: base64.b64encode(c).decode() for p, c in sorted((files or {}).items())},
    }


class StepKeys:
    """The step cache keys of one spec's steps, for any of its workspaces.

    What the steps contribute is encoded once per spec: a preview of tens of thousands of
    workspaces computes keys for each of them while the user waits. The key of step i is a
    digest of the sorted-key JSON of {batchChange, environment, mounts, onlyFetchWorkspace,
    path, repository, steps[:i+1]}; keys must not change across versions, or every cached
    result would be lost on an upgrade.
    """

    def __init__(
        self,
        spec: BatchSpec,
        secret_values: Mapping[str, str],
        file_digests: Mapping[str, str] | None = None,
    ) -> None:
        self._parts: list[tuple[str, str]] = []
        for i in range(len(spec.steps)):
            steps = spec.steps[: i + 1]
            env = {
                name: hashlib.sha256(secret_values.get(name, "").encode()).hexdigest()
                for name in secret_names(steps)
            }
            mounts = {
                m.path: mounted(m.path, file_digests or {}) for step in steps for m in step.mount
            }
            # The keys sort before and after the workspace's own (onlyFetchWorkspace, path,
            # repository): the spec's JSON without its closing brace, and the steps'.
            head = json.dumps(
                {
                    "batchChange": {"name": spec.name, "description": spec.description},
                    "environment": env,
                    "mounts": mounts,
                },
                sort_keys=True,
            )[:-1]
            tail = json.dumps([step_json(s) for s in steps], sort_keys=True)
            self._parts.append((head, tail))

    def __call__(self, workspace: WorkspaceRow) -> list[str]:
        """The cache key of each step in `workspace`."""
        own = json.dumps(
            {
                "onlyFetchWorkspace": workspace.only_fetch_workspace,
                "path": workspace.path,
                "repository": {
                    "branch": workspace.branch,
                    "commit": workspace.commit,
                    "fileMatches": sorted(workspace.file_matches),
                    "name": workspace.repo_name,
                },
            },
            sort_keys=True,
        )[1:-1]
        keys = []
        for i, (head, tail) in enumerate(self._parts):
            material = f'{head}, {own}, "steps": {tail}}}'
            digest = hashlib.sha256(material.encode()).digest()
            keys.append(base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=") + f"-step-{i}")
        return keys
