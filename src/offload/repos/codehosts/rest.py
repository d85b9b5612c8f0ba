"""What the REST code hosts (GitHub, GitLab, Gitea, Bitbucket Server) share, in their own words.

`RestClient` makes one host's calls: JSON in and out, every refusal and transport failure a
`CodeHostError` that names the host, the call and what to do, and never carries the token. A
`RestDialect` is what differs in how each host answers. `edit_fields`, `latest_reviews` and
`DraftTitle` are the pull request rules several hosts share, each host naming its own fields,
review states and draft prefixes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

import httpx

from offload.repos.codehosts.base import (
    CodeHostError,
    PullRequestChanges,
    PullRequestNotFound,
    ReviewState,
)

# A call slower than this is stuck; the reconciler will try again on its next pass.
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def too_many_requests(response: httpx.Response, message: str) -> bool:
    """Whether `response` is a rate limit, where a host says so with 429 alone."""
    return response.status_code == 429


def message_field(body: dict[str, Any], reason: str) -> str:
    """An error body's `message`, or the answer's reason phrase when it has none."""
    return str(body.get("message") or reason)


@dataclass(frozen=True)
class RestDialect:
    """How one host's REST API answers: its name, what its tokens need, how it refuses."""

    name: str  # as errors name the host: "GitHub"
    permissions: str  # what the token needs, told on 401 and 403
    expired: str  # how a valid token stops being one: "expired", "deleted"
    root_hint: str  # which URL to give, told when an answer is not JSON
    # Whether a refusal, given its message, is a rate limit rather than what its status says.
    rate_limited: Callable[[httpx.Response, str], bool] = too_many_requests
    # A header with the epoch second the rate limit resets at, read when there is no Retry-After.
    reset_header: str = ""
    # The text of an error body that is a JSON object, given the answer's reason phrase.
    message: Callable[[dict[str, Any], str], str] = message_field


class RestClient:
    """One token's calls to one host's REST API; refusals become CodeHostErrors."""

    def __init__(
        self,
        dialect: RestDialect,
        api_url: str,
        token: str,
        headers: Mapping[str, str],
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.dialect = dialect
        self.api_url = api_url
        self._token = token
        self._headers = dict(headers)
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=TIMEOUT)

    async def aclose(self) -> None:
        """Close the HTTP client, if this client made it."""
        if self._owns_http:
            await self._http.aclose()

    async def call(
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
        """Send `method path` (to `url` if given); a refusal not in `tolerate` raises.

        `what` names the object for a 404: "pull request #42 in octo-org/hello-world".
        """
        call = f"{method} {path}"
        try:
            response = await self._http.request(
                method, url or self.api_url + path, headers=self._headers, json=json, params=params
            )
        except httpx.HTTPError as exc:
            raise CodeHostError(
                f"could not reach {self.dialect.name} at {self._host} for {call}: "
                f"{self.clean(str(exc)) or type(exc).__name__}; check the URL and the network"
            ) from exc
        if response.status_code >= 400 and response.status_code not in tolerate:
            self._fail(response, call, what)
        return response

    async def json_object(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON object the host answers `method path` with."""
        response = await self.call(method, path, what, json=json, params=params)
        return self.as_object(response, f"{method} {path}")

    async def json_list(
        self, path: str, what: str, *, params: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """The objects of the JSON list the host answers `GET path` with."""
        response = await self.call("GET", path, what, params=params)
        items = self._decode(response, f"GET {path}")
        if not isinstance(items, list):
            raise CodeHostError(
                f"{self.dialect.name} answered GET {path} with something other than a list"
            )
        return [item for item in items if isinstance(item, dict)]

    async def create(
        self, path: str, what: str, *, json: dict[str, Any], exists: tuple[int, ...]
    ) -> tuple[dict[str, Any] | None, str]:
        """POST `json`: the new object, or None and the host's words if one already exists.

        `exists` are the statuses the host answers a duplicate with; their message must say
        "already exists", or the answer is refused like any other.
        """
        response = await self.call("POST", path, what, json=json, tolerate=exists)
        if response.status_code < 400:
            return self.as_object(response, f"POST {path}"), ""
        message = self._message(response)
        if "already exists" not in message:
            self._fail(response, f"POST {path}", what)
        return None, message

    async def edit(
        self,
        method: str,
        path: str,
        what: str,
        fields: dict[str, Any],
        current: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The object after sending `fields` with `method`; with none, `current` or a GET of it."""
        if fields:
            return await self.json_object(method, path, what, json=fields)
        return current if current is not None else await self.json_object("GET", path, what)

    def as_object(self, response: httpx.Response, call: str) -> dict[str, Any]:
        """The JSON object `response` carries; CodeHostError if it carries something else."""
        body = self._decode(response, call)
        if not isinstance(body, dict):
            raise CodeHostError(
                f"{self.dialect.name} answered {call} with something other than an object"
            )
        return body

    def clean(self, text: str) -> str:
        """`text` with the token masked."""
        # Hosts rarely echo a credential, but a message must never carry one.
        return text.replace(self._token, "***") if self._token else text

    def _fail(self, response: httpx.Response, call: str, what: str) -> NoReturn:
        name, permissions = self.dialect.name, self.dialect.permissions
        status = response.status_code
        message = self._message(response)
        if self.dialect.rate_limited(response, message):
            hint = retry_hint(response, self.dialect.reset_header)
            raise CodeHostError(f"{name} rate limit reached on {call} ({message}); {hint}")
        if status == 401:
            raise CodeHostError(
                f"{name} refused the token on {call} ({status} {message}): check that it is "
                f"valid and not {self.dialect.expired}; {permissions}"
            )
        if status == 403:
            raise CodeHostError(
                f"{name} refused {call} to this token ({status} {message}): {permissions}"
            )
        if status == 404:
            raise PullRequestNotFound(
                f"{name} has no {what}, or the token cannot see it ({call} answered 404)"
            )
        if status >= 500:
            raise CodeHostError(
                f"{name} at {self._host} failed {call} ({status} {message}); retry later"
            )
        raise CodeHostError(f"{name} refused {call} ({status}): {message}")

    def _message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return self.clean(response.text[:200].strip()) or response.reason_phrase
        if not isinstance(body, dict):
            return response.reason_phrase
        return self.clean(self.dialect.message(body, response.reason_phrase))

    def _decode(self, response: httpx.Response, call: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise CodeHostError(
                f"{self.dialect.name} answered {call} with {response.status_code} but no JSON: "
                f"{self.dialect.root_hint}"
            ) from None

    @property
    def _host(self) -> str:
        return urlsplit(self.api_url).netloc


def retry_hint(response: httpx.Response, reset_header: str = "") -> str:
    """When to retry after a rate limit: Retry-After, else when `reset_header` says it resets."""
    retry_after = response.headers.get("retry-after", "")
    if retry_after.isdigit():
        return f"retry in {retry_after} seconds"
    reset = response.headers.get(reset_header, "") if reset_header else ""
    if reset.isdigit():
        at = datetime.fromtimestamp(int(reset), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"retry after {at}, when the limit resets"
    return "wait at least a minute before retrying"


def owner_and_name(repo: str, host: str) -> tuple[str, str]:
    """The URL-encoded owner and name of `repo` ("owner/name") on `host`, which names it so."""
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise CodeHostError(f"{host} repository {repo!r} is not of the form owner/name")
    return quote(owner, safe=""), quote(name, safe="")


def nested(data: dict[str, Any], key: str) -> dict[str, Any]:
    """The object under `key`, or an empty one when there is none."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def edit_fields(
    title: str | None,
    changes: PullRequestChanges,
    *,
    body: str,
    base: str,
    reopen: tuple[str, str],
) -> dict[str, Any]:
    """The fields that make `changes` (with `title`, if any), in the host's names of them."""
    fields: dict[str, Any] = {}
    if title is not None:
        fields["title"] = title
    if changes.body is not None:
        fields[body] = changes.body
    if changes.base_ref is not None:
        fields[base] = changes.base_ref
    if changes.reopen:
        fields[reopen[0]] = reopen[1]
    return fields


def latest_reviews(
    reviews: list[dict[str, Any]], verdicts: Mapping[str, ReviewState]
) -> ReviewState:
    """Each reviewer's latest verdict: one request for changes outweighs any approval.

    `verdicts` maps the review states that set a reviewer's verdict to offload's; a review in
    any other state leaves it as it was.
    """
    latest: dict[str, ReviewState] = {}
    for review in sorted(reviews, key=lambda r: int(r.get("id") or 0)):
        verdict = verdicts.get(str(review.get("state")))
        if verdict is not None:
            latest[str(nested(review, "user").get("login"))] = verdict
    if "changes_requested" in latest.values():
        return "changes_requested"
    if "approved" in latest.values():
        return "approved"
    return "pending"


@dataclass(frozen=True)
class DraftTitle:
    """How a host without a draft flag marks a draft: a prefix on its title."""

    prefix: str  # what offload puts before a draft's title
    recognised: re.Pattern[str]  # every prefix the host takes for one, anchored at the start

    def marks(self, title: str) -> bool:
        """Whether `title` makes its pull request a draft."""
        return bool(self.recognised.match(title))

    def bare(self, title: str) -> str:
        """`title` without its draft prefixes: offload keeps the draft state apart."""
        while match := self.recognised.match(title):
            title = title[match.end() :]
        return title

    def titled(self, title: str, draft: bool) -> str:
        """The host's title of a pull request titled `title`, a draft or not."""
        return self.prefix + title if draft else title

    def retitled(
        self, current: dict[str, Any], draft: bool, changes: PullRequestChanges
    ) -> str | None:
        """The title that applies `changes` to `current` (now a draft or not); None if as is."""
        title = changes.title
        if title is None:
            title = self.bare(str(current.get("title") or ""))
        wanted = self.titled(title, changes.draft if changes.draft is not None else draft)
        return None if wanted == current.get("title") else wanted
