"""GiteaHost against recorded Gitea API exchanges (no Gitea instance runs on these machines)."""

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
from offload.repos.codehosts.gitea import GiteaHost

RECORDINGS = Path(__file__).parent.parent / "fixtures" / "codehosts" / "gitea"
TOKEN = "recorded0gitea0token0000000000000000000"
REPO = "infra/deploy-scripts"
DRAFT = PullRequestDraft(
    repo=REPO,
    base_ref="main",
    head_ref="offload/fix-readme",
    title="Fix the README's install steps",
    body="Created by offload batch change `fix-readme`.",
)

Replay = Callable[[str], tuple[GiteaHost, RecordedTransport]]


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """Factory: a GiteaHost whose HTTP client answers from one recording."""
    clients: list[httpx.AsyncClient] = []

    def make(name: str) -> tuple[GiteaHost, RecordedTransport]:
        transport = RecordedTransport(
            RECORDINGS / f"{name}_recorded.json", headers={"Authorization": f"token {TOKEN}"}
        )
        clients.append(httpx.AsyncClient(transport=transport))
        return GiteaHost("https://gitea.example.com", TOKEN, clients[-1]), transport

    yield make
    for client in clients:
        await client.aclose()


async def test_open_creates_a_pull_request_and_reads_its_states(replay: Replay) -> None:
    host, recording = replay("open")
    pull = await host.open(DRAFT)
    recording.assert_all_used()
    assert pull.external_id == "12"
    assert pull.state == "open"
    assert (pull.title, pull.body) == (DRAFT.title, DRAFT.body)
    assert (pull.base_ref, pull.head_ref) == ("main", "offload/fix-readme")
    assert pull.url == "https://gitea.example.com/infra/deploy-scripts/pulls/12"
    assert pull.review_state == "pending"
    # No commit status at all: nothing to wait for.
    assert pull.checks_state is None


async def test_open_as_draft_prefixes_the_title_with_wip(replay: Replay) -> None:
    host, recording = replay("open_draft")
    pull = await host.open(replace(DRAFT, draft=True))
    recording.assert_all_used()
    assert pull.state == "draft"
    assert pull.title == DRAFT.title


async def test_open_returns_the_open_pull_request_when_one_exists(replay: Replay) -> None:
    host, recording = replay("open_existing")
    pull = await host.open(DRAFT)
    recording.assert_all_used()
    # Gitea lists #13 (another branch) first; #12 is the one for this head and base.
    assert pull.external_id == "12"
    assert pull.checks_state == "passed"


async def test_get_ignores_dismissed_reviews_and_maps_the_commit_status(replay: Replay) -> None:
    host, recording = replay("get_approved_passing")
    pull = await host.get(REPO, "12")
    recording.assert_all_used()
    assert pull.review_state == "approved"
    assert pull.checks_state == "passed"


async def test_get_maps_a_request_for_changes_and_a_failure(replay: Replay) -> None:
    host, recording = replay("get_changes_requested_failing")
    pull = await host.get(REPO, "12")
    recording.assert_all_used()
    assert pull.review_state == "changes_requested"
    assert pull.checks_state == "failed"


async def test_update_changes_title_and_body(replay: Replay) -> None:
    host, recording = replay("update")
    pull = await host.update(
        REPO, "12", PullRequestChanges(title="Fix the README", body="Now with Windows steps.")
    )
    recording.assert_all_used()
    assert (pull.title, pull.body) == ("Fix the README", "Now with Windows steps.")


async def test_update_marks_a_draft_ready_by_dropping_the_prefix(replay: Replay) -> None:
    host, recording = replay("ready")
    pull = await host.update(REPO, "12", PullRequestChanges(draft=False))
    recording.assert_all_used()
    assert pull.state == "open"


async def test_close(replay: Replay) -> None:
    host, recording = replay("close")
    pull = await host.close(REPO, "12")
    recording.assert_all_used()
    assert pull.state == "closed"


async def test_reopen(replay: Replay) -> None:
    host, recording = replay("reopen")
    pull = await host.update(REPO, "12", PullRequestChanges(reopen=True))
    recording.assert_all_used()
    assert pull.state == "open"


async def test_a_missing_pull_request_is_not_found(replay: Replay) -> None:
    host, recording = replay("not_found")
    with pytest.raises(PullRequestNotFound, match="pull request #4242 in infra/deploy-scripts"):
        await host.get(REPO, "4242")
    recording.assert_all_used()


async def test_a_refused_token_is_explained_without_showing_it(replay: Replay) -> None:
    host, recording = replay("unauthorized")
    with pytest.raises(CodeHostError) as error:
        await host.get(REPO, "12")
    recording.assert_all_used()
    message = str(error.value)
    assert "refused the token" in message
    assert "write:repository" in message
    assert TOKEN not in message


async def test_a_token_without_the_scope_is_told_which(replay: Replay) -> None:
    host, recording = replay("forbidden")
    with pytest.raises(CodeHostError, match=r"required scope\(s\): \[write:repository\]"):
        await host.update(REPO, "12", PullRequestChanges(reopen=True))
    recording.assert_all_used()


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
