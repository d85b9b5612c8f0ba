"""A spec's changesets in full, as `offload batch preview --diff` and `--json` read them."""

from __future__ import annotations

import base64
from typing import Any

from batchspecs import minimal

from offload.batches.results import stored_diff
from offload.batches.service import BatchService
from offload.db.base import Database

TEXT = b"diff --git README.md README.md\n--- README.md\n+++ README.md\n@@ -1 +1 @@\n-a\n+b\n"
# A Latin-1 file: its diff is not UTF-8, and must reach the user byte for byte.
LATIN1 = (
    b"diff --git notes.txt notes.txt\n--- notes.txt\n+++ notes.txt\n@@ -1 +1 @@\n"
    b"-caf\xe9\n+th\xe9\n"
)


def changeset(repo: str, diff: bytes) -> dict[str, Any]:
    return {
        "repo_name": repo,
        "kind": "branch",
        "external_id": None,
        "base_ref": "main",
        "base_rev": "a" * 40,
        "head_ref": "batch/fix",
        "title": f"Fix {repo}",
        "body": f"Why {repo}\n\nchanges",
        "commit_message": f"fix {repo}",
        "author_name": "alice",
        "author_email": "alice@example.com",
        "published": "draft",
        "diff": stored_diff(diff),
        "diff_added": 1,
        "diff_deleted": 1,
    }


async def test_changesets_come_a_page_at_a_time_with_their_exact_diffs(db: Database) -> None:
    service = BatchService(db)
    row = await service.submit("alice", minimal("pages"))
    await service.store.add_changeset_specs(
        row.id, {None: [changeset("text", TEXT), changeset("latin", LATIN1)]}
    )
    (first,) = await service.changesets(row.rand_id, after=0, limit=1)
    assert first["repo"] == "text" and first["diff"] == TEXT.decode()
    assert first["diffBase64"] is None
    assert (first["title"], first["body"], first["commitMessage"]) == (
        "Fix text",
        "Why text\n\nchanges",
        "fix text",
    )
    assert first["author"] == {"name": "alice", "email": "alice@example.com"}
    assert (first["branch"], first["baseRef"], first["published"]) == ("batch/fix", "main", "draft")
    (second,) = await service.changesets(row.rand_id, after=first["specId"], limit=1)
    assert second["repo"] == "latin"
    assert base64.b64decode(second["diffBase64"]) == LATIN1
    assert "caf\ufffd" in second["diff"]  # readable, and marked as not exact
    assert await service.changesets(row.rand_id, after=second["specId"], limit=1) == []
