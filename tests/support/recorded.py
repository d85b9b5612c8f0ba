"""Replay of recorded code host API exchanges, for the SaaS hosts these machines cannot reach.

A recording is a JSON list of exchanges, in the order the client must make them:

    [{"request": {"method": "POST", "path": "/repos/o/r/pulls", "query": {...}, "json": {...}},
      "response": {"status": 201, "headers": {...}, "json": {...}}}]

`path` is the raw, still percent-encoded path (GitLab's `group%2Fproject` must stay encoded);
`query` and `json` are compared when recorded, and a request with a query or a body the
recording does not have differs from it. The response bodies are trimmed copies of what each
host's documentation shows for that route.

`GITHUB`, `GITLAB`, `GITEA` and `BITBUCKET_SERVER` say what each host's recordings under
`tests/fixtures/codehosts/<kind>/` were made with; `Replay` makes hosts that answer from them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

from offload.repos.codehosts.base import CodeHost, PullRequestDraft
from offload.repos.codehosts.registry import CodeHostConfig, connect

RECORDINGS = Path(__file__).parent.parent / "fixtures" / "codehosts"


class RecordedTransport(httpx.MockTransport):
    """An httpx transport that answers from a recording and fails on any unrecorded request."""

    def __init__(self, path: Path, headers: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.exchanges: list[dict[str, Any]] = json.loads(path.read_text())
        # Sent with every request, e.g. how the host expects the token.
        self.headers = dict(headers or {})
        self.requests: list[httpx.Request] = []
        super().__init__(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        number = len(self.requests)
        self.requests.append(request)
        sent = _describe(request)
        if number >= len(self.exchanges):
            pytest.fail(
                f"{self.path.name}: request {number + 1} was not recorded "
                f"(the recording has {len(self.exchanges)}):\n  sent: {sent}",
                pytrace=False,
            )
        recorded = self.exchanges[number]["request"]
        if not _matches(request, recorded):
            pytest.fail(
                f"{self.path.name}: request {number + 1} differs from the recording:\n"
                f"  sent:     {sent}\n  recorded: {_describe_recorded(recorded)}",
                pytrace=False,
            )
        for name, value in self.headers.items():
            if request.headers.get(name) != value:
                shown = "missing" if name not in request.headers else "a different value"
                pytest.fail(
                    f"{self.path.name}: request {number + 1} ({sent}) has {shown} for the "
                    f"{name} header the host expects",
                    pytrace=False,
                )
        answer = self.exchanges[number]["response"]
        body = answer.get("json")
        return httpx.Response(
            answer["status"],
            headers=answer.get("headers", {}),
            content=b"" if body is None else json.dumps(body).encode(),
        )

    def assert_all_used(self) -> None:
        """Fail the test if the client skipped some recorded exchanges."""
        left = self.exchanges[len(self.requests) :]
        if left:
            missing = "\n  ".join(_describe_recorded(exchange["request"]) for exchange in left)
            pytest.fail(
                f"{self.path.name}: {len(left)} recorded exchange(s) were never requested:\n"
                f"  {missing}",
                pytrace=False,
            )


@dataclass(frozen=True)
class RecordedHost:
    """A code host as its exchanges were recorded: URL, token, repository and pull request."""

    kind: str
    name: str  # as the host's errors name it
    url: str
    token: str
    # What every request must carry: the token as the host expects it, and the like.
    headers: Mapping[str, str]
    repo: str  # the repository's path on the host
    number: str  # the pull request the recordings open and change
    pull_url: str  # where people see it

    @property
    def draft(self) -> PullRequestDraft:
        """The pull request every recording of `open` asks for."""
        return PullRequestDraft(
            repo=self.repo,
            base_ref="main",
            head_ref="offload/fix-readme",
            title="Fix the README's install steps",
            body="Created by offload batch change `fix-readme`.",
        )

    @property
    def folder(self) -> Path:
        """Where the recordings of this host are."""
        return RECORDINGS / self.kind


_GITHUB_TOKEN = "ghp_recordedTOKEN0000000000000000000000"
GITHUB = RecordedHost(
    kind="github",
    name="GitHub",
    url="https://api.github.com",
    token=_GITHUB_TOKEN,
    headers={"Authorization": f"Bearer {_GITHUB_TOKEN}", "X-GitHub-Api-Version": "2022-11-28"},
    repo="octo-org/hello-world",
    number="42",
    pull_url="https://github.com/octo-org/hello-world/pull/42",
)
_GITLAB_TOKEN = "glpat-recordedTOKEN000000"
GITLAB = RecordedHost(
    kind="gitlab",
    name="GitLab",
    url="https://gitlab.example.com",
    token=_GITLAB_TOKEN,
    headers={"PRIVATE-TOKEN": _GITLAB_TOKEN},
    # A project in a subgroup: its path goes into the URL encoded as acme%2Fplatform%2Fapi.
    repo="acme/platform/api",
    number="7",  # the project-scoped iid, not the global id
    pull_url="https://gitlab.example.com/acme/platform/api/-/merge_requests/7",
)
_GITEA_TOKEN = "recorded0gitea0token0000000000000000000"
GITEA = RecordedHost(
    kind="gitea",
    name="Gitea",
    url="https://gitea.example.com",
    token=_GITEA_TOKEN,
    headers={"Authorization": f"token {_GITEA_TOKEN}"},
    repo="infra/deploy-scripts",
    number="12",
    pull_url="https://gitea.example.com/infra/deploy-scripts/pulls/12",
)
_BITBUCKET_SERVER_TOKEN = "recorded0bitbucket0token00000000000000000000"
BITBUCKET_SERVER = RecordedHost(
    kind="bitbucketserver",
    name="Bitbucket Server",
    url="https://bitbucket.example.com",
    token=_BITBUCKET_SERVER_TOKEN,
    headers={"Authorization": f"Bearer {_BITBUCKET_SERVER_TOKEN}"},
    # A project key and a repository slug.
    repo="PLAT/deploy-tools",
    number="17",
    pull_url="https://bitbucket.example.com/projects/PLAT/repos/deploy-tools/pull-requests/17",
)


class Replay:
    """Factory: hosts of one kind whose HTTP clients each answer from one recording.

    Leaving `async with` closes the clients and fails the test on recorded exchanges a host
    skipped.
    """

    def __init__(self, recorded: RecordedHost) -> None:
        self.recorded = recorded
        self.transports: list[RecordedTransport] = []
        self._clients: list[httpx.AsyncClient] = []

    def __call__(self, name: str) -> CodeHost:
        """A host that answers from `<name>_recorded.json`."""
        recorded = self.recorded
        transport = RecordedTransport(recorded.folder / f"{name}_recorded.json", recorded.headers)
        self.transports.append(transport)
        self._clients.append(httpx.AsyncClient(transport=transport))
        config = CodeHostConfig(recorded.kind, recorded.url, recorded.token)
        return connect(config, self._clients[-1])

    @property
    def requests(self) -> list[httpx.Request]:
        """Every request the hosts made, in order."""
        return [request for transport in self.transports for request in transport.requests]

    async def __aenter__(self) -> Replay:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for client in self._clients:
            await client.aclose()
        if exc is None:
            for transport in self.transports:
                transport.assert_all_used()


def _matches(request: httpx.Request, recorded: Mapping[str, Any]) -> bool:
    if request.method != recorded["method"] or _raw_path(request) != recorded["path"]:
        return False
    if dict(request.url.params) != {k: str(v) for k, v in recorded.get("query", {}).items()}:
        return False
    return _body(request) == recorded.get("json")


def _raw_path(request: httpx.Request) -> str:
    return request.url.raw_path.decode("ascii").split("?", 1)[0]


def _body(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


def _describe(request: httpx.Request) -> str:
    query = f" query={dict(request.url.params)}" if request.url.params else ""
    body = _body(request)
    return f"{request.method} {_raw_path(request)}{query}" + (f" json={body}" if body else "")


def _describe_recorded(recorded: Mapping[str, Any]) -> str:
    query = f" query={recorded['query']}" if recorded.get("query") else ""
    body = f" json={recorded['json']}" if recorded.get("json") is not None else ""
    return f"{recorded['method']} {recorded['path']}{query}{body}"
