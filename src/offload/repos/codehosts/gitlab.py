"""GitLab (gitlab.com or self-managed): merge requests over the REST API v4."""

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
PERMISSIONS = "the token needs the api scope and at least the Developer role in the project"
# GitLab has no draft flag to set: a title prefix makes a merge request a draft.
DRAFT_PREFIX = "Draft: "
# The prefixes GitLab recognises (and the retired WIP ones), so a ready title loses them all.
_DRAFT_TITLE = re.compile(r"^\s*(?:\[draft\]|\(draft\)|draft:|draft\s+-|\[wip\]|wip:)\s*", re.I)
# Head pipeline statuses; every other one (created, pending, running, manual, ...) is pending.
_PIPELINE_STATES: dict[str, ChecksState] = {
    "success": "passed",
    "skipped": "passed",
    "failed": "failed",
    "canceled": "failed",
}


class GitLabHost:
    """Merge requests on gitlab.com or a self-managed GitLab, for one token."""

    kind = "gitlab"

    def __init__(self, base_url: str, token: str, http: httpx.AsyncClient | None = None) -> None:
        self.api_url = base_url.rstrip("/").removesuffix("/api/v4") + "/api/v4"
        self._token = token
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=TIMEOUT)
        self._headers = {"PRIVATE-TOKEN": token, "User-Agent": "offload"}

    async def aclose(self) -> None:
        """Close the HTTP client, if this host made it."""
        if self._owns_http:
            await self._http.aclose()

    async def open(self, draft: PullRequestDraft) -> PullRequest:
        """Open a merge request; an existing open one for the same head and base is returned."""
        path = f"/projects/{_project(draft.repo)}/merge_requests"
        fields = {
            "source_branch": draft.head_ref,
            "target_branch": draft.base_ref,
            "title": _titled(draft.title, draft.draft),
            "description": draft.body,
        }
        what = f"project {draft.repo}"
        response = await self._call("POST", path, what, json=fields, tolerate=(409,))
        if response.status_code != 409:
            return await self._with_states(draft.repo, _object(response, "POST " + path))
        if "already exists" not in self._message(response):
            self._fail(response, f"POST {path}", what)
        # A retry after a crash: the merge request was opened the first time.
        found = await self._list(
            path,
            what,
            params={
                "state": "opened",
                "source_branch": draft.head_ref,
                "target_branch": draft.base_ref,
            },
        )
        if not found:
            raise CodeHostError(
                f"GitLab refused to open a merge request from {draft.head_ref} in {draft.repo}: "
                f"{self._message(response)}; that one targets another branch than "
                f"{draft.base_ref}: close it or retarget it, then retry"
            )
        return await self.get(draft.repo, str(found[0].get("iid", "")))

    async def update(self, repo: str, external_id: str, changes: PullRequestChanges) -> PullRequest:
        """Change title, body, base, draft state, or reopen; the merge request afterwards."""
        path, what = self._merge_request(repo, external_id)
        fields: dict[str, Any] = {}
        current: dict[str, Any] | None = None
        if changes.title is not None or changes.draft is not None:
            current = await self._object("GET", path, what)
            title = changes.title if changes.title is not None else _bare(current)
            draft = changes.draft if changes.draft is not None else _is_draft(current)
            if _titled(title, draft) != current.get("title"):
                fields["title"] = _titled(title, draft)
        if changes.body is not None:
            fields["description"] = changes.body
        if changes.base_ref is not None:
            fields["target_branch"] = changes.base_ref
        if changes.reopen:
            fields["state_event"] = "reopen"
        if fields:
            current = await self._object("PUT", path, what, json=fields)
        elif current is None:
            current = await self._object("GET", path, what)
        return await self._with_states(repo, current)

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Close without merging (closing a closed or merged one changes nothing)."""
        path, what = self._merge_request(repo, external_id)
        data = await self._object("GET", path, what)
        if _state(data) not in ("closed", "merged"):
            data = await self._object("PUT", path, what, json={"state_event": "close"})
        return await self._with_states(repo, data)

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """The merge request as it is now (PullRequestNotFound if it is gone)."""
        path, what = self._merge_request(repo, external_id)
        return await self._with_states(repo, await self._object("GET", path, what))

    def push_url(self, repo: str) -> str:
        """The https clone URL of `repo` with the token as OAuth2-style credentials."""
        _project(repo)
        web = urlsplit(self.api_url.removesuffix("/api/v4"))
        path = "/".join(quote(part, safe="") for part in repo.split("/"))
        credentials = f"oauth2:{quote(self._token, safe='')}"
        return f"{web.scheme}://{credentials}@{web.netloc}{web.path}/{path}.git"

    def _merge_request(self, repo: str, external_id: str) -> tuple[str, str]:
        iid = quote(external_id, safe="")
        path = f"/projects/{_project(repo)}/merge_requests/{iid}"
        return path, f"merge request !{external_id} in {repo}"

    async def _with_states(self, repo: str, data: dict[str, Any]) -> PullRequest:
        pull = _pull_request(data)
        path, what = self._merge_request(repo, pull.external_id)
        approvals = await self._object("GET", f"{path}/approvals", what)
        reviewers = await self._list(f"{path}/reviewers", what, params=None)
        pipeline = data.get("head_pipeline")
        checks = None
        if isinstance(pipeline, dict):
            checks = _PIPELINE_STATES.get(str(pipeline.get("status")), "pending")
        return replace(pull, review_state=review_state(approvals, reviewers), checks_state=checks)

    async def _object(
        self, method: str, path: str, what: str, *, json: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        response = await self._call(method, path, what, json=json)
        return _object(response, f"{method} {path}")

    async def _list(
        self, path: str, what: str, *, params: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        response = await self._call("GET", path, what, params=params)
        items = _decode(response, f"GET {path}")
        if not isinstance(items, list):
            raise CodeHostError(f"GitLab answered GET {path} with something other than a list")
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
                f"could not reach GitLab at {self._host} for {call}: "
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
                f"GitLab rate limit reached on {call} ({message}); {_retry_hint(response)}"
            )
        if status == 401:
            raise CodeHostError(
                f"GitLab refused the token on {call} ({status} {message}): check that it is "
                f"valid and not expired or revoked; {PERMISSIONS}"
            )
        if status == 403:
            raise CodeHostError(
                f"GitLab refused {call} to this token ({status} {message}): {PERMISSIONS}"
            )
        if status == 404:
            raise PullRequestNotFound(
                f"GitLab has no {what}, or the token cannot see it ({call} answered 404)"
            )
        if status >= 500:
            raise CodeHostError(
                f"GitLab at {self._host} failed {call} ({status} {message}); retry later"
            )
        raise CodeHostError(f"GitLab refused {call} ({status}): {message}")

    def _message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return self._clean(response.text[:200].strip()) or response.reason_phrase
        if not isinstance(body, dict):
            return response.reason_phrase
        # GitLab's message is a string, a list of strings, or a dict of field -> errors; OAuth
        # refusals come as an error code and a description instead.
        message = body.get("message")
        if message is None and body.get("error"):
            message = ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
        if isinstance(message, list):
            text = "; ".join(str(m) for m in message)
        elif isinstance(message, dict):
            text = "; ".join(f"{field} {errors}" for field, errors in message.items())
        else:
            text = str(message or response.reason_phrase)
        return self._clean(text)

    def _clean(self, text: str) -> str:
        # Hosts rarely echo a credential, but a message must never carry one.
        return text.replace(self._token, "***") if self._token else text

    @property
    def _host(self) -> str:
        return urlsplit(self.api_url).netloc


def review_state(approvals: dict[str, Any], reviewers: list[dict[str, Any]]) -> ReviewState:
    """A reviewer asking for changes outweighs approvals; approved once the rules are met."""
    if any(reviewer.get("state") == "requested_changes" for reviewer in reviewers):
        return "changes_requested"
    # Without approval rules GitLab reports approved even before anyone approved.
    if approvals.get("approved") and approvals.get("approved_by"):
        return "approved"
    return "pending"


def _pull_request(data: dict[str, Any]) -> PullRequest:
    return PullRequest(
        external_id=str(data.get("iid", "")),
        state=_state(data),
        title=_bare(data),
        body=str(data.get("description") or ""),
        base_ref=str(data.get("target_branch") or ""),
        head_ref=str(data.get("source_branch") or ""),
        url=str(data.get("web_url") or ""),
    )


def _state(data: dict[str, Any]) -> PullRequestState:
    state = data.get("state")
    if state in ("merged", "closed"):
        return "merged" if state == "merged" else "closed"
    # "locked" is GitLab's brief state while a merge is under way: open until it is merged.
    return "draft" if _is_draft(data) else "open"


def _is_draft(data: dict[str, Any]) -> bool:
    if "draft" in data:
        return bool(data["draft"])
    return bool(data.get("work_in_progress")) or bool(_DRAFT_TITLE.match(str(data.get("title"))))


def _bare(data: dict[str, Any]) -> str:
    """The title without its draft prefixes: offload keeps the draft state apart."""
    title = str(data.get("title") or "")
    while match := _DRAFT_TITLE.match(title):
        title = title[match.end() :]
    return title


def _titled(title: str, draft: bool) -> str:
    return DRAFT_PREFIX + title if draft else title


def _project(repo: str) -> str:
    """The project's path as GitLab's :id, URL-encoded (group%2Fsubgroup%2Fproject)."""
    if not repo or repo.startswith("/") or repo.endswith("/") or "//" in repo:
        raise CodeHostError(f"GitLab project {repo!r} is not a path like group/project")
    return quote(repo, safe="")


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
            f"GitLab answered {call} with {response.status_code} but no JSON: is the URL "
            "GitLab's root (https://gitlab.com, or https://<host>[/<path>])?"
        ) from None


def _object(response: httpx.Response, call: str) -> dict[str, Any]:
    body = _decode(response, call)
    if not isinstance(body, dict):
        raise CodeHostError(f"GitLab answered {call} with something other than an object")
    return body
