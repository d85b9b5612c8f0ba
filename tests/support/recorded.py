"""Replay of recorded code host API exchanges, for the SaaS hosts these machines cannot reach.

A recording is a JSON list of exchanges, in the order the client must make them:

    [{"request": {"method": "POST", "path": "/repos/o/r/pulls", "query": {...}, "json": {...}},
      "response": {"status": 201, "headers": {...}, "json": {...}}}]

`path` is the raw, still percent-encoded path (GitLab's `group%2Fproject` must stay encoded);
`query` and `json` are compared when recorded, and a request with a query or a body the
recording does not have differs from it. The response bodies are trimmed copies of what each
host's documentation shows for that route.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest


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
