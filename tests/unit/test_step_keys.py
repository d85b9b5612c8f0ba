"""Step cache keys: what changes them, and that they stay what earlier versions stored.

A key that changed between versions would make every cached result unreachable after an
upgrade, so keys are held both to a pinned value and to their plain definition.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from offload.batches.execution import StepKeys, mounted, secret_names, step_json
from offload.batches.spec.model import BatchSpec
from offload.batches.spec.reader import parse_spec
from offload.batches.store import WorkspaceRow

SPEC = """\
name: pinned
description: Keys of this spec, as offload has always computed them.
on:
  - repository: demo
steps:
  - run: echo "$TOKEN" > token.txt
    container: alpine:3
    env:
      - TOKEN
      - LEVEL: high
  - run: cat /m/config.yaml >> README.md
    container: alpine:3
    mount:
      - path: config.yaml
        mountpoint: /m/config.yaml
    outputs:
      size:
        value: ${{ len step.modified_files }}
        format: text
changesetTemplate:
  title: t
  branch: b
  commit:
    message: m
"""
SECRETS = {"TOKEN": "s3cret"}
DIGESTS = {"config.yaml": "sha256:abc"}
WORKSPACE = WorkspaceRow(
    id=1,
    batch_spec_id=1,
    repo_name="github.com/acme/ünïcode",
    branch="main",
    commit="0123456789abcdef0123456789abcdef01234567",
    path="services/api",
    file_matches=("services/api/b.go", "services/api/a.go"),
    only_fetch_workspace=True,
    ignored=False,
    skipped=False,
    cached_steps=0,
    cached_result_found=False,
)


def defined_keys(
    spec: BatchSpec, workspace: WorkspaceRow, secrets: dict[str, str], digests: dict[str, str]
) -> list[str]:
    """The keys by their definition: a digest of everything up to each step, as sorted JSON."""
    keys = []
    for i in range(len(spec.steps)):
        steps = spec.steps[: i + 1]
        material = {
            "repository": {
                "name": workspace.repo_name,
                "branch": workspace.branch,
                "commit": workspace.commit,
                "fileMatches": sorted(workspace.file_matches),
            },
            "path": workspace.path,
            "onlyFetchWorkspace": workspace.only_fetch_workspace,
            "batchChange": {"name": spec.name, "description": spec.description},
            "steps": [step_json(s) for s in steps],
            "environment": {
                n: hashlib.sha256(secrets.get(n, "").encode()).hexdigest()
                for n in secret_names(steps)
            },
            "mounts": {m.path: mounted(m.path, digests) for s in steps for m in s.mount},
        }
        digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).digest()
        keys.append(base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=") + f"-step-{i}")
    return keys


def test_keys_are_the_ones_earlier_versions_stored() -> None:
    keys = StepKeys(parse_spec(SPEC), SECRETS, DIGESTS)(WORKSPACE)
    assert keys == ["9PVm3uQQO49UjIPfIb0XsA-step-0", "PjlxnkPj6DtCXyY_m3BHpg-step-1"]


text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@given(
    repo=text,
    branch=text,
    path=text,
    matches=st.lists(text, max_size=4),
    only=st.booleans(),
    token=text,
    digest=text,
)
def test_keys_of_any_workspace_follow_their_definition(
    repo: str, branch: str, path: str, matches: list[str], only: bool, token: str, digest: str
) -> None:
    spec = parse_spec(SPEC)
    workspace = dataclasses.replace(
        WORKSPACE,
        repo_name=repo,
        branch=branch,
        path=path,
        file_matches=tuple(matches),
        only_fetch_workspace=only,
    )
    secrets, digests = {"TOKEN": token}, {"config.yaml": digest}
    assert StepKeys(spec, secrets, digests)(workspace) == defined_keys(
        spec, workspace, secrets, digests
    )


def test_a_change_reaches_the_keys_of_its_step_and_after_only() -> None:
    spec = parse_spec(SPEC)
    first, second = StepKeys(spec, SECRETS, DIGESTS)(WORKSPACE)

    # The second step's command, the mounted file's content: only the second key.
    edited = parse_spec(SPEC.replace(">> README.md", ">> NOTES.md"))
    assert StepKeys(edited, SECRETS, DIGESTS)(WORKSPACE)[0] == first
    assert StepKeys(edited, SECRETS, DIGESTS)(WORKSPACE)[1] != second
    moved = StepKeys(spec, SECRETS, {"config.yaml": "sha256:def"})(WORKSPACE)
    assert moved[0] == first and moved[1] != second

    # The secret the first step reads, or another workspace: both keys.
    rotated = StepKeys(spec, {"TOKEN": "rotated"}, DIGESTS)(WORKSPACE)
    assert rotated[0] != first and rotated[1] != second
    other = dataclasses.replace(WORKSPACE, path="services/web")
    assert set(StepKeys(spec, SECRETS, DIGESTS)(other)).isdisjoint({first, second})
