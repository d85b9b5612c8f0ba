"""Creating a batch change in Debian's Chromium, over a real served offload: the gallery, the
"replace text" template's form filled in and its spec opened in the editor; a spec with a
mistake typed there shows the problem at its line and column without being submitted, its
link puts the cursor on the mistake, the fix turns it valid, and running it lands on the
spec's page. The gallery, a template's form and the editor with a problem pass check_page."""

from __future__ import annotations

import re
import time

import pytest
from fleet import Fleet
from playwright.async_api import Page, expect

from browser import check_page, first_admin, sign_in

BROKEN = """\
name: hello-editor
on:
  - repository: demo
steps:
  - run: echo hello > hello.txt
    contaner: busybox
changesetTemplate:
  title: Say hello
  branch: batch/hello
  commit:
    message: Say hello
"""


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_template_and_a_spec_fixed_in_the_editor_run_from_the_page(
    served: Fleet, page: Page
) -> None:
    base, admin = served.base, first_admin(served)
    await sign_in(page, base, admin, path="/batch-changes/new")
    await expect(page.get_by_role("heading", level=1)).to_have_text("New batch change")
    gallery = page.get_by_role("region", name="Start from a template")
    await expect(gallery.get_by_role("listitem")).to_have_count(4)
    await check_page(page, "batch-new")

    await gallery.get_by_role("link", name="Replace text with sed").click()
    await expect(page).to_have_url(f"{base}/batch-changes/new?template=sed")
    await expect(page.get_by_label("Text to find")).to_have_value("colour")
    await check_page(page, "batch-template")
    await page.get_by_label("Text to find").fill("hello 'world'")
    await page.get_by_label("Replace with").fill("goodbye & $(moon)")
    await page.get_by_label(re.compile(r"^Files")).fill("*.txt")
    await page.get_by_role("button", name="Edit spec").click()
    await expect(page.locator("#spec-check")).to_contain_text("Valid:")
    made = await page.get_by_label("Batch spec (YAML)").input_value()
    assert "pattern='hello '\"'\"'world'\"'\"''" in made, made
    assert "replacement='goodbye \\& $(moon)'" in made, made

    # A mistake typed in the editor: the check shows it after a pause, nothing is submitted.
    editor = page.get_by_label("Batch spec (YAML)")
    await editor.fill(BROKEN)
    typed = time.monotonic()
    place = page.locator("#spec-check").get_by_role("link", name="line 6, column 5")
    await expect(place).to_be_visible(timeout=5000)
    seen = time.monotonic() - typed
    assert seen < 5, seen
    await expect(page.locator("#spec-check")).to_contain_text(
        'line 6, column 5: steps[0].contaner: unknown field "contaner"'
    )
    await expect(page).to_have_url(f"{base}/batch-changes/new/template")
    await expect(page.locator("#spec-lines")).to_be_visible()
    assert (await page.locator("#spec-lines").text_content() or "").startswith("1\n2\n3\n")
    await check_page(page, "batch-editor-problems")

    # Its link puts the cursor on the mistake; the fix is typed there.
    await place.click()
    await expect(editor).to_be_focused()
    cursor = await editor.evaluate("area => [area.selectionStart, area.selectionEnd]")
    assert cursor == [BROKEN.index("contaner")] * 2, cursor
    await page.keyboard.press("Shift+End")
    await page.keyboard.type("container: busybox")
    await expect(page.locator("#spec-check")).to_contain_text(
        "Valid: batch change hello-editor, 1 step, on demo.", timeout=5000
    )
    assert await editor.input_value() == BROKEN.replace("contaner", "container")

    await page.get_by_role("button", name="Run batch spec").click()
    await page.wait_for_url(re.compile(re.escape(base) + r"/batch-specs/\w+$"))
