"""Gitea (and Forgejo, its fork): pull requests over the REST API v1."""

from __future__ import annotations

import re
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
    DraftTitle,
    RestClient,
    RestDialect,
    edit_fields,
    latest_reviews,
    nested,
    owner_and_name,
)

# Gitea's default MAX_RESPONSE_ITEMS; an instance may cap pages lower, never higher.
PAGE_SIZE = 50
# Bounds the walk for an existing pull request, should a server ignore the page parameter.
MAX_PAGES = 100
PERMISSIONS = "the token needs the write:repository scope and write access to the repository"
DIALECT = RestDialect(
    name="Gitea",
    permissions=PERMISSIONS,
    expired="deleted",
    root_hint="is the URL the instance's root (https://<host>[/<path>])?",
)
# Gitea has no draft flag: a title prefix (WORK_IN_PROGRESS_PREFIXES) makes a pull request one.
# Gitea's default prefixes, plus "Draft:" which instances often add; Gitea ignores case.
DRAFT_TITLE = DraftTitle("WIP: ", re.compile(r"^\s*(?:wip:|\[wip\]|draft:)\s*", re.I))
# COMMENT, PENDING and REQUEST_REVIEW leave a reviewer's verdict as it was.
_VERDICTS: dict[str, ReviewState] = {
    "APPROVED": "approved",
    "REQUEST_CHANGES": "changes_requested",
}
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
        headers = {
            "Authorization": f"token {token}",
            "Accept": "application/json",
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
            "head": draft.head_ref,
            "base": draft.base_ref,
            "title": DRAFT_TITLE.titled(draft.title, draft.draft),
            "body": draft.body,
        }
        what = f"repository {draft.repo}"
        # Gitea answers 409 (older versions: 422) when an open one exists for these branches.
        created, refusal = await self._rest.create(path, what, json=fields, exists=(409, 422))
        if created is not None:
            return await self._with_states(draft.repo, created)
        # A retry after a crash: the pull request was opened the first time.
        found = await self._find_open(draft, path, what)
        if found is None:
            raise CodeHostError(
                f"Gitea says a pull request from {draft.head_ref} into {draft.base_ref} already "
                f"exists in {draft.repo} ({refusal}), but lists no open one: "
                "close it in Gitea, then retry"
            )
        return await self._with_states(draft.repo, found)

    async def update(self, repo: str, external_id: str, changes: PullRequestChanges) -> PullRequest:
        """Change title, body, base, draft state, or reopen; the pull request afterwards."""
        path, what = self._pull(repo, external_id)
        current: dict[str, Any] | None = None
        title = None
        if changes.title is not None or changes.draft is not None:
            current = await self._rest.json_object("GET", path, what)
            title = DRAFT_TITLE.retitled(current, _is_draft(current), changes)
        fields = edit_fields(title, changes, body="body", base="base", reopen=("state", "open"))
        data = await self._rest.edit("PATCH", path, what, fields, current)
        return await self._with_states(repo, data)

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Close without merging (closing a closed or merged one changes nothing)."""
        path, what = self._pull(repo, external_id)
        data = await self._rest.json_object("GET", path, what)
        # Gitea refuses any state change of a merged pull request (412).
        if _state(data) not in ("closed", "merged"):
            data = await self._rest.json_object("PATCH", path, what, json={"state": "closed"})
        return await self._with_states(repo, data)

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """The pull request as it is now (PullRequestNotFound if it is gone)."""
        path, what = self._pull(repo, external_id)
        return await self._with_states(repo, await self._rest.json_object("GET", path, what))

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
            items = await self._rest.json_list(path, what, params=params)
            for item in items:
                head, base = nested(item, "head"), nested(item, "base")
                if head.get("ref") == draft.head_ref and base.get("ref") == draft.base_ref:
                    return item
            if not items:
                break
        return None

    async def _with_states(self, repo: str, data: dict[str, Any]) -> PullRequest:
        pull = _pull_request(data)
        path, what = self._pull(repo, pull.external_id)
        owner, name = _split(repo)
        sha = quote(str(nested(data, "head").get("sha", "")), safe="")
        page = {"limit": PAGE_SIZE}
        reviews = await self._rest.json_list(f"{path}/reviews", what, params=page)
        status = await self._rest.json_object(
            "GET", f"/repos/{owner}/{name}/commits/{sha}/status", what
        )
        return replace(pull, review_state=review_state(reviews), checks_state=checks_state(status))


def review_state(reviews: list[dict[str, Any]]) -> ReviewState:
    """Each reviewer's latest verdict, dismissed reviews ignored: changes outweigh approvals."""
    return latest_reviews([r for r in reviews if not r.get("dismissed")], _VERDICTS)


def checks_state(status: dict[str, Any]) -> ChecksState | None:
    """The head commit's combined status (Gitea Actions report there too); None if none."""
    if not status.get("total_count") and not status.get("statuses"):
        return None
    return _STATUS_STATES.get(str(status.get("state")), "pending")


def _pull_request(data: dict[str, Any]) -> PullRequest:
    return PullRequest(
        external_id=str(data.get("number", "")),
        state=_state(data),
        title=DRAFT_TITLE.bare(str(data.get("title") or "")),
        body=str(data.get("body") or ""),
        base_ref=str(nested(data, "base").get("ref", "")),
        head_ref=str(nested(data, "head").get("ref", "")),
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
    return data.get("draft") is True or DRAFT_TITLE.marks(str(data.get("title") or ""))


def _split(repo: str) -> tuple[str, str]:
    return owner_and_name(repo, "Gitea")
