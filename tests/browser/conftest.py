"""Fixtures of the browser tests: one Chromium per test process, a fresh page per test that
fails the test on any console error, and a served offload (real server process) to point it at.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from fleet import Fleet, make_repo
from playwright.async_api import Browser, Page, async_playwright

from browser import LAPTOP, Problems, launch
from offload.db.url import DatabaseURL

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests in the session's event loop: the browser lives there."""
    session_loop = pytest.mark.asyncio(loop_scope="session")
    for item in items:
        if pytest_asyncio.is_async_test(item) and item.path.is_relative_to(HERE):
            item.add_marker(session_loop, append=False)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, for every test of this process."""
    async with async_playwright() as playwright:
        browser = await launch(playwright)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(chromium: Browser) -> AsyncIterator[Page]:
    """A fresh page (its own cookies) at a laptop's size; any console error or uncaught error
    in it fails the test."""
    context = await chromium.new_context(viewport=LAPTOP)
    problems = Problems()
    opened = await context.new_page()
    problems.watch(opened)
    yield opened
    await context.close()
    if problems.found:
        pytest.fail("the page had errors:\n" + "\n".join(problems.found))


@pytest.fixture
def served(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    """A real `offload server` on a fresh database, with repository `demo` added; its first
    site admin is the one it printed (browser.first_admin)."""
    fleet = Fleet(db_url, tmp_path / "data")
    make_repo(tmp_path / "src" / "demo", {"README": "hello from demo\n"})
    fleet.start_server()
    try:
        added = fleet.offload("repos", "add", str(tmp_path / "src" / "demo"), "--name", "demo")
        assert added.returncode == 0, added.stderr
        yield fleet
    finally:
        fleet.stop_all()
