"""The code intelligence pages in Debian's Chromium, over a real served offload: the ranking,
a repository's page (a failed index job, a processed upload), the index job's logs, the file
view, and a click on a symbol that leads through its definitions to the line that defines it.
Every page visited passes check_page."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fleet import Fleet, make_repo
from playwright.async_api import Page, expect
from scip_builder import DEF, Uploads, scip_index

from browser import check_page, first_admin, sign_in
from offload.codeintel.queue import SPEC as INDEX_JOBS
from offload.db.connect import open_database
from offload.queue.record import LogEntry
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import Mirrors

GREET = "scip-python python mypkg 0.1.0 mypkg/util/greet()."
UTIL = '# greetings\n\ndef greet(name):\n    """Say hello."""\n    return "hi " + name\n'
MAIN = "from mypkg.util import greet\n\n\ndef run():\n    return greet('x')\n"
INDEX = scip_index(
    [
        ("mypkg/util.py", [([2, 4, 9], GREET, DEF)], {GREET: "Say hello to `name`."}),
        ("mypkg/main.py", [([0, 23, 28], GREET, 0), ([4, 11, 16], GREET, 0)], {}),
    ]
)


async def seed(fleet: Fleet, source: Path) -> None:
    """`acme/lib` added, its commit's upload processed, and a failed index job with logs."""
    made = fleet.offload("repos", "add", str(source), "--name", "acme/lib")
    assert made.returncode == 0, made.stderr
    db = await open_database(fleet.url)
    try:
        mirrors = Mirrors.in_data_dir(fleet.data_dir)
        commit = await mirrors.resolve("acme/lib", "HEAD")
        assert commit is not None
        await Uploads(db, mirrors, fleet.data_dir / "uploads").add("acme/lib", commit, INDEX)
        jobs = SqlQueueStore(db, INDEX_JOBS)
        await jobs.enqueue(
            {
                "repo_name": "acme/lib",
                "commit_sha": commit,
                "root": "",
                "indexer": "scip-python",
                "job": {"indexer": "sourcegraph/scip-python", "root": ""},
                "source": "inferred",
                "priority": 1,
                "requested_by": "",
                "upload_id": None,
            }
        )
        (record,) = await jobs.dequeue("exec-browser")
        await jobs.add_log_entry(
            record.lease,
            LogEntry(
                key="indexer",
                command=["scip-python", "index", "--project-name", "mypkg"],
                start_time=datetime.now(UTC),
                exit_code=1,
                duration_ms=2300,
                out="Indexing mypkg\nerror: cannot import mypkg.missing\n",
            ),
        )
        await jobs.mark_failed(record.lease, "the indexer exited with status 1")
    finally:
        await db.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_symbol_in_the_file_view_leads_to_its_definition_line(
    served: Fleet, page: Page, tmp_path: Path
) -> None:
    source = tmp_path / "src" / "lib"
    make_repo(source, {"mypkg/util.py": UTIL, "mypkg/main.py": MAIN})
    await seed(served, source)
    base = served.base
    await sign_in(page, base, first_admin(served), path="/code-intelligence")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Code intelligence")
    await expect(page.get_by_role("row", name=re.compile(r"^1 acme\/lib "))).to_be_visible()
    await check_page(page, "codeintel-ranking")

    await page.get_by_role("link", name="acme/lib").click()
    await expect(page.locator("#index-jobs")).to_contain_text("failed")
    await expect(page.locator("#uploads")).to_contain_text("completed")
    await check_page(page, "codeintel-repo")

    await page.locator("#index-jobs").get_by_role("link").first.click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Index job")
    await expect(page.locator("pre.log")).to_contain_text("cannot import mypkg.missing")
    await check_page(page, "codeintel-index")

    commit = await page.locator("dd code").first.text_content()
    assert commit
    await page.goto(f"{base}/code-intelligence/acme/lib/-/blob/mypkg/main.py?commit={commit}")
    await check_page(page, "codeintel-blob")
    await page.locator("#L5 a.sym").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Definitions")
    await expect(page.locator(".hover-text")).to_contain_text("Say hello to `name`.")
    await check_page(page, "codeintel-definitions")

    await page.get_by_role("link", name="mypkg/util.py:3:5").click()
    await page.wait_for_url(re.compile(r"/-/blob/mypkg/util\.py\?commit=[0-9a-f]{40}#L3$"))
    target = page.locator("tr:target")
    await expect(target).to_have_attribute("id", "L3")
    await expect(target).to_contain_text("def greet(name):")

    await page.get_by_role("link", name="greet").click()
    await page.get_by_role("link", name="References").click()
    await expect(page.locator("#locations li")).to_have_count(3)
    await check_page(page, "codeintel-references")
