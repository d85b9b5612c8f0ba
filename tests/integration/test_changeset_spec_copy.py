"""A spec submitted again unchanged gets the changeset specs of workspaces whose results are
the same copied from the earlier spec (no rendering again), and they equal what rendering
gives; a workspace with another result, or a spec whose text changed, is rendered."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from batchspecs import workspace

from offload.batches.helper import RESULT_PREFIX
from offload.batches.results import Results
from offload.batches.store import BatchSpecRow, BatchStore
from offload.db.base import Database
from offload.queue.record import LogEntry
from offload.secrets.cipher import Cipher, new_key
from offload.secrets.store import Secrets

SPEC = """\
name: copy
on:
  - repository: demo
steps:
  - run: sed -i s/colour/color/ README.md
    container: busybox
changesetTemplate:
  title: {title} ${{{{ steps.path }}}}
  body: Body of ${{{{ repository.name }}}} at ${{{{ steps.path }}}}
  branch: batch/copy-${{{{ replace steps.path "/" "-" }}}}
  commit:
    message: Use color in ${{{{ steps.path }}}}
"""
PATHS = ["svc/a", "svc/b", "svc/c"]
FIELDS = ("workspace_path", "repo_name", "base_rev", "head_ref", "title", "body")


def _logs(path: str, word: str = "color") -> list[LogEntry]:
    """A job's log with the result of step 0 in `path`: README.md says `word`."""
    name = f"{path}/README.md"
    diff = (
        f"diff --git {name} {name}\nindex 1111111..2222222 100644\n--- {name}\n+++ {name}\n"
        f"@@ -1 +1 @@\n-colour\n+{word}\n"
    )
    result = {
        "stepIndex": 0,
        "skipped": False,
        "diff": diff,
        "changedFiles": {"modified": [name], "added": [], "deleted": [], "renamed": []},
        "stdout": "",
        "stderr": "",
        "outputs": {},
    }
    return [
        LogEntry(
            key="step.host.post.0",
            command=["batch-helper", "post", "0"],
            start_time=datetime.now(UTC),
            exit_code=0,
            out=f"stdout: {RESULT_PREFIX}{json.dumps(result)}\n",
        )
    ]


async def _spec(store: BatchStore, title: str = "Use color in") -> BatchSpecRow:
    row = await store.create_spec("alice", "copy", SPEC.format(title=title))
    await store.add_workspaces(row.id, [workspace(p) for p in PATHS])
    return row


async def _changesets(store: BatchStore, spec_id: int) -> list[dict[str, Any]]:
    paths = {w.id: w.path for w in await store.workspaces(spec_id)}
    out = []
    for c in await store.changeset_specs(spec_id):
        row = {"workspace_path": paths[c.workspace_id], **{k: getattr(c, k) for k in FIELDS[1:]}}
        out.append({**row, "diff": c.diff, "commit_message": c.commit_message})
    return sorted(out, key=lambda r: r["workspace_path"])


async def test_an_unchanged_spec_copies_the_changeset_specs_of_the_same_results(
    db: Database,
) -> None:
    store = BatchStore(db)
    results = Results(db, Secrets(db, Cipher(new_key())), store)
    first = await _spec(store)
    for n, w in enumerate(await store.workspaces(first.id)):
        await results.record(first, w, _logs(w.path), True, job_id=100 + n)
    rendered = await _changesets(store, first.id)
    assert [r["title"] for r in rendered] == [f"Use color in {p}" for p in PATHS]

    # svc/c's cached result changes (it ran again since, for another spec with its steps).
    again = await _spec(store)
    other = next(w for w in await store.workspaces(first.id) if w.path == "svc/c")
    keys = await results._keys(first, await first.parsed(), other)
    await store.cache("alice", {keys[-1]: _result_of(_logs("svc/c", "colr"))}, job_id=500)
    pending = await results.apply(again, await again.parsed(), await store.workspaces(again.id))
    assert pending == []
    copied = await _changesets(store, again.id)
    assert [c for c in copied if c["workspace_path"] != "svc/c"] == [
        r for r in rendered if r["workspace_path"] != "svc/c"
    ]
    (c,) = [c for c in copied if c["workspace_path"] == "svc/c"]
    assert "+colr" in c["diff"] and "+color" not in c["diff"]

    # A spec whose text changed (its title template) renders every changeset spec again.
    changed = await _spec(store, title="Spell color in")
    await results.apply(changed, await changed.parsed(), await store.workspaces(changed.id))
    titles = [c["title"] for c in await _changesets(store, changed.id)]
    assert titles == [f"Spell color in {p}" for p in PATHS]

    # The spec submitted a third time copies from the second, svc/c's new result included.
    # That they are copied, not rendered from the cache: an entry's value changed in place
    # (which offload never does: a new result comes with its job) does not show in them.
    a = next(w for w in await store.workspaces(first.id) if w.path == "svc/a")
    a_key = (await results._keys(first, await first.parsed(), a))[-1]
    await db.fetch(
        "UPDATE batch_step_cache SET value = :v WHERE key = :k",
        {"v": json.dumps(_result_of(_logs("svc/a", "tampered"))), "k": a_key},
    )
    third = await _spec(store)
    await results.apply(third, await third.parsed(), await store.workspaces(third.id))
    assert await _changesets(store, third.id) == copied


def _result_of(logs: list[LogEntry]) -> dict[str, Any]:
    line = logs[0].out.partition(": ")[2]
    result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
    return result
