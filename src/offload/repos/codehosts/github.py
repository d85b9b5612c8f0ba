"""GitHub and GitHub Enterprise Server: pull requests over REST, the draft switch over GraphQL."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from offload.repos.codehosts.base import (
    ChecksState,
    CodeHostError,
    PullRequest,
    PullRequestChanges,
    PullRequestDraft,
    PullRequestState,
    ReviewState,
)
from offload.repos.codehosts.rest import (
    RestClient,
    RestDialect,
    edit_fields,
    latest_reviews,
    nested,
    owner_and_name,
)

API_VERSION = "2022-11-28"
# One page of reviews and check runs: pull requests offload opens rarely gather more.
PAGE_SIZE = 100
PERMISSIONS = (
    "a classic token needs the repo scope; a fine-grained token or a GitHub App needs "
    "Pull requests: read and write, Contents: read, Commit statuses: read and Checks: read"
)
# REST cannot change a pull request's draft flag; GraphQL can, given its node_id.
READY_FOR_REVIEW = (
    "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) "
    "{ pullRequest { isDraft } } }"
)
CONVERT_TO_DRAFT = (
    "mutation($id: ID!) { convertPullRequestToDraft(input: {pullRequestId: $id}) "
    "{ pullRequest { isDraft } } }"
)
_DRAFT_MUTATIONS = {
    True: ("convertPullRequestToDraft", CONVERT_TO_DRAFT),
    False: ("markPullRequestReadyForReview", READY_FOR_REVIEW),
}
# A dismissed review clears that reviewer's verdict.
_VERDICTS: dict[str, ReviewState] = {
    "APPROVED": "approved",
    "CHANGES_REQUESTED": "changes_requested",
    "DISMISSED": "pending",
}
_PASSED_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
# A commit status is success, pending, failure or error.
_STATUS_STATES: dict[str, ChecksState] = {"success": "passed", "pending": "pending"}


def _rate_limited(response: httpx.Response, message: str) -> bool:
    # GitHub answers a spent rate limit with 403 as often as with 429.
    headers = response.headers
    return response.status_code in (403, 429) and (
        headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in headers
        or "rate limit" in message.lower()
    )


def _message(body: dict[str, Any], reason: str) -> str:
    parts = [str(body.get("message") or reason)]
    for error in body.get("errors") or []:
        if isinstance(error, dict) and error.get("message"):
            parts.append(str(error["message"]))
    return ": ".join(parts)


DIALECT = RestDialect(
    name="GitHub",
    permissions=PERMISSIONS,
    expired="expired",
    root_hint=(
        "is the URL the API root "
        "(https://api.github.com, or https://<host>/api/v3 for Enterprise Server)?"
    ),
    rate_limited=_rate_limited,
    reset_header="x-ratelimit-reset",
    message=_message,
)


class GitHubHost:
    """Pull requests on github.com or a GitHub Enterprise Server, for one token."""

    kind = "github"

    def __init__(self, base_url: str, token: str, http: httpx.AsyncClient | None = None) -> None:
        self.api_url = api_url(base_url)
        self._token = token
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "offload",
        }
        self._rest = RestClient(DIALECT, self.api_url, token, headers, http)

    async def aclose(self) -> None:
        """Close the HTTP client, if this host made it."""
        await self._rest.aclose()

    async def open(self, draft: PullRequestDraft) -> PullRequest:
        """Open a pull request; an existing open one for the same head and base is returned."""
        owner, name = _split(draft.repo)
        path = f"/repos/{owner}/{name}/pulls"
        fields = {
            "title": draft.title,
            "body": draft.body,
            "head": draft.head_ref,
            "base": draft.base_ref,
            "draft": draft.draft,
        }
        what = f"repository {draft.repo}"
        created, _ = await self._rest.create(path, what, json=fields, exists=(422,))
        if created is not None:
            return await self._with_states(draft.repo, created)
        # A retry after a crash: the pull request was opened the first time.
        found = await self._rest.json_list(
            path,
            what,
            params={"state": "open", "head": f"{owner}:{draft.head_ref}", "base": draft.base_ref},
        )
        if not found:
            raise CodeHostError(
                f"GitHub says a pull request from {draft.head_ref} into {draft.base_ref} already "
                f"exists in {draft.repo}, but lists no open one: it may be from a fork with the "
                "same branch name; close it or rename the batch change's branch, then retry"
            )
        return await self._with_states(draft.repo, found[0])

    async def update(self, repo: str, external_id: str, changes: PullRequestChanges) -> PullRequest:
        """Change title, body, base, draft state, or reopen; the pull request afterwards."""
        path, what = self._pull(repo, external_id)
        fields = edit_fields(
            changes.title, changes, body="body", base="base", reopen=("state", "open")
        )
        data = await self._rest.edit("PATCH", path, what, fields)
        if changes.draft is not None and bool(data.get("draft")) != changes.draft:
            node_id = str(data.get("node_id", ""))
            data = {**data, "draft": await self._switch_draft(changes.draft, node_id, what)}
        return await self._with_states(repo, data)

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Close without merging (closing a closed or merged one changes nothing)."""
        path, what = self._pull(repo, external_id)
        data = await self._rest.json_object("GET", path, what)
        if _state(data) not in ("closed", "merged"):
            data = await self._rest.json_object("PATCH", path, what, json={"state": "closed"})
        return await self._with_states(repo, data)

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """The pull request as it is now (PullRequestNotFound if it is gone)."""
        path, what = self._pull(repo, external_id)
        return await self._with_states(repo, await self._rest.json_object("GET", path, what))

    def push_url(self, repo: str) -> str:
        """The https clone URL of `repo` with the token as an app-style credential."""
        owner, name = _split(repo)
        web = urlsplit(web_url(self.api_url))
        credentials = f"x-access-token:{quote(self._token, safe='')}"
        return f"{web.scheme}://{credentials}@{web.netloc}{web.path}/{owner}/{name}.git"

    def _pull(self, repo: str, external_id: str) -> tuple[str, str]:
        owner, name = _split(repo)
        number = quote(external_id, safe="")
        return f"/repos/{owner}/{name}/pulls/{number}", f"pull request #{external_id} in {repo}"

    async def _with_states(self, repo: str, data: dict[str, Any]) -> PullRequest:
        pull = _pull_request(data)
        path, what = self._pull(repo, pull.external_id)
        owner, name = _split(repo)
        sha = quote(str(nested(data, "head").get("sha", "")), safe="")
        commit = f"/repos/{owner}/{name}/commits/{sha}"
        page = {"per_page": PAGE_SIZE}
        reviews = await self._rest.json_list(f"{path}/reviews", what, params=page)
        status = await self._rest.json_object("GET", f"{commit}/status", what)
        runs = await self._rest.json_object("GET", f"{commit}/check-runs", what, params=page)
        return replace(
            pull, review_state=review_state(reviews), checks_state=checks_state(status, runs)
        )

    async def _switch_draft(self, draft: bool, node_id: str, what: str) -> bool:
        action, mutation = _DRAFT_MUTATIONS[draft]
        call = f"POST /graphql ({action})"
        response = await self._rest.call(
            "POST",
            "/graphql",
            what,
            url=graphql_url(self.api_url),
            json={"query": mutation, "variables": {"id": node_id}},
        )
        answer = self._rest.as_object(response, call)
        # GraphQL reports refusals with 200 and a list of errors.
        errors = answer.get("errors")
        if errors:
            messages = "; ".join(str(e.get("message", e)) for e in errors if isinstance(e, dict))
            raise CodeHostError(
                f"GitHub refused {call} for {what}: {self._rest.clean(messages)}; {PERMISSIONS}"
            )
        result = nested(nested(answer, "data"), action)
        return bool(nested(result, "pullRequest").get("isDraft"))


def api_url(base_url: str) -> str:
    """The REST root: api.github.com for github.com, `<host>/api/v3` for Enterprise Server."""
    base = base_url.rstrip("/")
    parts = urlsplit(base)
    if parts.netloc == "github.com":
        return f"{parts.scheme}://api.github.com"
    if parts.netloc == "api.github.com" or parts.path.endswith("/api/v3"):
        return base
    return base + "/api/v3"


def web_url(api: str) -> str:
    """Where people and git see the host: github.com, or the Enterprise Server's root."""
    parts = urlsplit(api)
    if parts.netloc == "api.github.com":
        return f"{parts.scheme}://github.com"
    return api.removesuffix("/api/v3")


def graphql_url(api: str) -> str:
    """api.github.com/graphql, or `<host>/api/graphql` on Enterprise Server (not /api/v3)."""
    if api.endswith("/api/v3"):
        return api.removesuffix("/v3") + "/graphql"
    return api + "/graphql"


def review_state(reviews: list[dict[str, Any]]) -> ReviewState:
    """Each reviewer's latest verdict: one request for changes outweighs any approval."""
    return latest_reviews(reviews, _VERDICTS)


def checks_state(status: dict[str, Any], runs: dict[str, Any]) -> ChecksState | None:
    """Commit statuses and check runs of the head commit together; None when there are none."""
    results: list[ChecksState] = []
    for context in status.get("statuses") or []:
        state = context.get("state") if isinstance(context, dict) else None
        results.append(_STATUS_STATES.get(str(state), "failed"))
    for run in runs.get("check_runs") or []:
        if not isinstance(run, dict):
            continue
        if run.get("status") != "completed":
            results.append("pending")
        elif run.get("conclusion") in _PASSED_CONCLUSIONS:
            results.append("passed")
        else:
            results.append("failed")
    if not results:
        return None
    if "failed" in results:
        return "failed"
    return "pending" if "pending" in results else "passed"


def _pull_request(data: dict[str, Any]) -> PullRequest:
    return PullRequest(
        external_id=str(data.get("number", "")),
        state=_state(data),
        title=str(data.get("title") or ""),
        body=str(data.get("body") or ""),
        base_ref=str(nested(data, "base").get("ref", "")),
        head_ref=str(nested(data, "head").get("ref", "")),
        url=str(data.get("html_url") or ""),
    )


def _state(data: dict[str, Any]) -> PullRequestState:
    # Listed pull requests carry merged_at but not merged.
    if data.get("merged") or data.get("merged_at"):
        return "merged"
    if data.get("state") == "closed":
        return "closed"
    return "draft" if data.get("draft") else "open"


def _split(repo: str) -> tuple[str, str]:
    return owner_and_name(repo, "GitHub")
