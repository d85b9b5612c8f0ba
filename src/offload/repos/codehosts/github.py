"""GitHub and GitHub Enterprise Server: pull requests over REST, the draft switch over GraphQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import httpx

from offload.repos.codehosts.base import (
    ChecksState,
    CodeHostError,
    PullRequest,
    PullRequestChanges,
    PullRequestDraft,
    PullRequestNotFound,
    PullRequestState,
    ReviewState,
)

API_VERSION = "2022-11-28"
# A call slower than this is stuck; the reconciler will try again on its next pass.
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
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
_PASSED_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
# A commit status is success, pending, failure or error.
_STATUS_STATES: dict[str, ChecksState] = {"success": "passed", "pending": "pending"}


class GitHubHost:
    """Pull requests on github.com or a GitHub Enterprise Server, for one token."""

    kind = "github"

    def __init__(self, base_url: str, token: str, http: httpx.AsyncClient | None = None) -> None:
        self.api_url = api_url(base_url)
        self._token = token
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=TIMEOUT)
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "offload",
        }

    async def aclose(self) -> None:
        """Close the HTTP client, if this host made it."""
        if self._owns_http:
            await self._http.aclose()

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
        response = await self._call("POST", path, what, json=fields, tolerate=(422,))
        if response.status_code != 422:
            return await self._with_states(draft.repo, _object(response, "POST " + path))
        if "already exists" not in self._message(response):
            self._fail(response, f"POST {path}", what)
        # A retry after a crash: the pull request was opened the first time.
        found = await self._list(
            f"/repos/{owner}/{name}/pulls",
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
        fields: dict[str, Any] = {}
        if changes.title is not None:
            fields["title"] = changes.title
        if changes.body is not None:
            fields["body"] = changes.body
        if changes.base_ref is not None:
            fields["base"] = changes.base_ref
        if changes.reopen:
            fields["state"] = "open"
        if fields:
            data = await self._object("PATCH", path, what, json=fields)
        else:
            data = await self._object("GET", path, what)
        if changes.draft is not None and bool(data.get("draft")) != changes.draft:
            node_id = str(data.get("node_id", ""))
            data = {**data, "draft": await self._switch_draft(changes.draft, node_id, what)}
        return await self._with_states(repo, data)

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Close without merging (closing a closed or merged one changes nothing)."""
        path, what = self._pull(repo, external_id)
        data = await self._object("GET", path, what)
        if _state(data) not in ("closed", "merged"):
            data = await self._object("PATCH", path, what, json={"state": "closed"})
        return await self._with_states(repo, data)

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """The pull request as it is now (PullRequestNotFound if it is gone)."""
        path, what = self._pull(repo, external_id)
        return await self._with_states(repo, await self._object("GET", path, what))

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
        sha = quote(str(_field(data, "head").get("sha", "")), safe="")
        reviews = await self._list(f"{path}/reviews", what, params={"per_page": PAGE_SIZE})
        status = await self._object("GET", f"/repos/{owner}/{name}/commits/{sha}/status", what)
        runs = await self._object(
            "GET",
            f"/repos/{owner}/{name}/commits/{sha}/check-runs",
            what,
            params={"per_page": PAGE_SIZE},
        )
        return replace(
            pull, review_state=review_state(reviews), checks_state=checks_state(status, runs)
        )

    async def _switch_draft(self, draft: bool, node_id: str, what: str) -> bool:
        action, mutation = _DRAFT_MUTATIONS[draft]
        call = f"POST /graphql ({action})"
        response = await self._call(
            "POST",
            "/graphql",
            what,
            url=graphql_url(self.api_url),
            json={"query": mutation, "variables": {"id": node_id}},
        )
        answer = _object(response, call)
        # GraphQL reports refusals with 200 and a list of errors.
        errors = answer.get("errors")
        if errors:
            messages = "; ".join(str(e.get("message", e)) for e in errors if isinstance(e, dict))
            raise CodeHostError(
                f"GitHub refused {call} for {what}: {self._clean(messages)}; {PERMISSIONS}"
            )
        result = _field(_field(answer, "data"), action)
        return bool(_field(result, "pullRequest").get("isDraft"))

    async def _object(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        response = await self._call(method, path, what, json=json, params=params)
        return _object(response, f"{method} {path}")

    async def _list(self, path: str, what: str, *, params: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self._call("GET", path, what, params=params)
        items = _decode(response, f"GET {path}")
        if not isinstance(items, list):
            raise CodeHostError(f"GitHub answered GET {path} with something other than a list")
        return [item for item in items if isinstance(item, dict)]

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        url: str | None = None,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        tolerate: tuple[int, ...] = (),
    ) -> httpx.Response:
        call = f"{method} {path}"
        try:
            response = await self._http.request(
                method, url or self.api_url + path, headers=self._headers, json=json, params=params
            )
        except httpx.HTTPError as exc:
            raise CodeHostError(
                f"could not reach GitHub at {self._host} for {call}: "
                f"{self._clean(str(exc)) or type(exc).__name__}; check the URL and the network"
            ) from exc
        if response.status_code >= 400 and response.status_code not in tolerate:
            self._fail(response, call, what)
        return response

    def _fail(self, response: httpx.Response, call: str, what: str) -> NoReturn:
        status = response.status_code
        message = self._message(response)
        if status in (403, 429) and _rate_limited(response, message):
            raise CodeHostError(
                f"GitHub rate limit reached on {call} ({message}); {_retry_hint(response)}"
            )
        if status == 401:
            raise CodeHostError(
                f"GitHub refused the token on {call} ({status} {message}): check that it is "
                f"valid and not expired; {PERMISSIONS}"
            )
        if status == 403:
            raise CodeHostError(
                f"GitHub refused {call} to this token ({status} {message}): {PERMISSIONS}"
            )
        if status == 404:
            raise PullRequestNotFound(
                f"GitHub has no {what}, or the token cannot see it ({call} answered 404)"
            )
        if status >= 500:
            raise CodeHostError(
                f"GitHub at {self._host} failed {call} ({status} {message}); retry later"
            )
        raise CodeHostError(f"GitHub refused {call} ({status}): {message}")

    def _message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return self._clean(response.text[:200].strip()) or response.reason_phrase
        if not isinstance(body, dict):
            return response.reason_phrase
        parts = [str(body.get("message") or response.reason_phrase)]
        for error in body.get("errors") or []:
            if isinstance(error, dict) and error.get("message"):
                parts.append(str(error["message"]))
        return self._clean(": ".join(parts))

    def _clean(self, text: str) -> str:
        # Hosts rarely echo a credential, but a message must never carry one.
        return text.replace(self._token, "***") if self._token else text

    @property
    def _host(self) -> str:
        return urlsplit(self.api_url).netloc


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
    verdicts: dict[str, str] = {}
    for review in sorted(reviews, key=lambda r: int(r.get("id") or 0)):
        state = review.get("state")
        # A dismissed review turns into DISMISSED, which clears that reviewer's verdict.
        if state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            verdicts[str(_field(review, "user").get("login"))] = str(state)
    if "CHANGES_REQUESTED" in verdicts.values():
        return "changes_requested"
    if "APPROVED" in verdicts.values():
        return "approved"
    return "pending"


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
        base_ref=str(_field(data, "base").get("ref", "")),
        head_ref=str(_field(data, "head").get("ref", "")),
        url=str(data.get("html_url") or ""),
    )


def _state(data: dict[str, Any]) -> PullRequestState:
    # Listed pull requests carry merged_at but not merged.
    if data.get("merged") or data.get("merged_at"):
        return "merged"
    if data.get("state") == "closed":
        return "closed"
    return "draft" if data.get("draft") else "open"


def _rate_limited(response: httpx.Response, message: str) -> bool:
    headers = response.headers
    return (
        headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in headers
        or "rate limit" in message.lower()
    )


def _retry_hint(response: httpx.Response) -> str:
    retry_after = response.headers.get("retry-after", "")
    if retry_after.isdigit():
        return f"retry in {retry_after} seconds"
    reset = response.headers.get("x-ratelimit-reset", "")
    if reset.isdigit():
        at = datetime.fromtimestamp(int(reset), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"retry after {at}, when the limit resets"
    return "wait at least a minute before retrying"


def _split(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise CodeHostError(f"GitHub repository {repo!r} is not of the form owner/name")
    return quote(owner, safe=""), quote(name, safe="")


def _field(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _decode(response: httpx.Response, call: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CodeHostError(
            f"GitHub answered {call} with {response.status_code} but no JSON: is the URL the "
            "API root (https://api.github.com, or https://<host>/api/v3 for Enterprise Server)?"
        ) from None


def _object(response: httpx.Response, call: str) -> dict[str, Any]:
    body = _decode(response, call)
    if not isinstance(body, dict):
        raise CodeHostError(f"GitHub answered {call} with something other than an object")
    return body
