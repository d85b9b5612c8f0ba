"""GiteaHost's own ways, against recorded Gitea API exchanges (no Gitea runs on these machines).

What every REST host does alike is tested in `test_codehosts_rest.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from recorded import GITEA, Replay

from offload.repos.codehosts.base import CodeHostError, PullRequestChanges
from offload.repos.codehosts.gitea import GiteaHost

TOKEN = GITEA.token
REPO = GITEA.repo


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """Factory: a GiteaHost whose HTTP client answers from one recording."""
    async with Replay(GITEA) as replay:
        yield replay


async def test_get_ignores_dismissed_reviews_and_maps_the_commit_status(replay: Replay) -> None:
    pull = await replay("get_approved_passing").get(REPO, "12")
    assert pull.review_state == "approved"
    assert pull.checks_state == "passed"


async def test_get_maps_a_request_for_changes_and_a_failure(replay: Replay) -> None:
    pull = await replay("get_changes_requested_failing").get(REPO, "12")
    assert pull.review_state == "changes_requested"
    assert pull.checks_state == "failed"


async def test_a_token_without_the_scope_is_told_which(replay: Replay) -> None:
    host = replay("forbidden")
    with pytest.raises(CodeHostError, match=r"required scope\(s\): \[write:repository\]"):
        await host.update(REPO, "12", PullRequestChanges(reopen=True))


def test_push_url_carries_the_token_as_the_password() -> None:
    host = GiteaHost("https://gitea.example.com/api/v1", TOKEN)
    assert host.api_url == "https://gitea.example.com/api/v1"
    assert host.push_url(REPO) == (
        f"https://offload:{TOKEN}@gitea.example.com/infra/deploy-scripts.git"
    )


def test_push_url_keeps_a_sub_path() -> None:
    host = GiteaHost("http://git.example.com/gitea/", TOKEN)
    assert host.push_url(REPO) == (
        f"http://offload:{TOKEN}@git.example.com/gitea/infra/deploy-scripts.git"
    )
