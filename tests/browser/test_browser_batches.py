"""Batch changes in Debian's Chromium, over a real server, worker and sandbox executor
(acceptance c and d): a spec over 20 repositories runs with one failing workspace; the
execution page shows 19 done and 1 failed with its stderr, and retries it; the preview shows
the exact diffs and rendered bodies; apply opens pull requests on the built-in code host;
merging one moves the burndown chart and the changeset list."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from batchfleet import IMAGE, Batches, bare, import_image, register, tag_image
from fleet import Fleet
from playwright.async_api import Page, expect

from browser import check_page, first_admin, sign_in
from offload.db.url import DatabaseURL

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces")

REPOS = [f"repo-{n:02d}" for n in range(20)]
FAILING = "repo-13"

# The failing workspace fails while the global secret FLAKY says so; retry after changing it.
SPEC = f"""\
name: spelling
description: American spelling in every README.
on:
  - repositoriesMatchingQuery: repo:^repo-
steps:
  - run: |
      if [ "${{{{ repository.name }}}}" = {FAILING} ] && [ "$FLAKY" = fail-4711 ]; then
        echo "cannot edit {FAILING}: README.md is locked" >&2; exit 3
      fi
      sed -i 's/colour/color/g' README.md
      echo "edited ${{{{ repository.name }}}}"
    container: {IMAGE}
    env:
      - FLAKY
    outputs:
      said:
        value: ${{{{ step.stdout }}}}
changesetTemplate:
  title: Use color in ${{{{ repository.name }}}}
  body: |
    Spelling fixed by offload. The step said: ${{{{ outputs.said }}}}
  branch: batch/spelling
  commit:
    message: Use American spelling
  published: true
"""


@pytest.fixture
def batches(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Batches]:
    fleet = Fleet(db_url, tmp_path / "data")
    sources = {
        name: bare(tmp_path / "hosted" / f"{name}.git", {"README.md": f"the colour of {name}\n"})
        for name in REPOS
    }
    asyncio.run(register(db_url, fleet.data_dir, sources))
    import_image(fleet, tmp_path, ["exec-web"])
    # The gallery's templates name the image `busybox`: the same one, by that name too.
    tag_image(fleet, tmp_path, "exec-web", "busybox")
    fleet.start_server()
    setup = Batches(fleet, tmp_path)
    setup.start_worker()
    fleet.start_executor("exec-web", slots=4, EXECUTOR_QUEUE_NAME="batches")
    flaky = fleet.offload("secrets", "set", "FLAKY", "--global", stdin="fail-4711")
    assert flaky.returncode == 0, flaky.stderr
    yield setup
    setup.stop()


async def submit(page: Page, base: str, text: str) -> str:
    """Type `text` into the spec editor, wait for its check, and run it; the spec's id, from
    the execution page the browser lands on."""
    await page.goto(f"{base}/batch-changes/new")
    await page.get_by_label("Batch spec (YAML)").fill(text)
    await expect(page.locator("#spec-check")).to_contain_text("Valid", timeout=10_000)
    await page.get_by_role("button", name="Run batch spec").click()
    await page.wait_for_url(re.compile(r"/batch-specs/[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[1]


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_execute_retry_preview_apply_merge_and_burndown(batches: Batches, page: Page) -> None:
    fleet = batches.fleet
    base = fleet.base
    admin = first_admin(fleet)
    await sign_in(page, base, admin, path="/batch-changes")
    await check_page(page, "batch-changes-empty")

    # c. Executing: the page follows the workspaces until 19 are done and 1 failed.
    rand_id = await submit(page, base, SPEC)
    progress = page.locator("#progress")
    await expect(progress).to_contain_text("20 of 20 workspaces finished", timeout=180_000)
    await expect(progress).to_contain_text("completed 19")
    await expect(progress).to_contain_text("failed 1")
    await check_page(page, "batch-execution")
    await page.get_by_label("State").select_option("failed")
    await page.get_by_role("button", name="Filter").click()
    failed_row = page.get_by_role("row", name=re.compile(FAILING))
    await expect(failed_row).to_contain_text("failed")
    await failed_row.get_by_role("link", name=FAILING).click()
    step = page.get_by_role("region", name="Step step.sandbox.run.0")
    await expect(step.locator("pre.log")).to_contain_text(
        f"stderr: cannot edit {FAILING}: README.md is locked"
    )
    await check_page(page, "batch-workspace-failed")

    # Retry from the page once the cause is fixed: only that workspace runs again.
    fixed = await asyncio.to_thread(
        fleet.offload, "secrets", "set", "FLAKY", "--global", stdin="ok"
    )
    assert fixed.returncode == 0, fixed.stderr
    await page.get_by_role("button", name="Retry this workspace").click()
    await page.wait_for_url(re.compile(rf"/batch-specs/{rand_id}\?did=retry$"))
    await expect(page.get_by_role("status").first).to_contain_text("queued again")
    await expect(page.locator("#progress")).to_contain_text("completed 20", timeout=120_000)

    # d. The preview: one operation per repository, each with its exact diff and body.
    await page.get_by_role("link", name="Preview the changesets").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Preview")
    await expect(page.get_by_role("link", name=re.compile("create 20"))).to_be_visible()
    op = page.get_by_role("article", name=re.compile("repo-07"))
    await op.get_by_text("Body, commit and diff").click()
    await expect(op.locator(".body-text")).to_have_text(
        "Spelling fixed by offload. The step said: edited repo-07\n"
    )
    await expect(op.locator(".diff-deleted .text")).to_have_text("the colour of repo-07")
    await expect(op.locator(".diff-added .text")).to_have_text("the color of repo-07")
    await check_page(page, "batch-preview")

    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Apply").click()
    await page.wait_for_url(f"{base}/batch-changes/{admin.username}/spelling?did=apply")
    changesets = page.get_by_role("table", name="Changesets")
    # The page is read again as the reconciler publishes: reload until all 20 are open.
    pulls = changesets.get_by_role("link", name=re.compile(r"^#\d+$"))
    for _ in range(120):
        if await page.get_by_role("link", name=re.compile(r"^open 20")).count():
            if await pulls.count() == 20:
                break
        await asyncio.sleep(0.5)
        await page.reload()
    await expect(page.get_by_role("link", name=re.compile(r"^open 20"))).to_be_visible()
    await expect(pulls).to_have_count(20)
    await expect(page.locator("figure.chart")).to_contain_text("open 20")
    await check_page(page, "batch-change")

    # Merge one on the built-in host; the syncer notices, and the page shows it.
    number = re.sub(
        r"\D",
        "",
        await changesets.get_by_role("row", name=re.compile("repo-05"))
        .locator("a")
        .first.inner_text(),
    )
    merged = await asyncio.to_thread(fleet.offload, "repos", "pulls", "merge", "repo-05", number)
    assert merged.returncode == 0, merged.stderr
    for _ in range(120):
        if await page.get_by_role("link", name=re.compile(r"^merged 1")).count():
            break
        await asyncio.sleep(0.5)
        await page.reload()
    await expect(page.get_by_role("link", name=re.compile(r"^merged 1"))).to_be_visible()
    await expect(page.locator("figure.chart")).to_contain_text("merged 1")
    await expect(page.locator("figure.chart")).to_contain_text("open 19")
    row = changesets.get_by_role("row", name=re.compile("repo-05"))
    await expect(row).to_contain_text("merged")
    last = page.locator("details.chart-data tbody tr").last
    await expect(last).to_contain_text("20")  # total
    await check_page(page, "batch-change-merged")


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_batch_change_from_the_replace_text_template(batches: Batches, page: Page) -> None:
    """e. Three fields of the "Replace text with sed" template; its preview has the diffs."""
    base = batches.fleet.base
    await sign_in(page, base, first_admin(batches.fleet), path="/batch-changes/new")
    await page.get_by_role("link", name="Replace text with sed").click()
    await page.get_by_label("Text to find").fill("colour of repo-0")
    await page.get_by_label("Replace with").fill("hue of repo #0 & 'friends'")
    await page.get_by_label("Files").fill("README.md")
    await page.get_by_label("Repositories").fill("repo:^repo-0[0-2]$")
    await page.get_by_role("button", name="Run batch spec").click()
    await page.wait_for_url(re.compile(r"/batch-specs/[0-9a-f]+$"))
    await expect(page.locator("#progress")).to_contain_text(
        "3 of 3 workspaces finished", timeout=120_000
    )
    await page.get_by_role("link", name="Preview the changesets").click()
    for n in range(3):
        op = page.get_by_role("article", name=re.compile(f"repo-0{n}"))
        await op.get_by_text("Body, commit and diff").click()
        await expect(op.locator(".diff-deleted .text")).to_have_text(f"the colour of repo-0{n}")
        await expect(op.locator(".diff-added .text")).to_have_text(
            f"the hue of repo #0 & 'friends'{n}"
        )
    await expect(page.get_by_role("link", name=re.compile("create 3"))).to_be_visible()
    await check_page(page, "batch-preview-template")
