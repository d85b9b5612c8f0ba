"""Bitbucket Server and Bitbucket Data Center: pull requests over the REST API 1.0."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote, urlsplit

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
from offload.repos.codehosts.rest import RestClient, RestDialect, nested, owner_and_name

API_PATH = "/rest/api/1.0"
BUILD_STATS_PATH = "/rest/build-status/1.0/commits/stats"
# Bitbucket's default page is 25 pull requests; a request may ask for more.
PAGE_SIZE = 50
# Bounds the walk for an existing pull request, should a server ignore the start parameter.
MAX_PAGES = 100
PERMISSIONS = (
    "the token needs repository write permission (an HTTP access token with Repository write "
    "on the repository or its project)"
)
# Bitbucket names each error by its exception class; Stash, its name before 4.0, used
# com.atlassian.stash.pull, so only the class name is compared.
DUPLICATE = ".DuplicatePullRequestException"
OUT_OF_DATE = ".PullRequestOutOfDateException"


def _errors(body: Any) -> list[dict[str, Any]]:
    errors = body.get("errors") if isinstance(body, dict) else None
    return [error for error in errors or [] if isinstance(error, dict)]


def _message(body: dict[str, Any], reason: str) -> str:
    # {"errors": [{"context": null, "message": "...", "exceptionName": "..."}]}, one per problem.
    messages = [str(error["message"]) for error in _errors(body) if error.get("message")]
    return "; ".join(messages) or str(body.get("message") or reason)


DIALECT = RestDialect(
    name="Bitbucket Server",
    permissions=PERMISSIONS,
    expired="expired or revoked",
    root_hint="is the URL Bitbucket's root (https://<host>[/<context path>])?",
    message=_message,
)


class BitbucketServerHost:
    """Pull requests on a Bitbucket Server or Data Center instance, for one token."""

    kind = "bitbucketserver"

    def __init__(self, base_url: str, token: str, http: httpx.AsyncClient | None = None) -> None:
        parts = urlsplit(base_url.rstrip("/"))
        # git pushes with Basic auth, where Bitbucket takes a user's token only together with
        # that user's name; the URL carries it (https://offload-bot@bitbucket.example.com).
        self._user = unquote(parts.username or "")
        host = parts.netloc.rpartition("@")[2]
        self.web_url = f"{parts.scheme}://{host}{parts.path.removesuffix(API_PATH)}"
        self.api_url = self.web_url + API_PATH
        self._token = token
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": "offload",
        }
        self._rest = RestClient(DIALECT, self.api_url, token, headers, http)

    async def aclose(self) -> None:
        """Close the HTTP client, if this host made it."""
        await self._rest.aclose()

    async def open(self, draft: PullRequestDraft) -> PullRequest:
        """Open a pull request; an existing open one for the same head and base is returned."""
        key, slug = _split(draft.repo)
        path = f"/projects/{key}/repos/{slug}/pull-requests"
        fields = {
            "title": draft.title,
            "description": draft.body,
            "state": "OPEN",
            "open": True,
            "closed": False,
            "fromRef": _ref(draft.head_ref, key, slug),
            "toRef": _ref(draft.base_ref, key, slug),
            # Draft pull requests came with Data Center 8.18.
            "draft": draft.draft,
        }
        what = f"repository {key}/{slug}"
        response = await self._rest.call("POST", path, what, json=fields, tolerate=(409,))
        if response.status_code < 400:
            created = self._rest.as_object(response, f"POST {path}")
            return await self._with_states(key, slug, created)
        duplicate = _error(response, DUPLICATE)
        if duplicate is None:
            raise self._refused(
                response,
                f"to open a pull request from {draft.head_ref} into {draft.base_ref} in "
                f"{key}/{slug}",
            )
        # A retry after a crash: the pull request was opened the first time, and Bitbucket
        # names it; should it not, the open ones from the head branch are searched.
        existing = nested(duplicate, "existingPullRequest")
        if "id" not in existing:
            existing = await self._find_open(draft, path, what) or {}
        if "id" not in existing:
            raise CodeHostError(
                f"Bitbucket Server says a pull request from {draft.head_ref} into "
                f"{draft.base_ref} is open in {key}/{slug}, but lists none: decline it in "
                "Bitbucket, then retry"
            )
        return await self._with_states(key, slug, existing)

    async def update(self, repo: str, external_id: str, changes: PullRequestChanges) -> PullRequest:
        """Change title, body, base, draft state, or reopen; the pull request afterwards."""
        key, slug = _split(repo)
        path, what = self._pull(key, slug, external_id)
        data = await self._rest.json_object("GET", path, what)
        # Bitbucket refuses to edit a declined pull request, so it reopens first.
        if changes.reopen and data.get("state") == "DECLINED":
            data = await self._versioned(path, what, data, action="/reopen")
        edit = self._edit(data, changes, key, slug)
        if edit:
            data = await self._versioned(path, what, data, edit=edit)
        return await self._with_states(key, slug, data)

    async def close(self, repo: str, external_id: str) -> PullRequest:
        """Decline, without merging (declining a declined or merged one changes nothing)."""
        key, slug = _split(repo)
        path, what = self._pull(key, slug, external_id)
        data = await self._rest.json_object("GET", path, what)
        # Bitbucket refuses to decline a pull request that is not open (409).
        if data.get("state") == "OPEN":
            data = await self._versioned(path, what, data, action="/decline")
        return await self._with_states(key, slug, data)

    async def get(self, repo: str, external_id: str) -> PullRequest:
        """The pull request as it is now (PullRequestNotFound if it is gone)."""
        key, slug = _split(repo)
        path, what = self._pull(key, slug, external_id)
        data = await self._rest.json_object("GET", path, what)
        return await self._with_states(key, slug, data)

    def push_url(self, repo: str) -> str:
        """The https clone URL of `repo`, with the token's owner and the token as credentials."""
        key, slug = _split(repo)
        web = urlsplit(self.web_url)
        if not self._user:
            # Bitbucket takes a user's token in Basic auth only with that user's name, and a
            # project or repository token only as a Bearer header, which git URLs cannot carry.
            raise CodeHostError(
                f"Bitbucket Server at {web.netloc} needs the name of the user who owns the token "
                f"to push {key}/{slug}: give it in the code host's URL, e.g. "
                f"{web.scheme}://offload-bot@{web.netloc}{web.path}, and use that user's HTTP "
                "access token (a project or repository token cannot push from a URL)"
            )
        credentials = f"{quote(self._user, safe='')}:{quote(self._token, safe='')}"
        # Clone URLs name the project by its key in lower case (~user for a personal one).
        scm = f"/scm/{key.lower()}/{slug}.git"
        return f"{web.scheme}://{credentials}@{web.netloc}{web.path}{scm}"

    def _pull(self, key: str, slug: str, external_id: str) -> tuple[str, str]:
        number = quote(external_id, safe="")
        path = f"/projects/{key}/repos/{slug}/pull-requests/{number}"
        return path, f"pull request #{external_id} in {key}/{slug}"

    def _edit(
        self, current: dict[str, Any], changes: PullRequestChanges, key: str, slug: str
    ) -> dict[str, Any]:
        """The fields of `current` that `changes` change, in Bitbucket's names of them."""
        edit: dict[str, Any] = {}
        if changes.title is not None and changes.title != current.get("title"):
            edit["title"] = changes.title
        if changes.body is not None and changes.body != (current.get("description") or ""):
            edit["description"] = changes.body
        if changes.base_ref is not None and changes.base_ref != _branch(current, "toRef"):
            edit["toRef"] = _ref(changes.base_ref, key, slug)
        if changes.draft is not None and changes.draft != (current.get("draft") is True):
            if "draft" not in current:
                raise CodeHostError(
                    f"Bitbucket Server at {urlsplit(self.web_url).netloc} has no draft pull "
                    f"requests (they came with Data Center 8.18), so pull request "
                    f"#{current.get('id')} in {key}/{slug} cannot become one: publish the "
                    "changeset without draft, or upgrade Bitbucket"
                )
            edit["draft"] = changes.draft
        return edit

    async def _versioned(
        self,
        path: str,
        what: str,
        current: dict[str, Any],
        *,
        action: str = "",
        edit: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """POST `action` (reopen, decline), or PUT `edit`, made on `current`'s version.

        Bitbucket refuses a change made on a stale version (409): someone changed the pull
        request since it was read, so it is read again and the change sent once more.
        """
        call = f"{'POST' if action else 'PUT'} {path}{action}"
        response = await self._send(path, what, current, action, edit, tolerate=(409,))
        if response.status_code < 400:
            return self._rest.as_object(response, call)
        if _error(response, OUT_OF_DATE) is None:
            raise self._refused(response, f"{call} for {what}")
        current = await self._rest.json_object("GET", path, what)
        response = await self._send(path, what, current, action, edit, tolerate=())
        return self._rest.as_object(response, call)

    async def _send(
        self,
        path: str,
        what: str,
        current: dict[str, Any],
        action: str,
        edit: dict[str, Any] | None,
        *,
        tolerate: tuple[int, ...],
    ) -> httpx.Response:
        version = current.get("version", 0)
        if action:
            # An action takes the version in its query; its body stays an empty JSON object.
            return await self._rest.call(
                "POST", path + action, what, json={}, params={"version": version}, tolerate=tolerate
            )
        # A PUT sets title, description and reviewers together (a reviewer left out becomes a
        # mere participant), so what `edit` does not change goes back as it is.
        fields = {
            "version": version,
            "title": current.get("title") or "",
            "description": current.get("description") or "",
            "reviewers": [
                {"user": {"name": nested(reviewer, "user").get("name")}}
                for reviewer in current.get("reviewers") or []
                if isinstance(reviewer, dict)
            ],
            **(edit or {}),
        }
        return await self._rest.call("PUT", path, what, json=fields, tolerate=tolerate)

    async def _find_open(
        self, draft: PullRequestDraft, path: str, what: str
    ) -> dict[str, Any] | None:
        # Bitbucket filters the list by the head branch; the base is matched here.
        params: dict[str, Any] = {
            "state": "OPEN",
            "direction": "OUTGOING",
            "at": f"refs/heads/{draft.head_ref}",
            "start": 0,
            "limit": PAGE_SIZE,
        }
        for _ in range(MAX_PAGES):
            page = await self._rest.json_object("GET", path, what, params=params)
            for item in page.get("values") or []:
                if isinstance(item, dict) and _branch(item, "toRef") == draft.base_ref:
                    return item
            if page.get("isLastPage", True) or page.get("nextPageStart") is None:
                break
            params["start"] = page["nextPageStart"]
        return None

    async def _with_states(self, key: str, slug: str, data: dict[str, Any]) -> PullRequest:
        pull = _pull_request(data)
        sha = str(nested(data, "fromRef").get("latestCommit") or "")
        checks = None
        if sha:
            path = f"{BUILD_STATS_PATH}/{quote(sha, safe='')}"
            what = f"commit {sha} in {key}/{slug}"
            # Build statuses have their own REST API next to the core one.
            response = await self._rest.call("GET", path, what, url=self.web_url + path)
            checks = checks_state(self._rest.as_object(response, f"GET {path}"))
        return replace(pull, review_state=review_state(data.get("reviewers")), checks_state=checks)

    def _refused(self, response: httpx.Response, doing: str) -> CodeHostError:
        """A refusal offload does not handle, in Bitbucket's words."""
        try:
            body = response.json()
        except ValueError:
            body = None
        said = _message(body, response.reason_phrase) if isinstance(body, dict) else ""
        message = self._rest.clean(said or response.reason_phrase)
        return CodeHostError(
            f"Bitbucket Server refused {doing} ({response.status_code}): {message}"
        )


def review_state(reviewers: Any) -> ReviewState:
    """The reviewers' current statuses: one NEEDS_WORK outweighs any approval."""
    statuses = {str(r.get("status")) for r in reviewers or [] if isinstance(r, dict)}
    if "NEEDS_WORK" in statuses:
        return "changes_requested"
    if "APPROVED" in statuses:
        return "approved"
    # No reviewers, or none who decided: pending, as GitHub, GitLab and Gitea say when nobody
    # has reviewed yet (None is for hosts that have no reviews at all).
    return "pending"


def checks_state(stats: dict[str, Any]) -> ChecksState | None:
    """The head commit's build statuses, counted: any failure fails; None when none reported."""

    def count(name: str) -> int:
        value = stats.get(name)
        return value if isinstance(value, int) else 0

    if count("failed") or count("cancelled"):
        return "failed"
    if count("inProgress"):
        return "pending"
    if count("successful"):
        return "passed"
    # A build in the UNKNOWN state has not passed.
    return "pending" if count("unknown") else None


def _pull_request(data: dict[str, Any]) -> PullRequest:
    links = nested(data, "links").get("self")
    first = links[0] if isinstance(links, list) and links else {}
    return PullRequest(
        external_id=str(data.get("id", "")),
        state=_state(data),
        title=str(data.get("title") or ""),
        body=str(data.get("description") or ""),
        base_ref=_branch(data, "toRef"),
        head_ref=_branch(data, "fromRef"),
        url=str(first.get("href") or "") if isinstance(first, dict) else "",
    )


def _state(data: dict[str, Any]) -> PullRequestState:
    state = data.get("state")
    if state == "MERGED":
        return "merged"
    if state == "DECLINED":
        return "closed"
    return "draft" if data.get("draft") is True else "open"


def _branch(data: dict[str, Any], side: str) -> str:
    """The branch name of `data`'s fromRef or toRef."""
    return str(nested(data, side).get("id") or "").removeprefix("refs/heads/")


def _ref(branch: str, key: str, slug: str) -> dict[str, Any]:
    return {
        "id": f"refs/heads/{branch}",
        "repository": {"slug": slug, "project": {"key": key}},
    }


def _error(response: httpx.Response, exception: str) -> dict[str, Any] | None:
    """The error of `response` raised by the exception class named `exception`, if any."""
    try:
        body = response.json()
    except ValueError:
        return None
    for error in _errors(body):
        if str(error.get("exceptionName") or "").endswith(exception):
            return error
    return None


def _split(repo: str) -> tuple[str, str]:
    """The project key and repository slug of `repo`, URL-encoded."""
    parts = repo.split("/")
    # A repository mirrored from an HTTP clone URL is named by its path there:
    # [<context path>/]scm/<project>/<repo>.
    if len(parts) >= 3 and parts[-3] == "scm":
        parts = parts[-2:]
    try:
        key, slug = owner_and_name("/".join(parts), "Bitbucket Server")
    except CodeHostError:
        raise CodeHostError(
            f"Bitbucket Server repository {repo!r} is not of the form PROJECT/repo (a project "
            "key and a repository slug, or ~user/repo for a personal repository)"
        ) from None
    # Project keys are upper case, though clone URLs write them in lower case.
    return (key if key.startswith("~") else key.upper()), slug
