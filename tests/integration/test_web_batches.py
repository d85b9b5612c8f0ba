"""The batch changes pages over a served offload, as a browser without JavaScript sees them:
a finished spec's execution page (workspaces, states, a failed one's stderr, retry), one
workspace's logs and diff, the preview (operations, rendered bodies, diffs, filters, pages,
apply), the batch change page (burndown, changesets, close), and other users kept out."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from access_site import Site, served
from batch_seed import finished_spec
from web_client import browser, csrf_of, signed_in

from offload.batches.service import BatchService
from offload.db.base import Database
from offload.db.url import DatabaseURL


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


def text_of(html: str) -> str:
    """The page's text, tags dropped and spaces collapsed (what a reader sees)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_the_execution_page_shows_each_workspace_and_retries_the_failed_one(
    site: Site,
) -> None:
    seeded = await finished_spec(site.db, "olive", "colour", done=19, failed=1)
    rand_id = seeded.spec.rand_id
    async with signed_in(site, "olive") as olive:
        page = await olive.get(f"/batch-specs/{rand_id}")
        assert page.status_code == 200, page.text
        seen = text_of(page.text)
        assert "19 of 20 workspaces finished" not in seen  # the failed one finished too
        assert "20 of 20 workspaces finished" in seen
        assert "completed 19" in seen and "failed 1" in seen
        (bad,) = seeded.failed
        assert f"step 0 exited with 1 in {bad}" in seen

        failed = await olive.get(f"/batch-specs/{rand_id}?state=failed")
        rows = re.findall(r"/workspaces/(\d+)\">([^<]+)</a>", failed.text)
        assert [repo for _, repo in rows] == [bad]
        one = await olive.get(f"/batch-specs/{rand_id}/workspaces/{seeded.workspace_ids[bad]}")
        assert f"stderr: sed: {bad}/README.md: denied" in one.text

        good = seeded.done[0]
        ws = await olive.get(f"/batch-specs/{rand_id}/workspaces/{seeded.workspace_ids[good]}")
        assert f"stdout: editing {good}" in ws.text
        assert f"the color of {good}" in ws.text and f"the colour of {good}" in ws.text

        assert (await olive.get(f"/batch-specs/{rand_id}?state=nonsense")).status_code == 400
        no_csrf = await olive.post(f"/batch-specs/{rand_id}/retry", data={"repo": ""})
        assert no_csrf.status_code == 403
        retried = await olive.post(
            f"/batch-specs/{rand_id}/retry", data={"csrf": csrf_of(page.text)}
        )
        assert retried.status_code == 303
        again = await olive.get(retried.headers["location"])
        assert "The failed workspaces are queued again." in again.text
        assert "queued 1" in text_of(again.text)
    progress = await BatchService(site.db).progress(rand_id)
    assert progress["states"] == {"completed": 19, "queued": 1}


async def test_preview_pages_through_operations_with_their_diffs_and_applies(site: Site) -> None:
    seeded = await finished_spec(site.db, "olive", "many", done=45, failed=0)
    rand_id = seeded.spec.rand_id
    async with signed_in(site, "olive") as olive:
        first = await olive.get(f"/batch-specs/{rand_id}/preview")
        assert first.status_code == 200, first.text
        seen = text_of(first.text)
        assert "45 changesets" in seen and "create 45" in seen and "publish 45" in seen
        titles = re.findall(r'<h2 class="op-title">([^<]+)</h2>', first.text)
        assert titles == [f"Use color in many-repo-{i:03d}" for i in range(20)]
        # The rendered body is text, never markup; the diff is the workspace's, line by line.
        assert "&lt;b&gt;not markup&lt;/b&gt;" in first.text
        assert "the color of many-repo-000" in first.text
        every = list(titles)
        page = first
        while more := re.search(r'href="([^"]+after=[^"]+)">Next changesets', page.text):
            page = await olive.get(more.group(1).replace("&amp;", "&"))
            every += re.findall(r'<h2 class="op-title">([^<]+)</h2>', page.text)
        assert every == [f"Use color in many-repo-{i:03d}" for i in range(45)]
        none = await olive.get(f"/batch-specs/{rand_id}/preview?action=close")
        assert "No operation does close." in none.text
        assert (await olive.get(f"/batch-specs/{rand_id}/preview?action=x")).status_code == 400

        applied = await olive.post(
            f"/batch-specs/{rand_id}/apply", data={"csrf": csrf_of(first.text)}
        )
        assert applied.status_code == 303
        assert applied.headers["location"] == "/batch-changes/olive/many?did=apply"
        change = await olive.get(applied.headers["location"])
        seen = text_of(change.text)
        assert "Applied: the changesets are being published" in seen
        assert "processing 45" in seen  # the reconciler has not run: all are queued
        assert "<svg" in change.text and 'class="series series-total"' in change.text
        listed = re.findall(r'<th scope="row">(many-repo-\d+)', change.text)
        assert listed == [f"many-repo-{i:03d}" for i in range(45)][:45]
        again = await olive.post(
            f"/batch-specs/{rand_id}/apply", data={"csrf": csrf_of(first.text)}
        )
        assert again.status_code == 303  # applying the same spec again changes nothing

        closed = await olive.post(
            "/batch-changes/olive/many/close", data={"csrf": csrf_of(change.text)}
        )
        assert closed.status_code == 303
        after = await olive.get(closed.headers["location"])
        assert "Closing: the open pull requests" in after.text and ">closed</span>" in after.text
        twice = await olive.post(
            "/batch-changes/olive/many/close", data={"csrf": csrf_of(change.text)}
        )
        assert twice.status_code == 409

        listing = await olive.get("/batch-changes")
        assert "olive/many" in listing.text and "45 processing" in text_of(listing.text)


async def test_another_users_specs_and_batch_changes_are_not_found(site: Site) -> None:
    seeded = await finished_spec(site.db, "olive", "private", done=1, failed=0)
    rand_id = seeded.spec.rand_id
    async with signed_in(site, "olive") as olive:
        page = await olive.get(f"/batch-specs/{rand_id}/preview")
        applied = await olive.post(
            f"/batch-specs/{rand_id}/apply", data={"csrf": csrf_of(page.text)}
        )
        assert applied.status_code == 303
    workspace_id = seeded.workspace_ids[seeded.done[0]]
    async with signed_in(site, "mallory") as mallory:
        mine = await mallory.get("/batch-changes")
        assert "olive/private" not in mine.text and rand_id not in mine.text
        csrf = csrf_of(mine.text)
        for path in (
            f"/batch-specs/{rand_id}",
            f"/batch-specs/{rand_id}/preview",
            f"/batch-specs/{rand_id}/workspaces/{workspace_id}",
            "/batch-changes/olive/private",
            "/batch-changes?namespace=olive",
        ):
            answer = await mallory.get(path)
            assert answer.status_code == 404, path
            assert "the color of" not in answer.text
        for path in (
            f"/batch-specs/{rand_id}/apply",
            f"/batch-specs/{rand_id}/retry",
            "/batch-changes/olive/private/close",
        ):
            assert (await mallory.post(path, data={"csrf": csrf})).status_code == 404, path
    async with signed_in(site, "root") as root:
        assert (await root.get("/batch-changes/olive/private")).status_code == 200
    async with browser(site) as anonymous:
        answer = await anonymous.get(f"/batch-specs/{rand_id}")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/sign-in")
