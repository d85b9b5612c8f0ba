"""What the REST code hosts do alike, each against its own recorded exchanges.

What one host does its own way is tested in `test_codehosts_<kind>.py`.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from recorded import BITBUCKET_SERVER, GITEA, GITHUB, GITLAB, RecordedHost, Replay

from offload.repos.codehosts.base import CodeHostError, PullRequestChanges, PullRequestNotFound
from offload.repos.codehosts.registry import CodeHostConfig, connect

HOSTS = [GITHUB, GITLAB, GITEA, BITBUCKET_SERVER]


@pytest.fixture(params=HOSTS, ids=lambda recorded: recorded.kind)
async def replay(request: pytest.FixtureRequest) -> AsyncIterator[Replay]:
    """Factory: hosts of each kind in turn, answering from that kind's recordings."""
    async with Replay(request.param) as replay:
        yield replay


async def test_open_creates_a_pull_request_and_reads_its_states(replay: Replay) -> None:
    recorded = replay.recorded
    pull = await replay("open").open(recorded.draft)
    assert pull.external_id == recorded.number
    assert pull.state == "open"
    assert (pull.title, pull.body) == (recorded.draft.title, recorded.draft.body)
    assert (pull.base_ref, pull.head_ref) == ("main", "offload/fix-readme")
    assert pull.url == recorded.pull_url
    # Nobody reviewed yet (GitLab: no approval rules and nobody approved).
    assert pull.review_state == "pending"
    # No commit status, check run or pipeline at all: nothing to wait for.
    assert pull.checks_state is None


async def test_open_as_draft(replay: Replay) -> None:
    recorded = replay.recorded
    draft = replace(recorded.draft, draft=True)
    pull = await replay("open_draft").open(draft)
    assert pull.state == "draft"
    # GitLab and Gitea mark drafts by a title prefix; offload keeps the state apart.
    assert pull.title == draft.title
    # GitHub's recording has a queued check run.
    checks = {"github": "pending", "gitlab": None, "gitea": None, "bitbucketserver": None}
    assert pull.checks_state == checks[recorded.kind]


async def test_open_returns_the_open_pull_request_when_one_exists(replay: Replay) -> None:
    recorded = replay.recorded
    pull = await replay("open_existing").open(recorded.draft)
    # Gitea lists #13 (another branch) first; #12 is the one for this head and base.
    # Bitbucket Server names the existing one in its refusal.
    assert pull.external_id == recorded.number
    assert pull.state == "open"
    # GitLab's recording has its head pipeline running.
    checks = {
        "github": "passed",
        "gitlab": "pending",
        "gitea": "passed",
        "bitbucketserver": "passed",
    }
    assert pull.checks_state == checks[recorded.kind]


async def test_update_changes_title_and_body(replay: Replay) -> None:
    recorded = replay.recorded
    changes = PullRequestChanges(title="Fix the README", body="Now with Windows steps.")
    pull = await replay("update").update(recorded.repo, recorded.number, changes)
    assert (pull.title, pull.body) == ("Fix the README", "Now with Windows steps.")


async def test_update_marks_a_draft_ready(replay: Replay) -> None:
    recorded = replay.recorded
    pull = await replay("ready").update(
        recorded.repo, recorded.number, PullRequestChanges(draft=False)
    )
    assert pull.state == "open"
    assert pull.title == recorded.draft.title


async def test_close(replay: Replay) -> None:
    recorded = replay.recorded
    pull = await replay("close").close(recorded.repo, recorded.number)
    assert pull.state == "closed"


async def test_reopen(replay: Replay) -> None:
    recorded = replay.recorded
    changes = PullRequestChanges(reopen=True)
    pull = await replay("reopen").update(recorded.repo, recorded.number, changes)
    assert pull.state == "open"


async def test_a_missing_pull_request_is_not_found(replay: Replay) -> None:
    named = {
        "github": "pull request #4242 in octo-org/hello-world",
        "gitlab": "merge request !4242 in acme/platform/api",
        "gitea": "pull request #4242 in infra/deploy-scripts",
        "bitbucketserver": "pull request #4242 in PLAT/deploy-tools",
    }
    recorded = replay.recorded
    with pytest.raises(PullRequestNotFound, match=named[recorded.kind]):
        await replay("not_found").get(recorded.repo, "4242")


async def test_a_refused_token_is_explained_without_showing_it(replay: Replay) -> None:
    # What the host said, and what the token needs.
    told = {
        "github": ("Bad credentials", "repo scope"),
        "gitlab": ("401 Unauthorized", "api scope"),
        "gitea": ("user does not exist", "write:repository"),
        "bitbucketserver": (
            "Authentication failed. Please check your credentials",
            "repository write permission",
        ),
    }
    recorded = replay.recorded
    with pytest.raises(CodeHostError) as error:
        await replay("unauthorized").get(recorded.repo, recorded.number)
    message = str(error.value)
    assert "refused the token" in message
    said, needs = told[recorded.kind]
    assert said in message
    assert needs in message
    assert recorded.token not in message


@pytest.mark.parametrize("recorded", HOSTS, ids=lambda recorded: recorded.kind)
async def test_an_unreachable_host_is_an_error_naming_it(recorded: RecordedHost) -> None:
    # A real connection to a port nothing listens on, not a fake.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = CodeHostConfig(recorded.kind, f"http://127.0.0.1:{port}", recorded.token)
    async with httpx.AsyncClient(timeout=5) as http:
        host = connect(config, http)
        reached = f"could not reach {recorded.name} at 127.0.0.1:{port}"
        with pytest.raises(CodeHostError, match=reached) as error:
            await host.get(recorded.repo, recorded.number)
    assert recorded.token not in str(error.value)
