"""The profile page in Debian's Chromium, over a real served offload: the first site admin
opens it from the header, creates an access token, copies it with the page's button (read
back from the clipboard), uses it against the API, and revokes it from the page after
confirming; both pages pass check_page."""

from __future__ import annotations

import re

import httpx
import pytest
from fleet import Fleet
from playwright.async_api import Dialog, Page, expect

from browser import check_page, first_admin, sign_in


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_token_is_created_copied_used_and_revoked_from_the_profile(
    served: Fleet, page: Page
) -> None:
    base, admin = served.base, first_admin(served)
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    await sign_in(page, base, admin)
    await page.locator("header").get_by_role("link", name=admin.username, exact=True).click()
    await expect(page).to_have_url(f"{base}/profile")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Profile")
    await expect(page.locator(".facts")).to_contain_text(admin.username)
    # The token the server printed on its first start, for `offload login`.
    await expect(page.locator("#tokens tbody tr")).to_have_count(1)
    await check_page(page, "profile")

    await page.get_by_label("Note").fill("from the browser")
    await page.get_by_label("Expires").select_option("never")
    await page.get_by_role("button", name="Create token").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("New access token")
    await expect(page.locator(".notice")).to_contain_text("it will not be shown again")
    value = await page.get_by_label("Token").input_value()
    assert re.fullmatch(r"offload_[0-9a-f]{40}", value), value
    await check_page(page, "token-created")

    await page.get_by_role("button", name="Copy").click()
    await expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert await page.evaluate("() => navigator.clipboard.readText()") == value

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        headers = {"Authorization": f"token {value}"}
        who = await client.get("/api/me", headers=headers)
        assert who.status_code == 200 and who.json()["username"] == admin.username

        await page.get_by_role("link", name="Back to your profile").click()
        row = page.get_by_role("row").filter(has_text="from the browser")
        await expect(row).to_contain_text("user:all")
        await expect(page.locator("main")).not_to_contain_text(value)

        asked: list[str] = []

        async def confirm(dialog: Dialog) -> None:
            asked.append(dialog.message)
            await dialog.accept()

        page.once("dialog", confirm)
        await row.get_by_role("button", name=re.compile(r"^Revoke token \d+$")).click()
        await expect(page).to_have_url(re.compile(r"/profile\?revoked=\d+$"))
        await expect(page.get_by_role("status")).to_contain_text(
            "(from the browser) is revoked: it no longer works."
        )
        assert asked and "cannot be undone" in asked[0], asked
        await expect(row).to_have_count(0)
        await expect(page.locator("#tokens tbody tr")).to_have_count(1)
        assert (await client.get("/api/me", headers=headers)).status_code == 401
