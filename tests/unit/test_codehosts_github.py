"""GitHubHost against recorded GitHub API exchanges (github.com cannot be reached from here)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from recorded import RecordedTransport

from offload.repos.codehosts.base import (
    CodeHostError,
    PullRequestChanges,
    PullRequestDraft,
    PullRequestNotFound,
)
from offload.repos.codehosts.github import GitHubHost, graphql_url

RECORDINGS = Path(__file__).parent.parent / "fixtures" / "codehosts" / "github"
TOKEN = "ghp_recordedTOKEN0000000000000000000000"
REPO = "octo-org/hello-world"
DRAFT = PullRequestDraft(
    repo=REPO,
    base_ref="main",
    head_ref="offload/fix-readme",
    title="Fix the README's install steps",
    body="Created by offload batch change `fix-readme`.",
)

Replay = Callable[[str], tuple[GitHubHost, RecordedTransport]]


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """Factory: a GitHubHost whose HTTP client answers from one recording."""
    clients: list[httpx.AsyncClient] = []

    def make(name: str) -> tuple[GitHubHost, RecordedTransport]:
        transport = RecordedTransport(
            RECORDINGS / f"{name}_recorded.json", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        clients.append(httpx.AsyncClient(transport=transport))
        return GitHubHost("https://api.github.com", TOKEN, clients[-1]), transport

    yield make
    for client in clients:
        await client.aclose()


async def test_open_creates_a_pull_request_and_reads_its_states(replay: Replay) -> None:
    host, recording = replay("open")
    pull = await host.open(DRAFT)
    recording.assert_all_used()
    assert pull.external_id == "42"
    assert pull.state == "open"
    assert (pull.title, pull.body) == (DRAFT.title, DRAFT.body)
    assert (pull.base_ref, pull.head_ref) == ("main", "offload/fix-readme")
    assert pull.url == "https://github.com/octo-org/hello-world/pull/42"
    assert pull.review_state == "pending"
    # No commit statuses and no check runs: nothing to wait for.
    assert pull.checks_state is None
    assert recording.requests[0].headers["X-GitHub-Api-Version"] == "2022-11-28"


async def test_open_as_draft(replay: Replay) -> None:
    host, recording = replay("open_draft")
    pull = await host.open(replace(DRAFT, draft=True))
    recording.assert_all_used()
    assert pull.state == "draft"
    assert pull.checks_state == "pending"  # a queued check run


async def test_open_returns_the_open_pull_request_when_one_exists(replay: Replay) -> None:
    host, recording = replay("open_existing")
    pull = await host.open(DRAFT)
    recording.assert_all_used()
    assert pull.external_id == "42"
    assert pull.state == "open"
    assert pull.checks_state == "passed"


async def test_get_maps_latest_reviews_and_failing_check_runs(replay: Replay) -> None:
    host, recording = replay("get_approved_failing")
    pull = await host.get(REPO, "42")
    recording.assert_all_used()
    # alice asked for changes, then approved; bob only commented.
    assert pull.review_state == "approved"
    # The commit status passed, but one check run failed.
    assert pull.checks_state == "failed"


async def test_get_maps_a_request_for_changes_and_pending_statuses(replay: Replay) -> None:
    host, recording = replay("get_changes_requested_pending")
    pull = await host.get(REPO, "42")
    recording.assert_all_used()
    assert pull.review_state == "changes_requested"
    assert pull.checks_state == "pending"


async def test_update_changes_title_and_body(replay: Replay) -> None:
    host, recording = replay("update")
    pull = await host.update(
        REPO, "42", PullRequestChanges(title="Fix the README", body="Now with Windows steps.")
    )
    recording.assert_all_used()
    assert (pull.title, pull.body) == ("Fix the README", "Now with Windows steps.")


async def test_update_marks_a_draft_ready_through_graphql(replay: Replay) -> None:
    host, recording = replay("ready")
    pull = await host.update(REPO, "42", PullRequestChanges(draft=False))
    recording.assert_all_used()
    assert pull.state == "open"
    assert recording.requests[1].url == "https://api.github.com/graphql"


async def test_update_converts_a_pull_request_to_a_draft(replay: Replay) -> None:
    host, recording = replay("to_draft")
    pull = await host.update(REPO, "42", PullRequestChanges(draft=True))
    recording.assert_all_used()
    assert pull.state == "draft"


async def test_a_refused_graphql_mutation_is_an_error(replay: Replay) -> None:
    host, recording = replay("ready_refused")
    with pytest.raises(CodeHostError, match="Resource not accessible by integration") as error:
        await host.update(REPO, "42", PullRequestChanges(draft=False))
    recording.assert_all_used()
    assert "markPullRequestReadyForReview" in str(error.value)
    assert "Pull requests: read and write" in str(error.value)


async def test_close(replay: Replay) -> None:
    host, recording = replay("close")
    pull = await host.close(REPO, "42")
    recording.assert_all_used()
    assert pull.state == "closed"


async def test_closing_a_merged_pull_request_changes_nothing(replay: Replay) -> None:
    host, recording = replay("close_merged")
    pull = await host.close(REPO, "42")
    recording.assert_all_used()  # no PATCH was sent
    assert pull.state == "merged"


async def test_reopen(replay: Replay) -> None:
    host, recording = replay("reopen")
    pull = await host.update(REPO, "42", PullRequestChanges(reopen=True))
    recording.assert_all_used()
    assert pull.state == "open"


async def test_a_missing_pull_request_is_not_found(replay: Replay) -> None:
    host, recording = replay("not_found")
    with pytest.raises(PullRequestNotFound, match="pull request #4242 in octo-org/hello-world"):
        await host.get(REPO, "4242")
    recording.assert_all_used()


async def test_a_refused_token_is_explained_without_showing_it(replay: Replay) -> None:
    host, recording = replay("unauthorized")
    with pytest.raises(CodeHostError) as error:
        await host.get(REPO, "42")
    recording.assert_all_used()
    message = str(error.value)
    assert "refused the token" in message
    assert "Bad credentials" in message
    assert "repo scope" in message
    assert TOKEN not in message


async def test_a_rate_limit_says_when_to_retry(replay: Replay) -> None:
    host, recording = replay("rate_limited")
    with pytest.raises(CodeHostError, match="rate limit") as error:
        await host.get(REPO, "42")
    recording.assert_all_used()
    assert "retry after 2024-05-01 12:00:00 UTC" in str(error.value)
    assert not isinstance(error.value, PullRequestNotFound)


async def test_a_server_error_names_the_host_and_the_call(replay: Replay) -> None:
    host, recording = replay("server_error")
    with pytest.raises(CodeHostError) as error:
        await host.get(REPO, "42")
    recording.assert_all_used()
    assert "api.github.com" in str(error.value)
    assert "GET /repos/octo-org/hello-world/pulls/42" in str(error.value)
    assert "502" in str(error.value)


async def test_an_unreachable_host_is_an_error_naming_it() -> None:
    # A real connection to a port nothing listens on, not a fake.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient(timeout=5) as http:
        host = GitHubHost(f"http://127.0.0.1:{port}/api/v3", TOKEN, http)
        with pytest.raises(CodeHostError, match=f"could not reach GitHub at 127.0.0.1:{port}"):
            await host.get(REPO, "42")


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
