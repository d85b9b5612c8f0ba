"""Site administration over a served offload, as a browser without JavaScript sees it: users
(create, disable and enable, promote and demote), organizations and their members (from the
site admin's pages and from an organization admin's own page), queue grants, the audit log
(newest first, filtered, by keyset pages) and the versions of the server, its workers and
executors. Each form needs its CSRF token, each action changes what the API reports and leaves
the API's audit entry, bad input is a 4xx page that says why, and non-admins get 403."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest
from access_site import PASSWORD, Site, served
from web_client import browser, csrf_of, signed_in

from offload import __version__
from offload.config import Settings
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.identity.audit import AuditLog
from offload.protocol.wire import HeartbeatRequest
from offload.testing import FakeClock
from offload.web.admin import AUDIT_PER_PAGE
from offload.worker.heartbeat import FORGET_AFTER, Workers
from offload.worker.service import run_worker

# The target cell of an audit entry this module's test wrote.
TARGET = re.compile(r'<td class="wrap">(step \d+|the last one)</td>')
ADMIN_PAGES = (
    "/admin",
    "/admin/users",
    "/admin/orgs",
    "/admin/queues",
    "/admin/audit",
    "/admin/versions",
)


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


async def api(site: Site, path: str, who: str = "admin") -> Any:
    """What the API answers `who` (a site admin unless told) at `path`."""
    answer = await site.call(who, "GET", path)
    assert answer.status_code == 200, (path, answer.status_code, answer.text)
    return answer.json()


async def audited(site: Site, prefix: str) -> list[tuple[str, str, str]]:
    """(actor, action, target) of the audit entries whose action starts with `prefix`."""
    rows = await site.db.fetch(
        "SELECT actor, action, target FROM audit_log WHERE action LIKE :p ORDER BY id",
        {"p": prefix + "%"},
    )
    return [(r["actor"], r["action"], r["target"]) for r in rows]


async def can_sign_in(site: Site, username: str, password: str) -> bool:
    async with browser(site) as client:
        answer = await client.post("/sign-in", data={"username": username, "password": password})
        return answer.status_code == 303


async def test_only_site_admins_see_the_admin_pages(site: Site) -> None:
    async with signed_in(site, "olive") as olive:
        home = await olive.get("/")
        assert 'href="/admin"' not in home.text
        for path in ADMIN_PAGES:
            answer = await olive.get(path)
            assert answer.status_code == 403, path
            assert "Only site admins administer the site." in answer.text
    async with signed_in(site, "root") as root:
        overview = await root.get("/admin")
        assert overview.status_code == 200
        for path in ADMIN_PAGES[1:]:
            assert f'<a href="{path}"' in overview.text, path
            page = await root.get(path)
            assert page.status_code == 200, path
            assert f'<a href="{path}" aria-current="page">' in page.text, path
        assert "3 users:" in overview.text and "1 organization:" in overview.text


async def test_a_site_admin_creates_users_and_the_api_reports_them(site: Site) -> None:
    async with signed_in(site, "root") as root:
        page = await root.get("/admin/users")
        listed = re.findall(r'<th scope="row">([\w.-]+)</th>', page.text)
        assert listed == ["root", "olive", "mallory"]
        csrf = csrf_of(page.text)
        alice = {
            "username": "alice",
            "display_name": "Alice A.",
            "email": "alice@example.com",
            "password": PASSWORD,
        }
        refused = await root.post("/admin/users", data={**alice, "csrf": "forged"})
        assert refused.status_code == 403
        assert (await site.call("admin", "GET", "/api/users/alice")).status_code == 404

        made = await root.post("/admin/users", data={**alice, "csrf": csrf})
        assert made.status_code == 303
        assert made.headers["location"] == "/admin/users?did=create&user=alice"
        page = await root.get(made.headers["location"])
        assert "User alice is created." in page.text and "Alice A." in page.text
        record = await api(site, "/api/users/alice")
        assert record["displayName"] == "Alice A." and record["email"] == "alice@example.com"
        assert record["siteAdmin"] is False and record["disabled"] is False
        assert await can_sign_in(site, "alice", PASSWORD)

        # No password: one is made up and shown once, in the answer to the form itself.
        made = await root.post(
            "/admin/users", data={"csrf": csrf, "username": "bob", "site_admin": "on"}
        )
        assert made.status_code == 201 and "User bob is created." in made.text
        found = re.search(r'<input id="new-password" class="token" value="([^"]+)"', made.text)
        assert found, "the generated password is not on the page"
        assert await can_sign_in(site, "bob", found.group(1))
        assert (await api(site, "/api/users/bob"))["siteAdmin"] is True
        assert found.group(1) not in (await root.get("/admin/users")).text

        for fields, status, said in (
            ({"username": "alice", "password": PASSWORD}, 409, "the name 'alice' is taken"),
            ({"username": "ACME", "password": PASSWORD}, 409, "the name 'ACME' is taken"),
            ({"username": "bad name", "password": PASSWORD}, 400, "username 'bad name' must be"),
            ({"username": "global", "password": PASSWORD}, 400, "'global' is reserved"),
            ({"username": "carol", "password": "short"}, 400, "a password needs 12 to 1024"),
        ):
            answer = await root.post("/admin/users", data={**fields, "csrf": csrf})
            assert answer.status_code == status, (fields, answer.text[-2000:])
            assert said in unescape(answer.text) and 'role="alert"' in answer.text, fields
            assert f'value="{fields["username"]}"' in answer.text, "the form lost its input"
        assert (await site.call("admin", "GET", "/api/users/carol")).status_code == 404
    assert await audited(site, "user.") == [
        ("root", "user.create", "alice"),
        ("root", "user.create", "bob"),
    ]


async def test_disable_enable_promote_demote_change_what_the_api_reports(site: Site) -> None:
    async with signed_in(site, "root") as root, signed_in(site, "olive") as olive:
        page = await root.get("/admin/users")
        csrf = csrf_of(page.text)
        assert 'action="/admin/users/olive/disable" data-confirm="Disable olive?' in page.text
        assert 'action="/admin/users/root/' not in page.text, (
            "a site admin is offered to act on self"
        )

        refused = await root.post("/admin/users/olive/disable", data={"csrf": "forged"})
        assert refused.status_code == 403
        assert (await api(site, "/api/users/olive"))["disabled"] is False

        done = await root.post("/admin/users/olive/disable", data={"csrf": csrf})
        assert done.status_code == 303
        page = await root.get(done.headers["location"])
        assert "olive is disabled: their sessions and tokens no longer work." in page.text
        assert (await api(site, "/api/users/olive"))["disabled"] is True
        assert (await site.call("owner", "GET", "/api/me")).status_code == 401
        assert (await olive.get("/")).status_code == 303, "a disabled user's session still works"
        assert not await can_sign_in(site, "olive", PASSWORD)

        done = await root.post("/admin/users/olive/enable", data={"csrf": csrf})
        assert done.status_code == 303
        assert "olive is enabled again" in (await root.get(done.headers["location"])).text
        assert (await api(site, "/api/users/olive"))["disabled"] is False
        assert (await site.call("owner", "GET", "/api/me")).status_code == 200

        done = await root.post("/admin/users/mallory/promote", data={"csrf": csrf})
        assert done.status_code == 303
        assert "mallory is a site admin now." in (await root.get(done.headers["location"])).text
        assert (await api(site, "/api/users/mallory"))["siteAdmin"] is True
        async with signed_in(site, "mallory") as mallory:
            assert (await mallory.get("/admin")).status_code == 200
            done = await root.post("/admin/users/mallory/demote", data={"csrf": csrf})
            assert done.status_code == 303
            assert (await mallory.get("/admin")).status_code == 403
        assert (await api(site, "/api/users/mallory"))["siteAdmin"] is False

        for path, status, said in (
            ("/admin/users/root/disable", 409, "You cannot disable yourself"),
            ("/admin/users/root/demote", 409, "You cannot demote yourself"),
            ("/admin/users/nobody/disable", 404, "No user 'nobody'."),
            ("/admin/users/olive/delete", 404, "No change 'delete'"),
        ):
            answer = await root.post(path, data={"csrf": csrf})
            assert answer.status_code == status and said in unescape(answer.text), path
        assert (await api(site, "/api/users/root"))["siteAdmin"] is True
    assert await audited(site, "user.") == [
        ("root", "user.disable", "olive"),
        ("root", "user.enable", "olive"),
        ("root", "user.promote", "mallory"),
        ("root", "user.demote", "mallory"),
    ]


async def members(site: Site, org: str) -> dict[str, str]:
    """The members of `org` and their roles, as the API reports them."""
    return {m["username"]: m["role"] for m in await api(site, f"/api/orgs/{org}/members")}


async def test_organizations_are_created_and_their_members_managed(site: Site) -> None:
    async with signed_in(site, "root") as root:
        page = await root.get("/admin/orgs")
        assert '<a href="/orgs/acme">acme</a>' in page.text
        csrf = csrf_of(page.text)
        fields = {"name": "blue", "display_name": "Team Blue"}
        assert (await root.post("/admin/orgs", data=fields)).status_code == 403
        made = await root.post("/admin/orgs", data={**fields, "csrf": csrf})
        assert made.status_code == 303 and made.headers["location"] == "/orgs/blue?did=create"
        page = await root.get(made.headers["location"])
        assert "The organization is created." in page.text and "No members yet." in page.text
        orgs = {o["name"]: o for o in await api(site, "/api/orgs")}
        assert orgs["blue"]["displayName"] == "Team Blue" and orgs["blue"]["members"] == 0
        for name, status, said in (
            ("blue", 409, "the name 'blue' is taken"),
            ("olive", 409, "the name 'olive' is taken"),
            ("no/slash", 400, "organization name 'no/slash' must be"),
        ):
            answer = await root.post("/admin/orgs", data={"csrf": csrf, "name": name})
            assert answer.status_code == status and said in unescape(answer.text), name

        added = await root.post(
            "/orgs/blue/members", data={"csrf": csrf, "username": "mallory", "role": "member"}
        )
        assert added.status_code == 303
        page = await root.get(added.headers["location"])
        assert "mallory is a member of the organization." in page.text
        assert await members(site, "blue") == {"mallory": "member"}

    # An organization's admin manages its members from its page; they reach it from their
    # profile, and another organization is not found.
    async with signed_in(site, "olive") as olive:
        profile = await olive.get("/profile")
        assert '<a href="/orgs/acme">acme</a>' in profile.text
        page = await olive.get("/orgs/acme")
        assert page.status_code == 200 and 'action="/orgs/acme/members"' in page.text
        csrf = csrf_of(page.text)
        assert (await olive.get("/orgs/blue")).status_code == 404
        answer = await olive.post(
            "/orgs/blue/members", data={"csrf": csrf, "username": "olive", "role": "admin"}
        )
        assert answer.status_code == 404 and await members(site, "blue") == {"mallory": "member"}

        for role in ("member", "admin"):
            answer = await olive.post(
                "/orgs/acme/members", data={"csrf": csrf, "username": "mallory", "role": role}
            )
            assert answer.status_code == 303
            article = "an" if role == "admin" else "a"
            said = f"mallory is {article} {role} of the organization."
            assert said in (await olive.get(answer.headers["location"])).text
            assert await members(site, "acme") == {"olive": "admin", "mallory": role}

        for fields, status, said in (
            ({"username": "nobody", "role": "member"}, 404, "No user 'nobody'"),
            ({"username": "mallory", "role": "owner"}, 400, "A role is one of member, admin."),
        ):
            answer = await olive.post("/orgs/acme/members", data={**fields, "csrf": csrf})
            assert answer.status_code == status and said in unescape(answer.text), fields

        remove = "/orgs/acme/members/mallory/remove"
        page = await olive.get("/orgs/acme")
        assert f'action="{remove}" data-confirm="Remove mallory from acme?' in page.text
        assert (await olive.post(remove, data={"csrf": "forged"})).status_code == 403
        answer = await olive.post(remove, data={"csrf": csrf})
        assert answer.status_code == 303
        page = await olive.get(answer.headers["location"])
        assert "mallory is no longer a member of the organization." in page.text
        assert await members(site, "acme") == {"olive": "admin"}
        again = await olive.post(remove, data={"csrf": csrf})
        assert again.status_code == 404 and "mallory is not a member of acme." in again.text

    # A member who is not an admin reads the members, and may not change them.
    async with signed_in(site, "mallory") as mallory:
        page = await mallory.get("/orgs/blue")
        assert page.status_code == 200 and '<th scope="row">mallory</th>' in page.text
        assert 'action="/orgs/blue/members"' not in page.text
        answer = await mallory.post(
            "/orgs/blue/members",
            data={"csrf": csrf_of(page.text), "username": "mallory", "role": "admin"},
        )
        assert answer.status_code == 403 and "Only admins of blue" in answer.text
        assert (await mallory.get("/orgs/acme")).status_code == 404
        assert (await mallory.get("/admin/orgs")).status_code == 403
    assert await audited(site, "org.") == [
        ("root", "org.create", "blue"),
        ("root", "org.member.set", "blue/mallory"),
        ("olive", "org.member.set", "acme/mallory"),
        ("olive", "org.member.set", "acme/mallory"),
        ("olive", "org.member.remove", "acme/mallory"),
    ]


async def test_queue_grants_are_granted_and_revoked(site: Site) -> None:
    job = {"repo": "demo", "command": ["true"], "queue": "gpu"}
    refused = await site.call("owner", "POST", "/api/jobs", json=job)
    assert refused.status_code == 403 and "may not use the gpu queue" in refused.text
    async with signed_in(site, "root") as root:
        page = await root.get("/admin/queues")
        assert "No grants" in page.text and "open queues (batches, default)" in page.text
        assert re.findall(r"<option[^>]*>(\w+)</option>", page.text)[:3] == [
            "default",
            "gpu",
            "batches",
        ]
        csrf = csrf_of(page.text)
        fields = {"queue": "gpu", "namespace": "olive", "permission": "use"}
        assert (await root.post("/admin/queues/grants", data=fields)).status_code == 403
        done = await root.post("/admin/queues/grants", data={**fields, "csrf": csrf})
        assert done.status_code == 303
        page = await root.get(done.headers["location"])
        assert "olive holds the use grant on the gpu queue." in page.text
        (grant,) = (await api(site, "/api/queues/grants"))["grants"]
        assert (grant["queue"], grant["namespace"], grant["permission"]) == ("gpu", "olive", "use")
        assert grant["grantedBy"] == "root"
        allowed = await site.call("owner", "POST", "/api/jobs", json=job)
        assert allowed.status_code == 201, allowed.text

        for changed, status, said in (
            ({"namespace": "nobody"}, 404, "No user or organization 'nobody'."),
            ({"queue": "nope"}, 404, "No executor queue 'nope'"),
            ({"permission": "root"}, 400, "A permission is one of use, network."),
        ):
            answer = await root.post(
                "/admin/queues/grants", data={**fields, **changed, "csrf": csrf}
            )
            assert answer.status_code == status and said in unescape(answer.text), changed

        revoke = "/admin/queues/grants/revoke"
        assert f'action="{revoke}"' in page.text
        done = await root.post(revoke, data={**fields, "csrf": csrf})
        assert done.status_code == 303
        page = await root.get(done.headers["location"])
        assert "olive no longer holds the use grant on the gpu queue." in page.text
        assert (await api(site, "/api/queues/grants"))["grants"] == []
        again = await root.post(revoke, data={**fields, "csrf": csrf})
        assert again.status_code == 404 and "olive holds no use grant on gpu." in again.text
    assert await audited(site, "queue.") == [
        ("root", "queue.grant", "gpu/olive"),
        ("root", "queue.revoke", "gpu/olive"),
    ]


async def test_the_audit_log_is_newest_first_filtered_and_paged_by_keyset(site: Site) -> None:
    audit = AuditLog(site.db)
    for i in range(AUDIT_PER_PAGE + 10):
        await audit.record("olive" if i % 2 else "mallory", "test.step", f"step {i}")
    await audit.record("olive", "test.other", "the last one")
    async with signed_in(site, "root") as root:
        page = await root.get("/admin/audit")
        # root's own sign-in is the newest entry of all; then the test's, newest first.
        assert page.text.index(">sign-in<") < page.text.index("the last one")
        steps = TARGET.findall(page.text)
        assert len(steps) == AUDIT_PER_PAGE - 1
        assert steps[:2] == ["the last one", f"step {AUDIT_PER_PAGE + 9}"]
        assert steps[-1] == "step 12"
        older = re.search(r'href="(/admin/audit\?before=\d+)">Older entries', page.text)
        assert older, "no link to older entries"
        rest = await root.get(older.group(1))
        assert TARGET.findall(rest.text) == [f"step {i}" for i in range(11, -1, -1)]
        assert "Newest entries" in rest.text and "Older entries" not in rest.text

        mine = await root.get("/admin/audit?actor=olive&action=test.step")
        shown = TARGET.findall(mine.text)
        assert len(shown) == (AUDIT_PER_PAGE + 10) // 2
        assert all(int(s.split()[1]) % 2 == 1 for s in shown)
        assert 'value="olive"' in mine.text and 'value="test.step"' in mine.text
        assert "Older entries" not in mine.text
        filtered = await root.get("/admin/audit?action=test.other")
        assert "the last one" in filtered.text and "step 1<" not in filtered.text
        nothing = await root.get("/admin/audit?actor=nobody")
        assert "No entries match." in nothing.text
        bad = await root.get("/admin/audit?actor=%01x")
        assert bad.status_code == 400 and "printable characters" in bad.text
        long = await root.get("/admin/audit?action=" + "a" * 65)
        assert long.status_code == 400


def version_rows(page: str) -> dict[str, str]:
    """The versions table's rows by host: each row's HTML."""
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return {re.search(r'<th scope="row">([^<]+)</th>', r).group(1): r for r in rows}  # type: ignore[union-attr]


async def beat(site: Site, name: str, version: str) -> None:
    """A heartbeat of executor `name`, as it sends them, saying it runs offload `version`."""
    request = HeartbeatRequest(
        executor_name=name,
        queue_names=["default"],
        os="linux",
        architecture="x86_64",
        executor_version=version,
        git_version="2.39.5",
        runtime="sandbox",
    )
    async with httpx.AsyncClient(base_url=site.url, timeout=30) as client:
        token = (await api(site, "/api/executors/token"))["token"]
        answer = await client.post(
            "/.executors/queue/heartbeat",
            json=request.model_dump(by_alias=True),
            headers={"Authorization": f"token-executor {token}"},
        )
        assert answer.status_code == 200, answer.text


async def test_versions_show_the_server_its_workers_and_executors_and_flag_differences(
    site: Site, db_url: DatabaseURL, tmp_path: Path
) -> None:
    async with signed_in(site, "root") as root:
        page = await root.get("/admin/versions")
        assert "No worker has reported its version." in page.text
        (server,) = version_rows(page.text).values()
        assert f"<td>{__version__}</td>" in server and "answering this page" in server

        await beat(site, "exec-old", "0.0.1")
        await beat(site, "exec-same", __version__)
        # A real worker, with one job: its heartbeat routine runs whatever its jobs.
        stop = asyncio.Event()
        settings = Settings(data_dir=tmp_path / "worker", database_url=db_url.raw, worker_port=0)
        worker = asyncio.create_task(run_worker(settings, ["identity.janitor"], stop=stop))
        try:
            async with asyncio.timeout(30):
                # Polling is what the versions page does; the worker offers nothing to wait on.
                while not await Workers(site.db).list():  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        finally:
            stop.set()
            assert await worker == 0

        page = await root.get("/admin/versions")
        rows = version_rows(page.text)
        assert "No worker has reported" not in page.text
        assert "differs" not in rows["exec-same"] and f"<td>{__version__}</td>" in rows["exec-same"]
        assert '<td>0.0.1 <span class="state state-failed">differs</span></td>' in rows["exec-old"]
        assert "<td>linux / x86_64</td>" in rows["exec-old"] and "2.39.5" in rows["exec-old"]
        (worker_row,) = [r for r in rows.values() if "<td>worker</td>" in r]
        assert f"<td>{__version__}</td>" in worker_row and "identity.janitor" in worker_row
        assert "active" in worker_row
        overview = await root.get("/admin")
        assert "1 differs from the server" in overview.text


async def test_a_restarted_worker_takes_its_row_back_and_old_rows_are_forgotten(
    db: Database,
) -> None:
    clock = FakeClock(datetime(2026, 12, 1, tzinfo=UTC))
    workers = Workers(db, clock=clock)
    started = clock.now()
    await workers.beat("host-a", ["queues.resetter"], version="1.0", git="2.39", started_at=started)
    await workers.beat("host-b", ["repos.syncer"], version="1.0", git="2.39", started_at=started)
    clock.advance(timedelta(days=3))
    # host-a restarts with a new release: the same row, with what it says now.
    await workers.beat(
        "host-a", ["queues.resetter"], version="1.1", git="2.40", started_at=clock.now()
    )
    (a, b) = await workers.list()
    assert (a.hostname, a.version, a.git_version, a.started_at) == (
        "host-a",
        "1.1",
        "2.40",
        clock.now(),
    )
    assert a.active(clock.now()) and not b.active(clock.now())
    # Another set of jobs on the same host is another worker.
    await workers.beat("host-a", ["repos.syncer"], version="1.1", git="2.40", started_at=started)
    assert len(await workers.list()) == 3
    clock.advance(FORGET_AFTER - timedelta(days=2))
    await workers.beat(
        "host-a", ["queues.resetter"], version="1.1", git="2.40", started_at=clock.now()
    )
    assert [(w.hostname, w.jobs) for w in await workers.list()] == [
        ("host-a", ["queues.resetter"]),
        ("host-a", ["repos.syncer"]),
    ]
