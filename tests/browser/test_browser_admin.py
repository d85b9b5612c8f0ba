"""Site administration and secrets in Debian's Chromium, over a real served offload (acceptance
a): the first site admin signs in, creates a user and an organization through the pages and
adds the user to it; signed in as that user, the jobs and batch changes lists hold only their
own namespaces' and another user's job and batch change are "not found"; they set a secret and read
its access log. Every page visited passes check_page (axe-core, a screenshot, a phone's
width)."""

from __future__ import annotations

import asyncio
import re

import pytest
from batch_seed import finished_spec
from fleet import Fleet
from playwright.async_api import Dialog, Locator, Page, expect

from browser import Account, check_page, first_admin, sign_in, sign_out
from offload.batches.service import BatchService
from offload.db.connect import open_database

PASSWORD = "a long enough password"
SECRET_VALUE = "never-on-a-page-5b1e"


async def job_of(fleet: Fleet, token: str | None = None, namespace: str = "") -> int:
    """A job submitted through the API (as the site admin, or with `token`); it waits
    queued, as no executor runs."""
    body = {"repo": "demo", "command": ["echo", "hi"], "namespace": namespace}
    answer = await asyncio.to_thread(fleet.api, "POST", "/api/jobs", token, json=body)
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


async def applied_change(fleet: Fleet, namespace: str, name: str) -> str:
    """A batch change of `namespace`, its spec executed (written through the batches stores,
    batch_seed.py) and applied; the spec's id."""
    db = await open_database(fleet.url)
    try:
        seeded = await finished_spec(db, namespace, name, done=2, failed=0)
        await BatchService(db).apply(seeded.spec.rand_id)
    finally:
        await db.close()
    return seeded.spec.rand_id


def job_row(page: Page, job_id: int) -> Locator:
    """The jobs table's row of `job_id`."""
    link = page.get_by_role("link", name=str(job_id), exact=True)
    return page.get_by_role("row").filter(has=link)


def namespace_choice(page: Page) -> Locator:
    """The secrets page's choice of namespace."""
    return page.get_by_role("combobox", name=re.compile(r"^Namespace"))


def confirming(page: Page, asked: list[str]) -> None:
    """Accept the next confirmation the page asks for, keeping its question."""

    async def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        await dialog.accept()

    page.once("dialog", accept)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
async def test_first_admin_creates_a_user_and_an_organization_who_sees_only_their_own_jobs(
    served: Fleet, page: Page
) -> None:
    base, admin = served.base, first_admin(served)
    await sign_in(page, base, admin)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Site admin").click()
    await expect(page).to_have_url(f"{base}/admin")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Site admin")
    await check_page(page, "admin")

    # A user, through the users page.
    await (
        page.get_by_role("navigation", name="Site admin").get_by_role("link", name="Users").click()
    )
    await expect(page).to_have_url(f"{base}/admin/users")
    await page.get_by_label("Username").fill("dana")
    await page.get_by_label("Display name").fill("Dana Scully")
    await page.get_by_label("Email").fill("dana@example.com")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create user").click()
    await expect(page.get_by_role("status")).to_have_text("User dana is created.")
    dana_row = page.get_by_role("row").filter(has_text="Dana Scully")
    await expect(dana_row).to_contain_text("active")
    await check_page(page, "admin-users")

    # An organization, with dana in it.
    await page.get_by_role("link", name="Organizations").click()
    await page.get_by_label("Name", exact=True).fill("crew")
    await page.get_by_role("button", name="Create organization").click()
    await expect(page).to_have_url(f"{base}/orgs/crew?did=create")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Organization crew")
    await page.get_by_label("Username").fill("dana")
    await page.get_by_role("button", name="Add member").click()
    await expect(page.get_by_role("status")).to_have_text("dana is a member of the organization.")
    await expect(page.get_by_role("row").filter(has_text="dana")).to_contain_text("member")
    await check_page(page, "org")
    await page.goto(f"{base}/admin/orgs")
    await expect(page.get_by_role("row").filter(has_text="crew")).to_contain_text("1")
    await check_page(page, "admin-orgs")

    await page.goto(f"{base}/admin/queues")
    await page.get_by_role("combobox", name=re.compile(r"^Queue")).select_option("gpu")
    await page.get_by_role("textbox", name="Namespace").fill("crew")
    await page.get_by_role("button", name="Grant", exact=True).click()
    await expect(page.get_by_role("status")).to_have_text(
        "crew holds the use grant on the gpu queue."
    )
    await expect(page.get_by_role("row").filter(has_text="crew")).to_contain_text(admin.username)
    await check_page(page, "admin-queues")
    await page.goto(f"{base}/admin/audit")
    await check_page(page, "admin-audit")
    # A worker reports its version with its first heartbeat, just after it starts.
    await asyncio.to_thread(served.start_worker, "identity.janitor")
    worker = page.get_by_role("row").filter(has_text="identity.janitor")
    for _ in range(50):
        await page.goto(f"{base}/admin/versions")
        if await worker.count():
            break
        await asyncio.sleep(0.2)
    await expect(worker).to_contain_text("active")
    await expect(page.get_by_role("row").filter(has_text="answering this page")).to_be_visible()
    await expect(page.locator("main")).not_to_contain_text("No worker has reported")
    await check_page(page, "admin-versions")
    await page.goto(f"{base}/admin/audit?action=org.member.set")
    await expect(page.locator("#audit tbody tr")).to_have_count(1)
    await expect(page.locator("#audit tbody")).to_contain_text("crew/dana")

    # Jobs in three namespaces: the admin's, dana's and crew's.
    made = await asyncio.to_thread(
        served.api, "POST", "/api/users/dana/tokens", None, json={"note": "browser"}
    )
    assert made.status_code == 201, made.text
    dana_token = str(made.json()["token"])
    admins = await job_of(served)
    danas = await job_of(served, dana_token)
    crews = await job_of(served, dana_token, namespace="crew")
    # A batch change each of the admin's and dana's, executed and applied.
    theirs = await applied_change(served, admin.username, "admin-change")
    await applied_change(served, "dana", "dana-change")
    await sign_out(page, base)

    await sign_in(page, base, Account("dana", PASSWORD), path="/jobs")
    await expect(page.get_by_role("navigation", name="Main")).not_to_contain_text("Site admin")
    await expect(job_row(page, danas)).to_contain_text("dana")
    await expect(job_row(page, crews)).to_contain_text("crew")
    await expect(job_row(page, admins)).to_have_count(0)
    await expect(page.get_by_role("table").locator("tbody tr")).to_have_count(2)
    await check_page(page, "jobs-second-user")

    answer = await page.goto(f"{base}/jobs/{admins}")
    assert answer is not None and answer.status == 404
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    await expect(page.get_by_role("alert")).to_have_text(f"No job {admins}.")
    await page.goto(f"{base}/batch-changes")
    await expect(page.get_by_role("link", name="dana/dana-change")).to_be_visible()
    await expect(page.locator("main")).not_to_contain_text("admin-change")
    await check_page(page, "batch-changes-second-user")
    for path in (f"/batch-changes/{admin.username}/admin-change", f"/batch-specs/{theirs}"):
        answer = await page.goto(f"{base}{path}")
        assert answer is not None and answer.status == 404, path
        await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    answer = await page.goto(f"{base}/admin")
    assert answer is not None and answer.status == 403
    await check_page(page, "admin-refused")

    # dana reads crew's members (no forms: not an admin of it) from the profile.
    await page.goto(f"{base}/profile")
    await page.get_by_role("link", name="crew").click()
    await expect(page).to_have_url(f"{base}/orgs/crew")
    await expect(page.get_by_role("button", name="Add member")).to_have_count(0)
    await check_page(page, "org-member")

    # A secret of dana's: set, listed by name only, its access log, deleted.
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Secrets").click()
    await expect(page).to_have_url(f"{base}/secrets")
    await expect(namespace_choice(page)).to_have_value("dana")
    await page.get_by_label("Name", exact=True).fill("DEPLOY_TOKEN")
    await page.get_by_label("Value").fill(SECRET_VALUE)
    await page.get_by_role("button", name="Set secret").click()
    await expect(page.get_by_role("status")).to_have_text(
        "Secret DEPLOY_TOKEN is set in namespace dana."
    )
    assert SECRET_VALUE not in page.url
    await expect(page.locator("main")).not_to_contain_text(SECRET_VALUE)
    await expect(page.get_by_label("Value")).to_have_value("")
    await check_page(page, "secrets")

    await page.get_by_role("link", name="Access log of DEPLOY_TOKEN").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Secret DEPLOY_TOKEN")
    await expect(page.get_by_text("No job has read it yet.")).to_be_visible()
    await check_page(page, "secret-access-log")
    asked: list[str] = []
    confirming(page, asked)
    await page.get_by_role("button", name="Delete secret DEPLOY_TOKEN").click()
    await expect(page.get_by_role("status")).to_have_text(
        "Secret DEPLOY_TOKEN is deleted from namespace dana."
    )
    assert asked and "cannot be undone" in asked[0], asked
    await expect(page.get_by_text("No secrets in namespace dana.")).to_be_visible()
    await namespace_choice(page).select_option("crew")
    await page.get_by_role("button", name="Show").click()
    await expect(page).to_have_url(re.compile(r"/secrets\?namespace=crew$"))
    await expect(page.get_by_text("Only admins of organization crew")).to_be_visible()
