"""GitHubHost's own ways, against recorded GitHub API exchanges (github.com is out of reach).

What every REST host does alike is tested in `test_codehosts_rest.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from recorded import GITHUB, Replay

from offload.repos.codehosts.base import CodeHostError, PullRequestChanges, PullRequestNotFound
from offload.repos.codehosts.github import GitHubHost, graphql_url

TOKEN = GITHUB.token
REPO = GITHUB.repo


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """Factory: a GitHubHost whose HTTP client answers from one recording."""
    async with Replay(GITHUB) as replay:
        yield replay


async def test_get_maps_latest_reviews_and_failing_check_runs(replay: Replay) -> None:
    pull = await replay("get_approved_failing").get(REPO, "42")
    # alice asked for changes, then approved; bob only commented.
    assert pull.review_state == "approved"
    # The commit status passed, but one check run failed.
    assert pull.checks_state == "failed"


async def test_get_maps_a_request_for_changes_and_pending_statuses(replay: Replay) -> None:
    pull = await replay("get_changes_requested_pending").get(REPO, "42")
    assert pull.review_state == "changes_requested"
    assert pull.checks_state == "pending"


async def test_update_marks_a_draft_ready_through_graphql(replay: Replay) -> None:
    pull = await replay("ready").update(REPO, "42", PullRequestChanges(draft=False))
    assert pull.state == "open"
    assert replay.requests[1].url == "https://api.github.com/graphql"


async def test_update_converts_a_pull_request_to_a_draft(replay: Replay) -> None:
    pull = await replay("to_draft").update(REPO, "42", PullRequestChanges(draft=True))
    assert pull.state == "draft"


async def test_a_refused_graphql_mutation_is_an_error(replay: Replay) -> None:
    host = replay("ready_refused")
    with pytest.raises(CodeHostError, match="Resource not accessible by integration") as error:
        await host.update(REPO, "42", PullRequestChanges(draft=False))
    assert "markPullRequestReadyForReview" in str(error.value)
    assert "Pull requests: read and write" in str(error.value)


async def test_closing_a_merged_pull_request_changes_nothing(replay: Replay) -> None:
    # Replay fails the test on any request beyond the recording: no PATCH is sent.
    pull = await replay("close_merged").close(REPO, "42")
    assert pull.state == "merged"


async def test_a_rate_limit_says_when_to_retry(replay: Replay) -> None:
    host = replay("rate_limited")
    with pytest.raises(CodeHostError, match="rate limit") as error:
        await host.get(REPO, "42")
    assert "retry after 2024-05-01 12:00:00 UTC" in str(error.value)
    assert not isinstance(error.value, PullRequestNotFound)


async def test_a_server_error_names_the_host_and_the_call(replay: Replay) -> None:
    host = replay("server_error")
    with pytest.raises(CodeHostError) as error:
        await host.get(REPO, "42")
    assert "api.github.com" in str(error.value)
    assert "GET /repos/octo-org/hello-world/pulls/42" in str(error.value)
    assert "502" in str(error.value)


def test_push_url_carries_the_token_for_github_com() -> None:
    host = GitHubHost("https://api.github.com", TOKEN)
    assert host.push_url(REPO) == (
        f"https://x-access-token:{TOKEN}@github.com/octo-org/hello-world.git"
    )


def test_push_url_and_graphql_on_enterprise_server() -> None:
    host = GitHubHost("https://ghe.example.com/api/v3/", TOKEN)
    assert host.api_url == "https://ghe.example.com/api/v3"
    assert host.push_url(REPO) == (
        f"https://x-access-token:{TOKEN}@ghe.example.com/octo-org/hello-world.git"
    )
    # Enterprise Server serves GraphQL beside the REST root, not below it.
    assert graphql_url(host.api_url) == "https://ghe.example.com/api/graphql"


def test_a_web_url_is_taken_for_its_api() -> None:
    assert GitHubHost("https://github.com", TOKEN).api_url == "https://api.github.com"
    assert GitHubHost("https://ghe.example.com", TOKEN).api_url == "https://ghe.example.com/api/v3"


def test_a_repository_must_be_owner_and_name() -> None:
    with pytest.raises(CodeHostError, match="owner/name"):
        GitHubHost("https://api.github.com", TOKEN).push_url("hello-world")
