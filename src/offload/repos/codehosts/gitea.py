"""Gitea (and Forgejo, its fork): pull requests over the REST API v1."""

from __future__ import annotations

import re
from dataclasses import replace
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

# A call slower than this is stuck; the reconciler will try again on its next pass.
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
# Gitea's default MAX_RESPONSE_ITEMS; an instance may cap pages lower, never higher.
PAGE_SIZE = 50
# Bounds the walk for an existing pull request, should a server ignore the page parameter.
MAX_PAGES = 100
PERMISSIONS = "the token needs the write:repository scope and write access to the repository"
# Gitea has no draft flag: a title prefix (WORK_IN_PROGRESS_PREFIXES) makes a pull request one.
DRAFT_PREFIX = "WIP: "
# Gitea's default prefixes, plus "Draft:" which instances often add; Gitea ignores case.
_DRAFT_TITLE = re.compile(r"^\s*(?:wip:|\[wip\]|draft:)\s*", re.I)
# A combined status is success, pending, failure, error or warning ("" when there is none).
_STATUS_STATES: dict[str, ChecksState] = {
    "success": "passed",
    "warning": "passed",
    "pending": "pending",
    "failure": "failed",
    "error": "failed",
}


class GiteaHost:
    """Pull requests on a Gitea or Forgejo instance, for one token."""

    kind = "gitea"

    def __init__(self, base_url: str, token: str, http: httpx.AsyncClient | None = None) -> None:
        self.api_url = base_url.rstrip("/").removesuffix("/api/v1") + "/api/v1"
        self._token = token
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=TIMEOUT)
        self._headers = {
            "Authorization": f"token {token}",
            "Accept": "application/json",
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
            "head": draft.head_ref,
            "base": draft.base_ref,
            "title": _titled(draft.title, draft.draft),
            "body": draft.body,
        }
        what = f"repository {draft.repo}"
        response = await self._call("POST", path, what, json=fields, tolerate=(409, 422))
        if response.status_code < 400:
            return await self._with_states(draft.repo, _object(response, "POST " + path))
        # Gitea answers 409 (older versions: 422) when an open one exists for these branches.
        if "already exists" not in self._message(response):
            self._fail(response, f"POST {path}", what)
        # A retry after a crash: the pull request was opened the first time.
        found = await self._find_open(draft, path, what)
        if found is None:
            raise CodeHostError(
                f"Gitea says a pull request from {draft.head_ref} into {draft.base_ref} already "
                f"exists in {draft.repo} ({self._message(response)}), but lists no open one: "
                "close it in Gitea, then retry"
            )
        return await self._with_states(draft.repo, found)

    async def update(self, repo: str, external_id: str, changes: PullRequestChanges) -> PullRequest:
        """Change title, body, base, draft state, or reopen; the pull request afterwards."""
        path, what = self._pull(repo, external_id)
        fields: dict[str, Any] = {}
        current: dict[str, Any] | None = None
        if changes.title is not None or changes.draft is not None:
            current = await self._object("GET", path, what)
            title = changes.title if changes.title is not None else _bare(current)
            draft = changes.draft if changes.draft is not None else _is_draft(current)
            if _titled(title, draft) != current.get("title"):
                fields["title"] = _titled(title, draft)
        if changes.body is not None:
            fields["body"] = changes.body
        if changes.base_ref is not None:
            fields["base"] = changes.base_ref
        if changes.reopen:
            fields["state"] = "open"
        if fields:
            current = await self._object("PATCH", path, what, json=fields)
        elif current is None:
            current = await self._object("GET", path, what)
        return await self._with_states(repo, current)

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Close without merging (closing a closed or merged one changes nothing)."""
        path, what = self._pull(repo, external_id)
        data = await self._object("GET", path, what)
        # Gitea refuses any state change of a merged pull request (412).
        if _state(data) not in ("closed", "merged"):
            data = await self._object("PATCH", path, what, json={"state": "closed"})
        return await self._with_states(repo, data)

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """The pull request as it is now (PullRequestNotFound if it is gone)."""
        path, what = self._pull(repo, external_id)
        return await self._with_states(repo, await self._object("GET", path, what))

    def push_url(self, repo: str) -> str:
        """The https clone URL of `repo`, the token as the password of a placeholder user."""
        owner, name = _split(repo)
        web = urlsplit(self.api_url.removesuffix("/api/v1"))
        # Gitea takes a non-empty password as the token and ignores the user name; a token as
        # the user name with no password would make git prompt for one.
        credentials = f"offload:{quote(self._token, safe='')}"
        return f"{web.scheme}://{credentials}@{web.netloc}{web.path}/{owner}/{name}.git"

    def _pull(self, repo: str, external_id: str) -> tuple[str, str]:
        owner, name = _split(repo)
        number = quote(external_id, safe="")
        return f"/repos/{owner}/{name}/pulls/{number}", f"pull request #{external_id} in {repo}"

    async def _find_open(
        self, draft: PullRequestDraft, path: str, what: str
    ) -> dict[str, Any] | None:
        # Gitea filters the list by state only, so walk it for the head and base branches.
        for page in range(1, MAX_PAGES + 1):
            params = {"state": "open", "limit": PAGE_SIZE, "page": page}
            items = await self._list(path, what, params=params)
            for item in items:
                head, base = _field(item, "head"), _field(item, "base")
                if head.get("ref") == draft.head_ref and base.get("ref") == draft.base_ref:
                    return item
            if not items:
                break
        return None

    async def _with_states(self, repo: str, data: dict[str, Any]) -> PullRequest:
        pull = _pull_request(data)
        path, what = self._pull(repo, pull.external_id)
        owner, name = _split(repo)
        sha = quote(str(_field(data, "head").get("sha", "")), safe="")
        reviews = await self._list(f"{path}/reviews", what, params={"limit": PAGE_SIZE})
        status = await self._object("GET", f"/repos/{owner}/{name}/commits/{sha}/status", what)
        return replace(pull, review_state=review_state(reviews), checks_state=checks_state(status))

    async def _object(
        self, method: str, path: str, what: str, *, json: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = await self._call(method, path, what, json=json)
        return _object(response, f"{method} {path}")

    async def _list(self, path: str, what: str, *, params: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self._call("GET", path, what, params=params)
        items = _decode(response, f"GET {path}")
        if not isinstance(items, list):
            raise CodeHostError(f"Gitea answered GET {path} with something other than a list")
        return [item for item in items if isinstance(item, dict)]

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        tolerate: tuple[int, ...] = (),
    ) -> httpx.Response:
        call = f"{method} {path}"
        try:
            response = await self._http.request(
                method, self.api_url + path, headers=self._headers, json=json, params=params
            )
        except httpx.HTTPError as exc:
            raise CodeHostError(
                f"could not reach Gitea at {self._host} for {call}: "
                f"{self._clean(str(exc)) or type(exc).__name__}; check the URL and the network"
            ) from exc
        if response.status_code >= 400 and response.status_code not in tolerate:
            self._fail(response, call, what)
        return response

    def _fail(self, response: httpx.Response, call: str, what: str) -> NoReturn:
        status = response.status_code
        message = self._message(response)
        if status == 429:
            raise CodeHostError(
                f"Gitea rate limit reached on {call} ({message}); {_retry_hint(response)}"
            )
        if status == 401:
            raise CodeHostError(
                f"Gitea refused the token on {call} ({status} {message}): check that it is "
                f"valid and not deleted; {PERMISSIONS}"
            )
        if status == 403:
            raise CodeHostError(
                f"Gitea refused {call} to this token ({status} {message}): {PERMISSIONS}"
            )
        if status == 404:
            raise PullRequestNotFound(
                f"Gitea has no {what}, or the token cannot see it ({call} answered 404)"
            )
        if status >= 500:
            raise CodeHostError(
                f"Gitea at {self._host} failed {call} ({status} {message}); retry later"
            )
        raise CodeHostError(f"Gitea refused {call} ({status}): {message}")

    def _message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return self._clean(response.text[:200].strip()) or response.reason_phrase
        if not isinstance(body, dict):
            return response.reason_phrase
        return self._clean(str(body.get("message") or response.reason_phrase))

    def _clean(self, text: str) -> str:
        # Hosts rarely echo a credential, but a message must never carry one.
        return text.replace(self._token, "***") if self._token else text

    @property
    def _host(self) -> str:
        return urlsplit(self.api_url).netloc


def review_state(reviews: list[dict[str, Any]]) -> ReviewState:
    """Each reviewer's latest verdict: one request for changes outweighs any approval."""
    verdicts: dict[str, str] = {}
    for review in sorted(reviews, key=lambda r: int(r.get("id") or 0)):
        if review.get("dismissed"):
            continue
        # COMMENT, PENDING and REQUEST_REVIEW leave a reviewer's verdict as it was.
        if review.get("state") in ("APPROVED", "REQUEST_CHANGES"):
            verdicts[str(_field(review, "user").get("login"))] = str(review["state"])
    if "REQUEST_CHANGES" in verdicts.values():
        return "changes_requested"
    if "APPROVED" in verdicts.values():
        return "approved"
    return "pending"


def checks_state(status: dict[str, Any]) -> ChecksState | None:
    """The head commit's combined status (Gitea Actions report there too); None if none."""
    if not status.get("total_count") and not status.get("statuses"):
        return None
    return _STATUS_STATES.get(str(status.get("state")), "pending")


def _pull_request(data: dict[str, Any]) -> PullRequest:
    return PullRequest(
        external_id=str(data.get("number", "")),
        state=_state(data),
        title=_bare(data),
        body=str(data.get("body") or ""),
        base_ref=str(_field(data, "base").get("ref", "")),
        head_ref=str(_field(data, "head").get("ref", "")),
        url=str(data.get("html_url") or ""),
    )


def _state(data: dict[str, Any]) -> PullRequestState:
    if data.get("merged"):
        return "merged"
    if data.get("state") == "closed":
        return "closed"
    return "draft" if _is_draft(data) else "open"


def _is_draft(data: dict[str, Any]) -> bool:
    # Newer Gitea versions also report the prefix as a draft field.
    return data.get("draft") is True or bool(_DRAFT_TITLE.match(str(data.get("title") or "")))


def _bare(data: dict[str, Any]) -> str:
    """The title without its draft prefixes: offload keeps the draft state apart."""
    title = str(data.get("title") or "")
    while match := _DRAFT_TITLE.match(title):
        title = title[match.end() :]
    return title


def _titled(title: str, draft: bool) -> str:
    return DRAFT_PREFIX + title if draft else title


def _split(repo: str) -> tuple[str, str]:
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise CodeHostError(f"Gitea repository {repo!r} is not of the form owner/name")
    return quote(owner, safe=""), quote(name, safe="")


def _field(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _retry_hint(response: httpx.Response) -> str:
    retry_after = response.headers.get("retry-after", "")
    if retry_after.isdigit():
        return f"retry in {retry_after} seconds"
    return "wait at least a minute before retrying"


def _decode(response: httpx.Response, call: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise CodeHostError(
            f"Gitea answered {call} with {response.status_code} but no JSON: is the URL the "
            "instance's root (https://<host>[/<path>])?"
        ) from None


def _object(response: httpx.Response, call: str) -> dict[str, Any]:
    body = _decode(response, call)
    if not isinstance(body, dict):
        raise CodeHostError(f"Gitea answered {call} with something other than an object")
    return body
