"""The executors page in Debian's Chromium, over a real served offload and a real executor:
the job limits it reports and the job it runs, then the executor token revealed, copied with
the page's button (read back from the clipboard) and rotated after ticking the confirmation;
an executor with the old token is refused, one with the new token connects. Every state of
the page passes check_page."""

from __future__ import annotations

import asyncio
import re
import signal

import pytest
from fleet import Fleet
from playwright.async_api import Page, expect

from browser import check_page, first_admin, sign_in


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_site_admin_sees_limits_and_jobs_then_reveals_copies_and_rotates_the_token(
    served: Fleet, page: Page
) -> None:
    base = served.base
    old = await asyncio.to_thread(served.token)
    limited = await asyncio.to_thread(
        served.start_executor, "exec-limits", slots=1, EXECUTOR_JOB_MEMORY="1536M"
    )
    run = await asyncio.to_thread(
        served.offload, "run", "--detach", "--repo", "demo", "--", "sleep", "60"
    )
    assert run.returncode == 0, run.stderr
    job_id = int(run.stdout.strip().splitlines()[-1])

    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    await sign_in(page, base, first_admin(served), path="/executors")
    row = page.get_by_role("row", name=re.compile(r"^exec-limits "))
    await expect(row.locator(".limits")).to_contain_text("memory 1.5G")
    await expect(row.locator(".limits")).to_contain_text("time 30m")
    # The page polls: the job appears once the executor holds it, without a reload.
    held = row.get_by_role("link", name=f"job {job_id}", exact=True)
    await expect(held).to_be_visible(timeout=30_000)
    await expect(page.get_by_label("Token", exact=True)).to_have_count(0)
    await check_page(page, "executors-limits-and-jobs")
    # Killed rather than stopped: a stopping executor waits for its running job to end.
    await asyncio.to_thread(limited.stop, signal.SIGKILL)

    await page.get_by_role("button", name="Reveal").click()
    token = page.get_by_label("Token", exact=True)
    await expect(token).to_have_value(old)
    await page.get_by_role("button", name="Copy").click()
    await expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert await page.evaluate("() => navigator.clipboard.readText()") == old
    await check_page(page, "executors-token")

    # Not confirmed: the browser does not send the form, the token stays.
    rotate = page.get_by_role("button", name="Rotate")
    await rotate.click()
    await expect(token).to_have_value(old)
    await page.get_by_label(re.compile("Replace it with a new random token")).check()
    await rotate.click()
    await expect(page.locator(".notice")).to_contain_text("refused from now on")
    new = await page.get_by_label("Token", exact=True).input_value()
    assert new != old and new == await asyncio.to_thread(served.token)
    await check_page(page, "executors-token-rotated")

    refused = await asyncio.to_thread(served.spawn_executor, "exec-old-token", token=old, slots=1)
    await asyncio.to_thread(refused.wait_for, "refused the executor token")
    await asyncio.to_thread(served.start_executor, "exec-new-token", slots=1)
    await expect(page.get_by_role("row", name=re.compile(r"^exec-new-token "))).to_contain_text(
        "active"
    )
