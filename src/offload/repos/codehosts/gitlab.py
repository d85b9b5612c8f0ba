"""GitLab (gitlab.com or self-managed): merge requests over the REST API v4."""

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
from offload.repos.codehosts.rest import DraftTitle, RestClient, RestDialect, edit_fields

PERMISSIONS = "the token needs the api scope and at least the Developer role in the project"
# GitLab has no draft flag to set: a title prefix makes a merge request a draft. The prefixes
# GitLab recognises (and the retired WIP ones), so a ready title loses them all.
DRAFT_TITLE = DraftTitle(
    "Draft: ", re.compile(r"^\s*(?:\[draft\]|\(draft\)|draft:|draft\s+-|\[wip\]|wip:)\s*", re.I)
)
# Head pipeline statuses; every other one (created, pending, running, manual, ...) is pending.
_PIPELINE_STATES: dict[str, ChecksState] = {
    "success": "passed",
    "skipped": "passed",
    "failed": "failed",
    "canceled": "failed",
}


def _message(body: dict[str, Any], reason: str) -> str:
    # GitLab's message is a string, a list of strings, or a dict of field -> errors; OAuth
    # refusals come as an error code and a description instead.
    message = body.get("message")
    if message is None and body.get("error"):
        message = ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
    if isinstance(message, list):
        return "; ".join(str(m) for m in message)
    if isinstance(message, dict):
        return "; ".join(f"{field} {errors}" for field, errors in message.items())
    return str(message or reason)


DIALECT = RestDialect(
    name="GitLab",
    permissions=PERMISSIONS,
    expired="expired or revoked",
    root_hint="is the URL GitLab's root (https://gitlab.com, or https://<host>[/<path>])?",
    message=_message,
)


class GitLabHost:
    """Merge requests on gitlab.com or a self-managed GitLab, for one token."""

    kind = "gitlab"

    def __init__(self, base_url: str, token: str, http: httpx.AsyncClient | None = None) -> None:
        self.api_url = base_url.rstrip("/").removesuffix("/api/v4") + "/api/v4"
        self._token = token
        headers = {"PRIVATE-TOKEN": token, "User-Agent": "offload"}
        self._rest = RestClient(DIALECT, self.api_url, token, headers, http)

    async def aclose(self) -> None:
        """Close the HTTP client, if this host made it."""
        await self._rest.aclose()

    async def open(self, draft: PullRequestDraft) -> PullRequest:
        """Open a merge request; an existing open one for the same head and base is returned."""
        path = f"/projects/{_project(draft.repo)}/merge_requests"
        fields = {
            "source_branch": draft.head_ref,
            "target_branch": draft.base_ref,
            "title": DRAFT_TITLE.titled(draft.title, draft.draft),
            "description": draft.body,
        }
        what = f"project {draft.repo}"
        created, refusal = await self._rest.create(path, what, json=fields, exists=(409,))
        if created is not None:
            return await self._with_states(draft.repo, created)
        # A retry after a crash: the merge request was opened the first time.
        found = await self._rest.json_list(
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
                f"{refusal}; that one targets another branch than "
                f"{draft.base_ref}: close it or retarget it, then retry"
            )
        return await self.get(draft.repo, str(found[0].get("iid", "")))

    async def update(self, repo: str, external_id: str, changes: PullRequestChanges) -> PullRequest:
        """Change title, body, base, draft state, or reopen; the merge request afterwards."""
        path, what = self._merge_request(repo, external_id)
        current: dict[str, Any] | None = None
        title = None
        if changes.title is not None or changes.draft is not None:
            current = await self._rest.json_object("GET", path, what)
            title = DRAFT_TITLE.retitled(current, _is_draft(current), changes)
        fields = edit_fields(
            title,
            changes,
            body="description",
            base="target_branch",
            reopen=("state_event", "reopen"),
        )
        data = await self._rest.edit("PUT", path, what, fields, current)
        return await self._with_states(repo, data)

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Close without merging (closing a closed or merged one changes nothing)."""
        path, what = self._merge_request(repo, external_id)
        data = await self._rest.json_object("GET", path, what)
        if _state(data) not in ("closed", "merged"):
            data = await self._rest.json_object("PUT", path, what, json={"state_event": "close"})
        return await self._with_states(repo, data)

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """The merge request as it is now (PullRequestNotFound if it is gone)."""
        path, what = self._merge_request(repo, external_id)
        return await self._with_states(repo, await self._rest.json_object("GET", path, what))

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
        approvals = await self._rest.json_object("GET", f"{path}/approvals", what)
        reviewers = await self._rest.json_list(f"{path}/reviewers", what, params=None)
        pipeline = data.get("head_pipeline")
        checks = None
        if isinstance(pipeline, dict):
            checks = _PIPELINE_STATES.get(str(pipeline.get("status")), "pending")
        return replace(pull, review_state=review_state(approvals, reviewers), checks_state=checks)


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
        title=DRAFT_TITLE.bare(str(data.get("title") or "")),
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
    return bool(data.get("work_in_progress")) or DRAFT_TITLE.marks(str(data.get("title")))


def _project(repo: str) -> str:
    """The project's path as GitLab's :id, URL-encoded (group%2Fsubgroup%2Fproject)."""
    if not repo or repo.startswith("/") or repo.endswith("/") or "//" in repo:
        raise CodeHostError(f"GitLab project {repo!r} is not a path like group/project")
    return quote(repo, safe="")
