"""Hostile input to the JSON API: each is a 4xx that says what was wrong and where, never a 500,
on SQLite and on PostgreSQL (which cannot store a NUL character in text).

NUL bytes in fields, paths and queries; numbers past what a 64-bit id holds; ids that are not
numbers; names longer than any name may be; integers of 100,000 digits, nesting 100,000 deep and
bytes that are not UTF-8 in JSON bodies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from access_site import PASSWORD, Site, served

from offload.db.base import Database
from offload.db.url import DatabaseURL

HUGE = "9" * 20  # past 2**63 - 1
LONG = "x" * 300


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


def problems(answer: httpx.Response) -> list[tuple[str, str]]:
    """A 422's problems as (where, what) pairs, e.g. ("body.note", "must not contain ...")."""
    detail = answer.json()["detail"]
    assert isinstance(detail, list), answer.text
    return [(".".join(str(part) for part in p["loc"]), p["msg"]) for p in detail]


async def refused(site: Site, method: str, path: str, where: str, says: str, **kwargs: Any) -> None:
    """`method path` as the site admin is a 422 naming `where`, with a message containing
    `says`."""
    answer = await site.call("admin", method, path, **kwargs)
    assert answer.status_code == 422, (method, path, answer.status_code, answer.text)
    found = problems(answer)
    assert any(w == where and says in msg for w, msg in found), (method, path, found)


async def test_nul_bytes_in_fields_paths_and_queries_are_refused_by_name(site: Site) -> None:
    nul = "must not contain"
    await refused(
        site,
        "POST",
        "/api/session",
        "body.username",
        nul,
        json={"username": "olive\x00", "password": PASSWORD},
    )
    await refused(site, "POST", "/api/users/olive/tokens", "body.note", nul, json={"note": "\x00"})
    await refused(
        site, "POST", "/api/orgs", "body.displayName", nul, json={"name": "o", "displayName": "\0"}
    )
    await refused(
        site,
        "POST",
        "/api/jobs",
        "body.command.1",
        nul,
        json={"repo": "demo", "command": ["echo", "a\x00b"]},
    )
    await refused(
        site, "POST", "/api/batches/specs", "body.spec", nul, json={"spec": "name: a\x00\n"}
    )
    await refused(site, "POST", "/api/repos/sync", "body.names.0", nul, json={"names": ["d\x00"]})
    await refused(site, "GET", "/api/audit", "query.actor", nul, params={"actor": "root\x00"})
    await refused(site, "GET", "/api/users/ol%00ive", "path.username", nul)
    await refused(site, "GET", "/api/secrets/ol%00ive", "path.namespace", nul)
    await refused(site, "GET", "/api/orgs/ac%00me/members", "path.name", nul)
    await refused(site, "GET", "/api/batches/changes/olive/fix/logs?repo=%00", "query.repo", nul)
    # What the server saw is what it still has: nothing was stored with a NUL in it.
    orgs = await site.call("admin", "GET", "/api/orgs")
    assert [o["name"] for o in orgs.json()] == ["acme"], orgs.text


async def test_ids_and_numbers_out_of_range_or_not_numbers_are_refused(site: Site) -> None:
    at_most = "less than or equal to 9223372036854775807"
    for path, where, says in (
        ("/api/jobs?limit=-1", "query.limit", "greater than or equal to 1"),
        ("/api/jobs?limit=" + "1" + "0" * 30, "query.limit", "less than or equal to 500"),
        (f"/api/jobs?before={HUGE}", "query.before", at_most),
        ("/api/users?after=-1", "query.after", "greater than or equal to 0"),
        (f"/api/users?after={HUGE}", "query.after", at_most),
        (f"/api/audit?before={HUGE}", "query.before", at_most),
        (f"/api/secrets/olive/S/accesses?before={HUGE}", "query.before", at_most),
        (f"/api/jobs/{HUGE}", "path.job_id", at_most),
        ("/api/jobs/0", "path.job_id", "greater than or equal to 1"),
        (f"/api/jobs/{HUGE}/logs", "path.job_id", at_most),
        (f"/api/pulls/demo/{HUGE}", "path.number", at_most),
    ):
        await refused(site, "GET", path, where, says)
    for method, path, where in (
        ("POST", f"/api/jobs/{HUGE}/retry", "path.job_id"),
        ("POST", f"/api/jobs/{HUGE}/cancel", "path.job_id"),
        ("DELETE", f"/api/users/olive/tokens/{HUGE}", "path.token_id"),
        ("POST", f"/api/pulls/demo/{HUGE}/merge", "path.number"),
    ):
        await refused(site, method, path, where, at_most)
    integer = "valid integer"
    for method, path, where in (
        ("GET", "/api/jobs/abc", "path.job_id"),
        ("GET", "/api/jobs/1.5", "path.job_id"),
        ("GET", "/api/jobs?before=x", "query.before"),
        ("POST", "/api/jobs/%20/cancel", "path.job_id"),
        ("DELETE", "/api/users/olive/tokens/one", "path.token_id"),
        ("GET", "/api/pulls/demo/first", "path.number"),
        ("GET", "/api/users?after=1e3", "query.after"),
    ):
        await refused(site, method, path, where, integer)


async def test_over_long_names_are_refused(site: Site) -> None:
    for method, path, where in (
        ("GET", f"/api/users/{LONG}", "path.username"),
        ("GET", f"/api/users/{LONG}/tokens", "path.username"),
        ("GET", f"/api/orgs/{LONG}/members", "path.name"),
        ("GET", f"/api/secrets/{LONG}", "path.namespace"),
        ("DELETE", f"/api/queues/default/grants/{LONG}", "path.namespace"),
        ("DELETE", f"/api/repos/{LONG}", "path.name"),
        ("GET", f"/api/audit?actor={LONG}", "query.actor"),
    ):
        await refused(site, method, path, where, "at most")
    await refused(
        site,
        "PUT",
        f"/api/orgs/acme/members/{LONG}",
        "path.username",
        "at most",
        json={"role": "member"},
    )
    # A repository name fits in 255 characters yet each part becomes a file name, which a
    # filesystem holds to 255 bytes: a 250-character part is refused, not a failed mkdir.
    part = "r" * 250
    answer = await site.call("admin", "DELETE", f"/api/repos/{part}")
    assert answer.status_code == 400, answer.text
    assert "at most 200 characters each" in answer.json()["detail"], answer.text
    added = await site.call("admin", "POST", "/api/repos", json={"source": "/x", "name": part})
    assert added.status_code == 400, added.text


async def test_unreadable_json_bodies_are_refused_with_their_reason(site: Site) -> None:
    digits = '{"repo": "demo", "command": ["true"], "namespace": 1' + "0" * 100_000 + "}"
    deep = '{"names": ' + "[" * 100_000 + "]" * 100_000 + "}"
    for method, path, body, says in (
        ("POST", "/api/jobs", digits.encode(), "an integer of more than 4300 digits"),
        ("PUT", "/api/secrets/olive/S", b'{"value": 1' + b"0" * 100_000 + b"}", "4300 digits"),
        ("POST", "/api/repos/sync", deep.encode(), "nested too deeply"),
        ("POST", "/api/users/olive/tokens", b'{"note": "\xff"}', "not UTF-8"),
        ("POST", "/api/orgs", b'{"name": ', "not valid JSON"),
    ):
        answer = await site.call(
            "admin", method, path, content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code in (400, 422), (path, answer.status_code, answer.text[:500])
        assert says in answer.text, (path, answer.text[:500])


async def test_a_body_that_is_not_json_is_refused(site: Site) -> None:
    # FastAPI hands such a body to validation as bytes, which a JSON error answer cannot carry.
    answer = await site.call(
        "admin",
        "PUT",
        "/api/orgs/acme/members/olive",
        content=b'{"role": "member"}',
        headers={"Content-Type": "text/plain"},
    )
    assert answer.status_code == 422, answer.text
    assert [where for where, _ in problems(answer)] == ["body"], answer.text
    answer = await site.call(
        "admin",
        "PUT",
        "/api/executors/token",
        content=b"\xff\xfe\x00binary",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert answer.status_code == 422, answer.text


async def test_an_executor_token_must_be_sendable_in_a_header(site: Site) -> None:
    # Executors send it as `Authorization: token-executor <token>`; one that no header can
    # carry would lock every executor out.
    for token in (
        "ünïcödé-executor-token",
        "with spaces in the executor token",
        "tab\tin-an-executor-token",
    ):
        await refused(
            site,
            "PUT",
            "/api/executors/token",
            "body.token",
            "visible ASCII",
            json={"token": token},
        )
    kept = await site.call("admin", "GET", "/api/executors/token")
    assert kept.json()["token"].isascii(), kept.text
