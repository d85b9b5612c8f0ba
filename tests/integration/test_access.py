"""Who may call what: every route of the server, walked with no credentials, with an unrelated
user's token, with the owner's and with a site admin's, on both databases.

A route added later without an entry in ROUTES fails `test_every_route_answers_each_caller_as_
expected`: each route must say who may call it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from access_site import CALLERS, Site, served

from offload.db.base import Database
from offload.db.url import DatabaseURL

Request = Callable[[Site, str], Awaitable[httpx.Response]]
# The expected status for (anonymous, other user, owner, site admin).
Expected = tuple[int, int, int, int]


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


def plain(method: str, path: str, **kwargs: object) -> Request:
    """The same request whoever calls."""

    async def request(site: Site, who: str) -> httpx.Response:
        return await site.call(who, method, path, **kwargs)

    return request


def on_job(method: str, suffix: str = "", *, cancel_first: bool = False) -> Request:
    """A request about a new job of the owner's."""

    async def request(site: Site, who: str) -> httpx.Response:
        job_id = await site.job()
        if cancel_first:
            await site.as_owner("POST", f"/api/jobs/{job_id}/cancel")
        return await site.call(who, method, f"/api/jobs/{job_id}{suffix}")

    return request


def on_spec(method: str, suffix: str = "", *, local: bool = False, **kwargs: object) -> Request:
    """A request about a new batch spec of the owner's."""

    async def request(site: Site, who: str) -> httpx.Response:
        rand_id = await site.spec(local=local)
        return await site.call(who, method, f"/api/batches/specs/{rand_id}{suffix}", **kwargs)

    return request


def on_change(method: str, suffix: str = "", **kwargs: object) -> Request:
    """A request about a new batch change of the owner's."""

    async def request(site: Site, who: str) -> httpx.Response:
        name = await site.batch_change()
        return await site.call(who, method, f"/api/batches/changes/olive/{name}{suffix}", **kwargs)

    return request


def on_pull(method: str, suffix: str = "") -> Request:
    """A request about a new pull request the owner's batch change opened."""

    async def request(site: Site, who: str) -> httpx.Response:
        number = await site.pull_request()
        return await site.call(who, method, f"/api/pulls/demo/{number}{suffix}")

    return request


def on_user(method: str, suffix: str, *, fresh: bool = False, **kwargs: object) -> Request:
    """A request about the owner's user (or a new user, `fresh`)."""

    async def request(site: Site, who: str) -> httpx.Response:
        username = "olive"
        if fresh:
            username = site.fresh("victim")
            made = await site.call("admin", "POST", "/api/users", json={"username": username})
            assert made.status_code == 201, made.text
        return await site.call(who, method, f"/api/users/{username}{suffix}", **kwargs)

    return request


def new_user(site: Site, who: str) -> Awaitable[httpx.Response]:
    return site.call(who, "POST", "/api/users", json={"username": site.fresh("new")})


async def revoke_token(site: Site, who: str) -> httpx.Response:
    made = await site.as_owner("POST", "/api/users/olive/tokens", json={"note": "x"})
    return await site.call(who, "DELETE", f"/api/users/olive/tokens/{made['id']}")


def new_org(site: Site, who: str) -> Awaitable[httpx.Response]:
    return site.call(who, "POST", "/api/orgs", json={"name": site.fresh("org")})


async def set_member(site: Site, who: str) -> httpx.Response:
    username = site.fresh("member")
    await site.call("admin", "POST", "/api/users", json={"username": username})
    return await site.call(
        who, "PUT", f"/api/orgs/acme/members/{username}", json={"role": "member"}
    )


async def remove_member(site: Site, who: str) -> httpx.Response:
    username = site.fresh("member")
    await site.call("admin", "POST", "/api/users", json={"username": username})
    await site.as_owner("PUT", f"/api/orgs/acme/members/{username}", json={"role": "member"})
    return await site.call(who, "DELETE", f"/api/orgs/acme/members/{username}")


async def add_repo(site: Site, who: str) -> httpx.Response:
    return await site.call(who, "POST", "/api/repos", json={"source": await site.repo()})


async def remove_repo(site: Site, who: str) -> httpx.Response:
    added = await site.call("admin", "POST", "/api/repos", json={"source": await site.repo()})
    assert added.status_code == 201, added.text
    return await site.call(who, "DELETE", f"/api/repos/{added.json()['name']}")


async def revoke_grant(site: Site, who: str) -> httpx.Response:
    org = site.fresh("team")
    await site.call("admin", "POST", "/api/orgs", json={"name": org})
    granted = await site.call("admin", "POST", "/api/queues/gpu/grants", json={"namespace": org})
    assert granted.status_code == 201, granted.text
    return await site.call(who, "DELETE", f"/api/queues/gpu/grants/{org}")


def grant(site: Site, who: str) -> Awaitable[httpx.Response]:
    return site.call(who, "POST", "/api/queues/gpu/grants", json={"namespace": "acme"})


async def set_secret(site: Site, who: str) -> httpx.Response:
    return await site.call(who, "PUT", f"/api/secrets/olive/{site.fresh('S')}", json={"value": "v"})


async def delete_secret(site: Site, who: str) -> httpx.Response:
    name = site.fresh("S")
    await site.as_owner("PUT", f"/api/secrets/olive/{name}", json={"value": "v"})
    return await site.call(who, "DELETE", f"/api/secrets/olive/{name}")


async def secret_accesses(site: Site, who: str) -> httpx.Response:
    name = site.fresh("S")
    await site.as_owner("PUT", f"/api/secrets/olive/{name}", json={"value": "v"})
    return await site.call(who, "GET", f"/api/secrets/olive/{name}/accesses")


# A body every executor call parses, so that what answers is the route's access check.
EXECUTOR_BODY = {
    "executorName": "x",
    "jobId": 1,
    "jobIds": [],
    "key": "k",
    "command": ["true"],
    "startTime": "2026-01-01T00:00:00Z",
    "entries": [{"key": "k", "command": ["true"], "startTime": "2026-01-01T00:00:00Z"}],
    "entryId": 1,
    "errorMessage": "e",
}


def executor_route(method: str, path: str) -> Request:
    """An executor route: people's tokens are not executor tokens."""
    concrete = path.replace("{queue}", "default").replace("{repo}", "demo")
    return plain(method, concrete, json=EXECUTOR_BODY)


# A configuration that gives `demo` one index job (its README is all it holds).
INDEX_CONFIG = "index_jobs:\n  - indexer: sourcegraph/scip-go\n    indexer_args: [scip-go]\n"


async def configure_demo(site: Site) -> None:
    """Store INDEX_CONFIG for `demo`, as a site admin."""
    answer = await site.call(
        "admin",
        "PUT",
        "/api/codeintel/config",
        params={"repo": "demo"},
        content=INDEX_CONFIG,
        headers={"Content-Type": "text/plain"},
    )
    assert answer.status_code == 200, answer.text


async def delete_index_config(site: Site, who: str) -> httpx.Response:
    """Delete `demo`'s configuration, set just before."""
    await configure_demo(site)
    return await site.call(who, "DELETE", "/api/codeintel/config", params={"repo": "demo"})


async def on_index_job(site: Site, who: str) -> httpx.Response:
    """Read an index job of `demo`, queued by the owner."""
    await configure_demo(site)
    queued = await site.as_owner("POST", "/api/codeintel/index", json={"repo": "demo"})
    return await site.call(who, "GET", f"/api/codeintel/indexes/{queued['jobs'][0]['id']}")


SIGN_IN = {"username": "olive", "password": "correct horse battery"}
ADMIN_ONLY: Expected = (401, 403, 403, 200)
MINE: Expected = (401, 404, 200, 200)
EVERYONE: Expected = (401, 200, 200, 200)
PUBLIC: Expected = (200, 200, 200, 200)
EXECUTORS: Expected = (401, 401, 401, 401)

ROUTES: dict[tuple[str, str], tuple[Request, Expected]] = {
    ("GET", "/healthz"): (plain("GET", "/healthz"), PUBLIC),
    ("GET", "/version"): (plain("GET", "/version"), PUBLIC),
    ("GET", "/metrics"): (plain("GET", "/metrics"), PUBLIC),
    ("GET", "/api/openapi.json"): (plain("GET", "/api/openapi.json"), EVERYONE),
    # identity
    ("POST", "/api/session"): (plain("POST", "/api/session", json=SIGN_IN), PUBLIC),
    ("DELETE", "/api/session"): (plain("DELETE", "/api/session"), (401, 204, 204, 204)),
    ("GET", "/api/me"): (plain("GET", "/api/me"), EVERYONE),
    ("GET", "/api/users"): (plain("GET", "/api/users"), ADMIN_ONLY),
    ("POST", "/api/users"): (new_user, (401, 403, 403, 201)),
    ("GET", "/api/users/{username}"): (on_user("GET", ""), MINE),
    ("POST", "/api/users/{username}/disable"): (
        on_user("POST", "/disable", fresh=True),
        ADMIN_ONLY,
    ),
    ("POST", "/api/users/{username}/enable"): (on_user("POST", "/enable", fresh=True), ADMIN_ONLY),
    ("POST", "/api/users/{username}/promote"): (
        on_user("POST", "/promote", fresh=True),
        ADMIN_ONLY,
    ),
    ("POST", "/api/users/{username}/demote"): (on_user("POST", "/demote", fresh=True), ADMIN_ONLY),
    ("PUT", "/api/users/{username}/password"): (
        on_user("PUT", "/password", json={"password": "correct horse battery"}),
        (401, 404, 204, 204),
    ),
    ("GET", "/api/users/{username}/tokens"): (on_user("GET", "/tokens"), MINE),
    ("POST", "/api/users/{username}/tokens"): (
        on_user("POST", "/tokens", json={"note": "x"}),
        (401, 404, 201, 201),
    ),
    ("DELETE", "/api/users/{username}/tokens/{token_id}"): (revoke_token, (401, 404, 204, 204)),
    ("GET", "/api/orgs"): (plain("GET", "/api/orgs"), EVERYONE),
    ("POST", "/api/orgs"): (new_org, (401, 403, 403, 201)),
    ("GET", "/api/orgs/{name}/members"): (plain("GET", "/api/orgs/acme/members"), MINE),
    ("PUT", "/api/orgs/{name}/members/{username}"): (set_member, (401, 404, 204, 204)),
    ("DELETE", "/api/orgs/{name}/members/{username}"): (remove_member, (401, 404, 204, 204)),
    ("GET", "/api/audit"): (plain("GET", "/api/audit"), ADMIN_ONLY),
    # jobs (the owner's namespace named explicitly: others may not submit there)
    ("POST", "/api/jobs"): (
        plain(
            "POST", "/api/jobs", json={"repo": "demo", "command": ["true"], "namespace": "olive"}
        ),
        (401, 403, 201, 201),
    ),
    ("GET", "/api/jobs"): (plain("GET", "/api/jobs"), EVERYONE),
    ("GET", "/api/jobs/{job_id}"): (on_job("GET"), MINE),
    ("GET", "/api/jobs/{job_id}/logs"): (on_job("GET", "/logs"), MINE),
    ("POST", "/api/jobs/{job_id}/cancel"): (on_job("POST", "/cancel"), MINE),
    ("POST", "/api/jobs/{job_id}/retry"): (on_job("POST", "/retry", cancel_first=True), MINE),
    # batch changes
    ("POST", "/api/batches/specs"): (
        plain(
            "POST",
            "/api/batches/specs",
            json={"spec": "name: [unclosed\n", "namespace": "olive"},
        ),
        # The owner and the admin get past access control to the spec's own errors.
        (401, 403, 400, 400),
    ),
    ("GET", "/api/batches/specs/{rand_id}"): (on_spec("GET"), MINE),
    ("GET", "/api/batches/specs/{rand_id}/workspaces"): (on_spec("GET", "/workspaces"), MINE),
    ("GET", "/api/batches/specs/{rand_id}/changesets"): (on_spec("GET", "/changesets"), MINE),
    # Only the user who submitted a local spec runs it: not even a site admin.
    ("POST", "/api/batches/specs/{rand_id}/dequeue"): (
        on_spec("POST", "/dequeue", local=True, json={"executorName": "laptop"}),
        (401, 404, 204, 403),
    ),
    ("POST", "/api/batches/specs/{rand_id}/heartbeat"): (
        on_spec("POST", "/heartbeat", local=True, json={"executorName": "laptop", "jobIds": []}),
        (401, 404, 200, 403),
    ),
    # Not resolved yet: past access control, apply says it is too early.
    ("POST", "/api/batches/specs/{rand_id}/apply"): (
        on_spec("POST", "/apply"),
        (401, 404, 409, 409),
    ),
    ("GET", "/api/batches/changes/{namespace}/{name}"): (on_change("GET"), MINE),
    ("GET", "/api/batches/changes/{namespace}/{name}/logs"): (on_change("GET", "/logs"), MINE),
    ("POST", "/api/batches/changes/{namespace}/{name}/retry"): (
        on_change("POST", "/retry", json={}),
        MINE,
    ),
    ("POST", "/api/batches/changes/{namespace}/{name}/close"): (on_change("POST", "/close"), MINE),
    # the built-in code host
    ("GET", "/api/pulls"): (plain("GET", "/api/pulls"), EVERYONE),
    ("GET", "/api/pulls/{repo}/{number}"): (on_pull("GET"), EVERYONE),
    ("POST", "/api/pulls/{repo}/{number}/merge"): (on_pull("POST", "/merge"), (401, 403, 200, 200)),
    ("POST", "/api/pulls/{repo}/{number}/close"): (on_pull("POST", "/close"), (401, 403, 200, 200)),
    # repositories
    ("GET", "/api/repos"): (plain("GET", "/api/repos"), EVERYONE),
    ("POST", "/api/repos"): (add_repo, (401, 403, 403, 201)),
    ("POST", "/api/repos/sync"): (
        plain("POST", "/api/repos/sync", json={"names": ["demo"]}),
        ADMIN_ONLY,
    ),
    ("DELETE", "/api/repos/{name}"): (remove_repo, (401, 403, 403, 204)),
    # code intelligence
    ("GET", "/api/codeintel/infer"): (
        plain("GET", "/api/codeintel/infer", params={"repo": "demo"}),
        EVERYONE,
    ),
    ("POST", "/api/codeintel/index"): (
        plain("POST", "/api/codeintel/index", json={"repo": "demo"}),
        (401, 201, 201, 201),
    ),
    ("GET", "/api/codeintel/config"): (
        plain("GET", "/api/codeintel/config", params={"repo": "demo"}),
        EVERYONE,
    ),
    ("PUT", "/api/codeintel/config"): (
        plain(
            "PUT",
            "/api/codeintel/config",
            params={"repo": "demo"},
            content=INDEX_CONFIG,
            headers={"Content-Type": "text/plain"},
        ),
        ADMIN_ONLY,
    ),
    ("DELETE", "/api/codeintel/config"): (delete_index_config, ADMIN_ONLY),
    ("GET", "/api/codeintel/status"): (
        plain("GET", "/api/codeintel/status", params={"repo": "demo"}),
        EVERYONE,
    ),
    ("GET", "/api/codeintel/indexes"): (plain("GET", "/api/codeintel/indexes"), EVERYONE),
    ("GET", "/api/codeintel/indexes/{job_id}"): (on_index_job, EVERYONE),
    ("POST", "/api/codeintel/events"): (
        plain(
            "POST",
            "/api/codeintel/events",
            json={"events": [{"repository": "demo", "kind": "precise", "count": 3}]},
        ),
        (401, 204, 204, 204),
    ),
    ("GET", "/api/codeintel/ranking"): (plain("GET", "/api/codeintel/ranking"), EVERYONE),
    ("GET", "/api/codeintel/uploads"): (plain("GET", "/api/codeintel/uploads"), EVERYONE),
    ("GET", "/api/codeintel/{repo}/definitions"): (
        plain(
            "GET",
            "/api/codeintel/demo/definitions",
            params={"path": "README", "line": 0, "character": 0},
        ),
        EVERYONE,
    ),
    ("GET", "/api/codeintel/{repo}/references"): (
        plain(
            "GET",
            "/api/codeintel/demo/references",
            params={"path": "README", "line": 0, "character": 0},
        ),
        EVERYONE,
    ),
    ("GET", "/api/codeintel/{repo}/hover"): (
        plain(
            "GET", "/api/codeintel/demo/hover", params={"path": "README", "line": 0, "character": 0}
        ),
        EVERYONE,
    ),
    # queues and executors
    ("GET", "/api/queues"): (plain("GET", "/api/queues"), EVERYONE),
    ("GET", "/api/queues/grants"): (plain("GET", "/api/queues/grants"), ADMIN_ONLY),
    ("POST", "/api/queues/{queue}/grants"): (grant, (401, 403, 403, 201)),
    ("DELETE", "/api/queues/{queue}/grants/{namespace}"): (revoke_grant, (401, 403, 403, 204)),
    ("GET", "/api/executors"): (plain("GET", "/api/executors"), ADMIN_ONLY),
    ("GET", "/api/executors/token"): (plain("GET", "/api/executors/token"), ADMIN_ONLY),
    ("PUT", "/api/executors/token"): (
        plain("PUT", "/api/executors/token", json={"token": "a-new-executor-token-0123"}),
        (401, 403, 403, 204),
    ),
    # secrets
    ("GET", "/api/secrets/{namespace}"): (plain("GET", "/api/secrets/olive"), MINE),
    ("PUT", "/api/secrets/{namespace}/{name}"): (set_secret, (401, 404, 204, 204)),
    ("DELETE", "/api/secrets/{namespace}/{name}"): (delete_secret, (401, 404, 204, 204)),
    ("GET", "/api/secrets/{namespace}/{name}/accesses"): (secret_accesses, MINE),
}


def routes_of(site: Site) -> list[tuple[str, str]]:
    """Every (method, path) of the server's OpenAPI document, and the document's own route."""
    paths = site.app.openapi()["paths"]
    found = [(m.upper(), path) for path, methods in paths.items() for m in methods]
    return [*found, ("GET", "/api/openapi.json")]


@pytest.mark.slow
async def test_every_route_answers_each_caller_as_expected(site: Site) -> None:
    unlisted = []
    answers: dict[tuple[str, str], tuple[int, ...]] = {}
    for method, path in routes_of(site):
        if path.startswith("/.executors/"):
            request, expected = executor_route(method, path), EXECUTORS
        elif (method, path) in ROUTES:
            request, expected = ROUTES[(method, path)]
        else:
            unlisted.append(f"{method} {path}")
            continue
        got = tuple([(await request(site, who)).status_code for who in CALLERS])
        if got != expected:
            answers[(method, path)] = got
    assert not unlisted, f"routes without an entry in ROUTES (say who may call them): {unlisted}"
    assert not answers, "\n".join(
        f"{m} {p}: got {got}, expected {ROUTES[(m, p)][1] if (m, p) in ROUTES else EXECUTORS}"
        for (m, p), got in answers.items()
    )
    # Nothing listed that the server no longer has: the table stays the server's.
    stale = set(ROUTES) - set(routes_of(site))
    assert not stale, f"ROUTES lists routes the server does not have: {sorted(stale)}"


async def test_a_list_limit_has_a_maximum(site: Site) -> None:
    for path in (
        "/api/jobs?limit=100000",
        "/api/users?limit=100000",
        "/api/audit?limit=0",
        "/api/pulls?limit=5000",
    ):
        answer = await site.call("admin", "GET", path)
        assert answer.status_code == 422, (path, answer.text)


async def test_oversized_names_in_batch_paths_and_queries_are_refused(site: Site) -> None:
    long = "x" * 300
    for path, params in (
        (f"/api/batches/changes/{long}/fix", {}),
        (f"/api/batches/changes/olive/{long}", {}),
        ("/api/batches/changes/olive/fix/logs", {"spec": long}),
        ("/api/batches/changes/olive/fix/logs", {"repo": long}),
        (f"/api/batches/specs/{long}", {}),
    ):
        answer = await site.call("owner", "GET", path, params=params)
        assert answer.status_code == 422, (path, params, answer.text)


async def test_status_routes_can_be_closed_to_all_but_site_admins(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    async with served(db, db_url, tmp_path, status_routes="site-admin") as closed:
        for path in ("/metrics", "/healthz", "/version"):
            got = tuple([(await closed.call(who, "GET", path)).status_code for who in CALLERS])
            assert got == (401, 403, 403, 200), (path, got)


async def test_no_route_takes_its_principal_from_the_request(site: Site) -> None:
    # A dependency FastAPI could not resolve becomes a query parameter instead: the route would
    # then take its caller from the URL.
    document = site.app.openapi()
    taken = [
        (method, path)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        for parameter in operation.get("parameters", [])
        if parameter["name"] in ("principal", "_")
    ]
    assert taken == []
