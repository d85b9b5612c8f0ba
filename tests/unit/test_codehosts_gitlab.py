"""GitLabHost against recorded GitLab API exchanges (no GitLab can be reached from here)."""

from __future__ import annotations

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
from offload.repos.codehosts.gitlab import GitLabHost

RECORDINGS = Path(__file__).parent.parent / "fixtures" / "codehosts" / "gitlab"
TOKEN = "glpat-recordedTOKEN000000"
# A project in a subgroup: its path goes into the URL encoded as acme%2Fplatform%2Fapi.
REPO = "acme/platform/api"
DRAFT = PullRequestDraft(
    repo=REPO,
    base_ref="main",
    head_ref="offload/fix-readme",
    title="Fix the README's install steps",
    body="Created by offload batch change `fix-readme`.",
)

Replay = Callable[[str], tuple[GitLabHost, RecordedTransport]]


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """Factory: a GitLabHost whose HTTP client answers from one recording."""
    clients: list[httpx.AsyncClient] = []

    def make(name: str) -> tuple[GitLabHost, RecordedTransport]:
        transport = RecordedTransport(
            RECORDINGS / f"{name}_recorded.json", headers={"PRIVATE-TOKEN": TOKEN}
        )
        clients.append(httpx.AsyncClient(transport=transport))
        return GitLabHost("https://gitlab.example.com", TOKEN, clients[-1]), transport

    yield make
    for client in clients:
        await client.aclose()


async def test_open_creates_a_merge_request_and_reads_its_states(replay: Replay) -> None:
    host, recording = replay("open")
    pull = await host.open(DRAFT)
    recording.assert_all_used()
    assert pull.external_id == "7"  # the project-scoped iid, not the global id
    assert pull.state == "open"
    assert (pull.title, pull.body) == (DRAFT.title, DRAFT.body)
    assert (pull.base_ref, pull.head_ref) == ("main", "offload/fix-readme")
    assert pull.url == "https://gitlab.example.com/acme/platform/api/-/merge_requests/7"
    # No approval rules and nobody approved yet; no pipeline at all.
    assert pull.review_state == "pending"
    assert pull.checks_state is None


async def test_open_as_draft_prefixes_the_title(replay: Replay) -> None:
    host, recording = replay("open_draft")
    pull = await host.open(replace(DRAFT, draft=True))
    recording.assert_all_used()
    assert pull.state == "draft"
    # offload keeps the draft state apart from the title.
    assert pull.title == DRAFT.title


async def test_open_returns_the_open_merge_request_when_one_exists(replay: Replay) -> None:
    host, recording = replay("open_existing")
    pull = await host.open(DRAFT)
    recording.assert_all_used()
    assert pull.external_id == "7"
    assert pull.checks_state == "pending"  # its head pipeline is running


async def test_get_maps_approvals_and_a_passing_pipeline(replay: Replay) -> None:
    host, recording = replay("get_approved_passing")
    pull = await host.get(REPO, "7")
    recording.assert_all_used()
    assert pull.review_state == "approved"
    assert pull.checks_state == "passed"


async def test_get_maps_a_request_for_changes_and_a_failed_pipeline(replay: Replay) -> None:
    host, recording = replay("get_changes_requested_failing")
    pull = await host.get(REPO, "7")
    recording.assert_all_used()
    # bob approved, but alice asked for changes.
    assert pull.review_state == "changes_requested"
    assert pull.checks_state == "failed"


async def test_update_changes_title_and_description(replay: Replay) -> None:
    host, recording = replay("update")
    pull = await host.update(
        REPO, "7", PullRequestChanges(title="Fix the README", body="Now with Windows steps.")
    )
    recording.assert_all_used()
    assert (pull.title, pull.body) == ("Fix the README", "Now with Windows steps.")


async def test_update_marks_a_draft_ready_by_dropping_the_prefix(replay: Replay) -> None:
    host, recording = replay("ready")
    pull = await host.update(REPO, "7", PullRequestChanges(draft=False))
    recording.assert_all_used()
    assert pull.state == "open"
    assert pull.title == DRAFT.title


async def test_close(replay: Replay) -> None:
    host, recording = replay("close")
    pull = await host.close(REPO, "7")
    recording.assert_all_used()
    assert pull.state == "closed"


async def test_reopen(replay: Replay) -> None:
    host, recording = replay("reopen")
    pull = await host.update(REPO, "7", PullRequestChanges(reopen=True))
    recording.assert_all_used()
    assert pull.state == "open"


async def test_a_missing_merge_request_is_not_found(replay: Replay) -> None:
    host, recording = replay("not_found")
    with pytest.raises(PullRequestNotFound, match="merge request !4242 in acme/platform/api"):
        await host.get(REPO, "4242")
    recording.assert_all_used()


async def test_a_refused_token_is_explained_without_showing_it(replay: Replay) -> None:
    host, recording = replay("unauthorized")
    with pytest.raises(CodeHostError) as error:
        await host.get(REPO, "7")
    recording.assert_all_used()
    message = str(error.value)
    assert "refused the token" in message
    assert "api scope" in message
    assert TOKEN not in message


async def test_a_token_without_the_api_scope_is_told_so(replay: Replay) -> None:
    host, recording = replay("forbidden")
    with pytest.raises(CodeHostError, match="insufficient_scope") as error:
        await host.update(REPO, "7", PullRequestChanges(reopen=True))
    recording.assert_all_used()
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
