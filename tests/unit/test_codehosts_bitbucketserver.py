"""BitbucketServerHost against recorded Bitbucket Server API exchanges (none runs here).

What every REST host does alike (open, update, close, reopen, refusals) is tested in
`test_codehosts_rest.py`; this is what Bitbucket Server does its own way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from recorded import BITBUCKET_SERVER, Replay

from offload.repos.codehosts.base import CodeHostError, PullRequestChanges
from offload.repos.codehosts.bitbucketserver import BitbucketServerHost

TOKEN = BITBUCKET_SERVER.token
REPO = BITBUCKET_SERVER.repo
NUMBER = BITBUCKET_SERVER.number
DRAFT = BITBUCKET_SERVER.draft


@pytest.fixture
async def replay() -> AsyncIterator[Replay]:
    """Factory: a BitbucketServerHost whose HTTP client answers from one recording."""
    async with Replay(BITBUCKET_SERVER) as replay:
        yield replay


async def test_open_returns_the_pull_request_bitbucket_names_as_the_duplicate(
    replay: Replay,
) -> None:
    pull = await replay("open_existing").open(DRAFT)
    assert pull.external_id == NUMBER
    assert pull.state == "open"
    assert pull.checks_state == "passed"


async def test_open_finds_the_existing_one_by_its_branches_when_not_named(replay: Replay) -> None:
    # The first page holds #18, from the same branch into release/2.4; #17 is on the next.
    pull = await replay("open_existing_listed").open(DRAFT)
    assert pull.external_id == NUMBER
    assert pull.base_ref == "main"


async def test_another_conflict_on_open_is_told_in_bitbucket_words(replay: Replay) -> None:
    with pytest.raises(CodeHostError) as error:
        await replay("open_up_to_date").open(DRAFT)
    message = str(error.value)
    assert (
        "refused to open a pull request from offload/fix-readme into main in PLAT/deploy-tools"
        in message
    )
    assert "(409): " in message
    assert "offload/fix-readme is already up-to-date with branch main" in message


async def test_an_update_on_a_stale_version_is_read_again_and_sent_once_more(
    replay: Replay,
) -> None:
    changes = PullRequestChanges(title="Fix the README")
    pull = await replay("update_stale").update(REPO, NUMBER, changes)
    assert pull.title == "Fix the README"
    # The reviewer added in between is kept (the recording's second PUT names her).
    assert pull.review_state == "pending"


async def test_a_server_without_drafts_says_so(replay: Replay) -> None:
    host = replay("to_draft_unsupported")
    with pytest.raises(CodeHostError, match=r"no draft pull requests \(they came with Data Center"):
        await host.update(REPO, NUMBER, PullRequestChanges(draft=True))


async def test_closing_a_merged_pull_request_changes_nothing(replay: Replay) -> None:
    pull = await replay("close_merged").close(REPO, NUMBER)
    assert pull.state == "merged"
    assert pull.checks_state == "passed"


async def test_get_maps_an_approval_and_passing_builds(replay: Replay) -> None:
    pull = await replay("get_approved_passing").get(REPO, NUMBER)
    # bob approved; carol has not decided.
    assert pull.review_state == "approved"
    assert pull.checks_state == "passed"


async def test_get_maps_needs_work_and_a_failed_build(replay: Replay) -> None:
    pull = await replay("get_needs_work_failing").get(REPO, NUMBER)
    # bob approved, but alice said it needs work; one build failed while another still runs.
    assert pull.review_state == "changes_requested"
    assert pull.checks_state == "failed"


async def test_a_token_without_write_permission_is_told_so(replay: Replay) -> None:
    with pytest.raises(CodeHostError) as error:
        await replay("forbidden").open(DRAFT)
    message = str(error.value)
    assert "POST /projects/PLAT/repos/deploy-tools/pull-requests" in message
    assert "You are not permitted to access this resource" in message
    assert "the token needs repository write permission" in message


def test_push_url_carries_the_user_named_in_the_url_and_the_token() -> None:
    host = BitbucketServerHost("https://offload-bot@bitbucket.example.com/rest/api/1.0", TOKEN)
    assert host.api_url == "https://bitbucket.example.com/rest/api/1.0"
    assert host.push_url(REPO) == (
        f"https://offload-bot:{TOKEN}@bitbucket.example.com/scm/plat/deploy-tools.git"
    )


def test_a_context_path_and_a_personal_repository() -> None:
    host = BitbucketServerHost("http://jane.doe%40example.com@example.com/bitbucket/", TOKEN)
    assert host.api_url == "http://example.com/bitbucket/rest/api/1.0"
    assert host.push_url("~jane/dotfiles") == (
        f"http://jane.doe%40example.com:{TOKEN}@example.com/bitbucket/scm/~jane/dotfiles.git"
    )


def test_a_repository_named_by_its_clone_url_path_is_understood() -> None:
    # A repository mirrored from https://.../bitbucket/scm/plat/deploy-tools.git.
    host = BitbucketServerHost("https://offload-bot@example.com/bitbucket", TOKEN)
    assert host.push_url("bitbucket/scm/plat/deploy-tools") == (
        f"https://offload-bot:{TOKEN}@example.com/bitbucket/scm/plat/deploy-tools.git"
    )


def test_pushing_without_the_token_owner_says_where_to_name_them() -> None:
    host = BitbucketServerHost("https://bitbucket.example.com", TOKEN)
    with pytest.raises(CodeHostError) as error:
        host.push_url(REPO)
    message = str(error.value)
    assert "give it in the code host's URL, e.g. https://offload-bot@bitbucket.example.com" in (
        message
    )
    assert TOKEN not in message


def test_a_repository_of_another_form_is_refused() -> None:
    host = BitbucketServerHost("https://offload-bot@bitbucket.example.com", TOKEN)
    with pytest.raises(CodeHostError, match="'plat/tools/deploy' is not of the form PROJECT/repo"):
        host.push_url("plat/tools/deploy")
