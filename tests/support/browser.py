"""A real browser for the web interface's tests: Debian's Chromium driven by Playwright, and
the checks every page must pass (no console errors, axe-core clean, fits a phone's width)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ci import unavailable
from fleet import Fleet
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    Response,
    ViewportSize,
)

ROOT = Path(__file__).resolve().parents[2]
# Playwright cannot download a browser build of its own here: it drives the distribution's.
CHROMIUM = Path(os.environ.get("OFFLOAD_TEST_CHROMIUM", "/usr/bin/chromium"))
AXE = Path(__file__).parent / "axe" / "axe.min.js"
LAPTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
# axe-core's impacts that fail a page; "minor" and "moderate" ones are left to review.
BLOCKING = ("serious", "critical")


def artifacts() -> Path:
    """Where the tests leave what a person looks at afterwards (screenshots)."""
    return Path(os.environ.get("OFFLOAD_TEST_ARTIFACTS", ROOT / "test-artifacts"))


def executable() -> str:
    """The Chromium to drive; without one the browser tests skip (and fail on CI)."""
    if not CHROMIUM.exists():
        unavailable(
            f"no Chromium at {CHROMIUM}: install Debian's chromium package (bin/bootstrap does, "
            "as root, for the test extra) or point OFFLOAD_TEST_CHROMIUM at one"
        )
    return str(CHROMIUM)


async def launch(playwright: Playwright) -> Browser:
    """Debian's Chromium, headless."""
    # Chromium's own sandbox needs unprivileged user namespaces and refuses to start as root;
    # CI runs as root, and the browser only loads the test's own server, so it goes then only.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return await playwright.chromium.launch(executable_path=executable(), headless=True, args=args)


@dataclass
class Problems:
    """What went wrong inside a page while a test drove it: console errors, uncaught errors."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    # Pages the test navigated to: their own status (a 404 page) is the test's to assert.
    documents: set[str] = field(default_factory=set)

    def watch(self, page: Page) -> None:
        """Record `page`'s problems from now on."""
        page.on("console", lambda message: self._console(page, message))
        page.on("pageerror", lambda error: self.errors.append((page.url, f"uncaught {error}")))
        page.on("response", self._response)

    def _response(self, response: Response) -> None:
        if response.request.is_navigation_request():
            self.documents.add(response.url)

    def _console(self, page: Page, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append((message.location.get("url") or page.url, message.text))

    @property
    def found(self) -> list[str]:
        """Every problem, but the console's note of a page's own 4xx status (a "Not found"
        page is meant to be one, and the test checks its status)."""
        return [
            f"{where}: {text}"
            for where, text in self.errors
            if not (text.startswith("Failed to load resource") and where in self.documents)
        ]


@dataclass(frozen=True)
class Account:
    """Who signs in through the sign-in page."""

    username: str
    password: str


def first_admin(fleet: Fleet) -> Account:
    """The first site admin, as the server printed them when it first started."""
    assert fleet.server is not None, "the server was never started"
    found = fleet.server.wait_for(r"username (\S+)  password (\S+)")
    return Account(found.group(1), found.group(2))


async def sign_in(page: Page, base: str, account: Account, *, path: str = "/") -> None:
    """Open `path` signed out, type the account into the sign-in form, and land on `path`."""
    await page.goto(f"{base}{path}")
    assert re.search(r"/sign-in\?next=", page.url), page.url
    await page.get_by_label("Username").fill(account.username)
    await page.get_by_label("Password").fill(account.password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}{path}")


async def sign_out(page: Page, base: str) -> None:
    """Sign out with the header's button; the browser is back at the sign-in page."""
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{base}/sign-in")


def describe(violations: list[dict[str, Any]]) -> str:
    """axe-core's violations as a reader fixes them: rule, impact, help, offending nodes."""
    lines = []
    for rule in violations:
        lines.append(f"{rule['id']} ({rule['impact']}): {rule['help']} <{rule['helpUrl']}>")
        lines.extend(f"    {node['target']}: {node['failureSummary']}" for node in rule["nodes"])
    return "\n".join(lines)


@cache
def axe_source() -> str:
    """The vendored axe-core (tests/support/axe), read once."""
    return AXE.read_text()


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        # Evaluated rather than added as a <script>: the server's Content-Security-Policy
        # (script-src 'self') rightly blocks an inline script, and a test must not loosen it.
        await page.evaluate(axe_source())
    results: dict[str, Any] = await page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']})"
    )
    return [v for v in results["violations"] if v["impact"] in BLOCKING]


async def check_page(page: Page, name: str) -> None:
    """What every page must pass: axe-core finds nothing serious, a full-page screenshot is
    kept as `screenshots/<name>.png`, and at a phone's width the page does not scroll sideways.
    (Console errors fail the test through the `page` fixture.)"""
    serious = await axe_violations(page)
    assert not serious, f"{name} ({page.url}) fails axe-core:\n{describe(serious)}"
    shots = artifacts() / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=shots / f"{name}.png", full_page=True)
    await page.set_viewport_size(PHONE)
    try:
        widths = await page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]"
        )
        await page.screenshot(path=shots / f"{name}-phone.png", full_page=True)
    finally:
        await page.set_viewport_size(LAPTOP)
    assert widths[0] <= widths[1], (
        f"{name} ({page.url}) scrolls sideways at {PHONE['width']} px: the document is "
        f"{widths[0]} px wide; see {shots / f'{name}-phone.png'}"
    )
