"""The web interface in Debian's Chromium, over a real served offload: signing in as the first
site admin with the password the server printed, signing out, each user seeing only their own
namespaces' jobs, the executors page turning a killed executor inactive without a reload; and
every page visited passes check_page (axe-core, a screenshot, a phone's width)."""

from __future__ import annotations

import asyncio
import re
import signal

import pytest
from fleet import Fleet
from playwright.async_api import Locator, Page, expect

from browser import Account, check_page, first_admin, sign_in, sign_out
from offload.dispatch.registry import ACTIVE_WINDOW

SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
PASSWORD = "correct horse battery"


async def cli(fleet: Fleet, *args: str, stdin: str | None = None, token: str | None = None) -> str:
    """Run an offload command against the fleet (off the event loop); its stdout."""
    done = await asyncio.to_thread(fleet.offload, *args, stdin=stdin, token=token)
    assert done.returncode == 0, f"offload {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


async def run_job(fleet: Fleet, *, token: str | None = None, org: str = "") -> int:
    """A job started with `offload run --detach` (it stays queued: no executor is running)."""
    where = ["--org", org] if org else []
    out = await cli(
        fleet, "run", "--detach", "--repo", "demo", *where, "--", "echo", "hi", token=token
    )
    return int(out.splitlines()[-1])


def job_row(page: Page, job_id: int) -> Locator:
    """The jobs table's row of `job_id`."""
    link = page.get_by_role("link", name=str(job_id), exact=True)
    return page.get_by_role("row").filter(has=link)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_first_admin_signs_in_and_a_second_user_sees_only_their_namespaces_jobs(
    served: Fleet, page: Page
) -> None:
    base, admin = served.base, first_admin(served)

    await page.goto(f"{base}/")
    await expect(page).to_have_url(f"{base}/sign-in?next=/")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Sign in to offload")
    await check_page(page, "sign-in")
    await page.get_by_label("Username").fill(admin.username)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("wrong username or password")
    await check_page(page, "sign-in-failed")

    await sign_in(page, base, admin)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Home")
    await expect(page.locator("header")).to_contain_text(f"{admin.username} site admin")

    # No page manages users or organizations yet: the site admin uses the CLI.
    await cli(served, "users", "add", "olive", "--password-stdin", stdin=PASSWORD)
    await cli(served, "orgs", "add", "acme")
    await cli(served, "orgs", "members", "acme", "--add", "olive")
    olive_token = await cli(served, "tokens", "create", "--user", "olive", "--note", "browser")
    admins = await run_job(served)
    olives = await run_job(served, token=olive_token)
    acmes = await run_job(served, token=olive_token, org="acme")

    await page.reload()
    await expect(page.get_by_role("link", name=f"Job {admins}")).to_be_visible()
    await check_page(page, "home")
    await sign_out(page, base)
    await expect(page.get_by_role("button", name="Sign out")).to_have_count(0)

    await sign_in(page, base, Account("olive", PASSWORD), path="/jobs")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Jobs")
    await expect(job_row(page, olives)).to_contain_text("olive")
    await expect(job_row(page, acmes)).to_contain_text("acme")
    await expect(job_row(page, admins)).to_have_count(0)
    await expect(page.get_by_role("table").locator("tbody tr")).to_have_count(2)
    await check_page(page, "jobs")

    await page.get_by_role("link", name=str(olives), exact=True).click()
    await expect(page).to_have_url(f"{base}/jobs/{olives}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text(f"Job {olives}")
    await expect(page.locator(".facts")).to_contain_text("echo hi")
    await check_page(page, "job")

    answer = await page.goto(f"{base}/jobs/{admins}")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    await expect(page.get_by_role("alert")).to_have_text(f"No job {admins}.")
    await expect(page.locator("main")).not_to_contain_text("echo hi")
    await check_page(page, "not-found")

    answer = await page.goto(f"{base}/executors")
    assert answer is not None and answer.status == 403
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    await expect(page.get_by_role("navigation", name="Main")).not_to_contain_text("Executors")

    await sign_out(page, base)
    answer = await page.goto(f"{base}/jobs/{olives}")
    await expect(page).to_have_url(re.compile(rf"/sign-in\?next=/jobs/{olives}$"))


@pytest.mark.slow
@SQLITE
async def test_executors_page_shows_a_killed_executor_inactive_without_a_reload(
    served: Fleet, page: Page
) -> None:
    await asyncio.to_thread(served.start_executor, "exec-kept", slots=1)
    doomed = await asyncio.to_thread(served.start_executor, "exec-doomed", slots=1)
    await sign_in(page, served.base, first_admin(served), path="/executors")

    kept_row = page.get_by_role("row", name=re.compile(r"^exec-kept "))
    doomed_row = page.get_by_role("row", name=re.compile(r"^exec-doomed "))
    await expect(kept_row.locator(".state")).to_have_text("active")
    await expect(doomed_row.locator(".state")).to_have_text("active")
    await expect(page.locator("#executors")).to_contain_text("2 of 2 active.")
    await check_page(page, "executors")

    # Marks this document: a reload would make a new one, without the mark.
    await page.evaluate("() => { window.offloadTestMark = true }")
    doomed.stop(signal.SIGKILL)
    # Inactive once its last heartbeat is ACTIVE_WINDOW old; the page polls every 2 s.
    timeout = (ACTIVE_WINDOW.total_seconds() + 10) * 1000
    await expect(doomed_row.locator(".state")).to_have_text("inactive", timeout=timeout)
    await expect(kept_row.locator(".state")).to_have_text("active")
    await expect(page.locator("#executors")).to_contain_text("1 of 2 active.")
    assert await page.evaluate("() => window.offloadTestMark === true"), "the page was reloaded"
    await check_page(page, "executors-one-inactive")
