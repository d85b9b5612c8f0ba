"""The plan a preview shows: which operations apply runs for each changeset."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from offload.batches.changesets import ChangesetRow, plan
from offload.batches.store import ChangesetSpecRow


def spec(id: int, repo: str = "r", **fields: Any) -> ChangesetSpecRow:
    base = ChangesetSpecRow(
        id=id,
        batch_spec_id=1,
        workspace_id=id,
        repo_name=repo,
        kind="branch",
        external_id=None,
        base_ref="main",
        base_rev="a" * 40,
        head_ref="batch/x",
        title="Title",
        body="Body",
        commit_message="msg",
        author_name="n",
        author_email="e",
        published=True,
        diff="diff --git a b\n",
        diff_added=1,
        diff_deleted=1,
    )
    return replace(base, **fields)


def changeset(id: int, spec_id: int | None, repo: str = "r", **fields: Any) -> ChangesetRow:
    base = ChangesetRow(
        id=id,
        state="completed",
        failure_message=None,
        batch_change_id=1,
        repo_name=repo,
        spec_id=spec_id,
        previous_spec_id=None,
        owned=True,
        publication_state="published",
        external_id="7",
        external_state="open",
        external_url=None,
        review_state=None,
        checks_state=None,
        head_ref="batch/x",
        pushed_commit="c" * 40,
        closing=False,
        detached=False,
        synced_at=None,
    )
    return replace(base, **fields)


def actions(new: list[ChangesetSpecRow], old: list[ChangesetRow], current: list[ChangesetSpecRow]):  # type: ignore[no-untyped-def]
    return {
        (o.repo_name, o.head_ref): o.actions
        for o in plan(new, old, {s.id: s for s in current}).operations
    }


def test_new_specs_are_created_and_published_as_asked() -> None:
    new = [
        spec(1, "a"),
        spec(2, "b", published=False),
        spec(3, "c", published="draft"),
        spec(4, "d", kind="existing", external_id="12", head_ref=""),
    ]
    assert actions(new, [], []) == {
        ("a", "batch/x"): ("create", "push", "publish"),
        ("b", "batch/x"): ("create",),
        ("c", "batch/x"): ("create", "push", "publish-draft"),
        ("d", "#12"): ("import",),
    }


def test_an_unchanged_spec_does_nothing_and_changes_are_pushed_or_updated() -> None:
    old_spec = spec(1)
    existing = [changeset(10, 1)]
    assert actions([spec(2)], existing, [old_spec]) == {("r", "batch/x"): ("none",)}
    assert actions([spec(2, diff="other")], existing, [old_spec]) == {("r", "batch/x"): ("push",)}
    assert actions([spec(2, title="New")], existing, [old_spec]) == {("r", "batch/x"): ("update",)}


def test_publication_changes() -> None:
    draft = [changeset(10, 1, publication_state="draft", external_state="draft")]
    assert actions([spec(2)], draft, [spec(1, published="draft")]) == {
        ("r", "batch/x"): ("undraft",)
    }
    unpublished = [
        changeset(10, 1, publication_state="unpublished", external_id=None, external_state=None)
    ]
    assert actions([spec(2)], unpublished, [spec(1, published=False)]) == {
        ("r", "batch/x"): ("push", "publish")
    }
    closed = [changeset(10, 1, external_state="closed")]
    assert actions([spec(2)], closed, [spec(1)]) == {("r", "batch/x"): ("reopen",)}


def test_dropped_changesets_are_closed_when_open_and_detached_otherwise() -> None:
    existing = [
        changeset(10, 1, "open-one"),
        changeset(11, 2, "merged-one", external_state="merged"),
        changeset(12, 3, "unpublished", publication_state="unpublished", external_state=None),
    ]
    current = [spec(1, "open-one"), spec(2, "merged-one"), spec(3, "unpublished")]
    assert actions([], existing, current) == {
        ("open-one", "batch/x"): ("close", "detach"),
        ("merged-one", "batch/x"): ("detach",),
        ("unpublished", "batch/x"): ("detach",),
    }


def test_a_spec_matches_the_changeset_of_its_repository_and_branch_only() -> None:
    existing = [changeset(10, 1, head_ref="batch/x")]
    moved = [spec(2, head_ref="batch/y")]
    assert actions(moved, existing, [spec(1)]) == {
        ("r", "batch/y"): ("create", "push", "publish"),
        ("r", "batch/x"): ("close", "detach"),
    }
