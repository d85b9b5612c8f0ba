"""GitLabHost's own ways, against recorded GitLab API exchanges (no GitLab is in reach).

What every REST host does alike is tested in `test_codehosts_rest.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from recorded import GITLAB, Replay

from offload.repos.codehosts.base import CodeHostError, PullRequestChanges
from offload.repos.codehosts.gitlab import GitLabHost

TOKEN = GITLAB.token
REPO = GITLAB.repo


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """Factory: a GitLabHost whose HTTP client answers from one recording."""
    async with Replay(GITLAB) as replay:
        yield replay


async def test_get_maps_approvals_and_a_passing_pipeline(replay: Replay) -> None:
    pull = await replay("get_approved_passing").get(REPO, "7")
    assert pull.review_state == "approved"
    assert pull.checks_state == "passed"


async def test_get_maps_a_request_for_changes_and_a_failed_pipeline(replay: Replay) -> None:
    pull = await replay("get_changes_requested_failing").get(REPO, "7")
    # bob approved, but alice asked for changes.
    assert pull.review_state == "changes_requested"
    assert pull.checks_state == "failed"


async def test_a_token_without_the_api_scope_is_told_so(replay: Replay) -> None:
    host = replay("forbidden")
    with pytest.raises(CodeHostError, match="insufficient_scope") as error:
        await host.update(REPO, "7", PullRequestChanges(reopen=True))
    assert "PUT /projects/acme%2Fplatform%2Fapi/merge_requests/7" in str(error.value)
    assert "api scope" in str(error.value)


def test_push_url_carries_the_token_as_oauth2_credentials() -> None:
    host = GitLabHost("https://gitlab.example.com/", TOKEN)
    assert host.push_url(REPO) == (
        f"https://oauth2:{TOKEN}@gitlab.example.com/acme/platform/api.git"
    )


def test_an_api_url_and_a_relative_root_are_both_understood() -> None:
    assert GitLabHost("https://gitlab.com/api/v4", TOKEN).api_url == "https://gitlab.com/api/v4"
    host = GitLabHost("https://example.com/gitlab", TOKEN)
    assert host.api_url == "https://example.com/gitlab/api/v4"
    assert host.push_url("team/app") == f"https://oauth2:{TOKEN}@example.com/gitlab/team/app.git"
