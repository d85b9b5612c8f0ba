"""The repositories pages in Debian's Chromium, over a real served offload: the first site
admin adds a hosted repository with the page's form, syncs it, opens the pull request the
built-in host holds for it, reads its diff and merges it after confirming. Every page visited
passes check_page."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from fleet import Fleet, git, make_repo
from playwright.async_api import Dialog, Page, expect

from browser import check_page, first_admin, sign_in
from offload.db.connect import open_database
from offload.repos.codehosts.base import PullRequestDraft
from offload.repos.mirror import Mirrors
from offload.repos.pulls import PullRequests, PullRequestStore
from offload.repos.registry import RepoRegistry


def hosted_with_feature(root: Path) -> Path:
    """A bare repository with main and a branch `feature` that edits one line of app.py."""
    work = root / "work"
    make_repo(work, {"app.py": "def main():\n    print('hello')\n    return 0\n"})
    git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "app.py").write_text("def main():\n    print('hello, browser')\n    return 0\n")
    # One long line without a space: the diff wraps it on a phone instead of scrolling.
    (work / "data.txt").write_text("x" * 400 + "\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "Greet the browser", cwd=work)
    git("checkout", "-q", "main", cwd=work)
    bare = root / "tools.git"
    git("clone", "-q", "--bare", str(work), str(bare), cwd=root)
    return bare


async def open_pull(fleet: Fleet, author: str) -> int:
    """A pull request from feature into main of acme/tools, opened by the built-in host."""
    db = await open_database(fleet.url)
    try:
        pulls = PullRequests(
            PullRequestStore(db), RepoRegistry(db), Mirrors.in_data_dir(fleet.data_dir)
        )
        draft = PullRequestDraft(
            repo="acme/tools",
            base_ref="main",
            head_ref="feature",
            title="Greet the browser",
            body="One line changes.\n<b>Not bold</b>: the body is text.",
            author=author,
        )
        return (await pulls.open(draft)).number
    finally:
        await db.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_admin_adds_syncs_and_merges_a_pull_request_from_its_page(
    served: Fleet, page: Page, tmp_path: Path
) -> None:
    base, admin = served.base, first_admin(served)
    source = await asyncio.to_thread(hosted_with_feature, tmp_path / "hosted")
    await sign_in(page, base, admin, path="/repositories")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Repositories")
    await page.get_by_label("Source").fill(str(source))
    await page.get_by_label("Name", exact=True).fill("acme/tools")
    await page.get_by_role("button", name="Add repository").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Added acme/tools from {source}")
    row = page.get_by_role("row", name=re.compile(r"^acme\/tools "))
    await expect(row).to_contain_text("synced")
    await check_page(page, "repositories")

    await row.get_by_role("button", name="Sync acme/tools").click()
    await expect(page.get_by_role("status")).to_contain_text(
        re.compile(r"Synced acme/tools in [\d.]+ s: main at [0-9a-f]{12}\.")
    )

    number = await open_pull(served, admin.username)
    await page.get_by_role("link", name="acme/tools", exact=True).click()
    await expect(page).to_have_url(f"{base}/repositories/acme/tools")
    await expect(page.locator(".facts")).to_contain_text(str(source))
    await check_page(page, "repository")

    await page.get_by_role("link", name="Pull requests of acme/tools").click()
    await expect(page).to_have_url(f"{base}/repositories/acme/tools/pulls")
    await check_page(page, "pulls")
    await page.get_by_role("link", name="Greet the browser").click()
    await expect(page).to_have_url(f"{base}/repositories/acme/tools/pulls/{number}")
    await expect(page.locator(".pr-body")).to_have_text(
        "One line changes.\n<b>Not bold</b>: the body is text."
    )
    changes = page.get_by_role("table", name="Changes to app.py")
    deleted = changes.locator("tr.diff-deleted")
    added = changes.locator("tr.diff-added")
    await expect(deleted).to_have_count(1)
    await expect(deleted.locator("td")).to_have_text(["2", "", "-", "    print('hello')"])
    await expect(added.locator("td")).to_have_text(["", "2", "+", "    print('hello, browser')"])
    await check_page(page, "pull")

    asked: list[str] = []

    async def confirm(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.once("dialog", confirm)
    await page.get_by_role("button", name="Merge").click()
    await expect(page.get_by_role("status")).to_contain_text(
        re.compile(r"Merged feature into main as [0-9a-f]{12}\.")
    )
    assert asked and "cannot be undone" in asked[0], asked
    await expect(page.locator(".pr-summary .state")).to_have_text("merged")
    await expect(page.get_by_role("button", name="Merge")).to_have_count(0)
    await expect(changes.locator("tr.diff-added")).to_have_count(1)
    await check_page(page, "pull-merged")
    merged = await asyncio.to_thread(git, "log", "-1", "--format=%s", "main", cwd=source)
    assert merged == f"Merge pull request #{number} from feature"
