"""Signing in to a served offload, on both databases: passwords and browser sessions with their
CSRF token, access tokens that expire, are revoked or belong to a disabled user, the sign-in
rate limit and its audit trail, and what a token's scopes allow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from access_site import PASSWORD, Site, served

from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.identity.ratelimit import SignInLimiter
from offload.identity.tokens import AccessTokens
from offload.identity.users import Users

WRONG = "wrong username or password, or the user is disabled"


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


async def sign_in(site: Site, username: str, password: str) -> httpx.Response:
    """POST /api/session as a browser would, with no credential of its own."""
    async with httpx.AsyncClient(base_url=site.url, timeout=60) as browser:
        return await browser.post("/api/session", json={"username": username, "password": password})


async def with_cookie(
    site: Site, method: str, path: str, cookie: str, csrf: str | None = None, **kwargs: Any
) -> httpx.Response:
    """One request carrying the session cookie (and the CSRF header, when given)."""
    headers = {"Cookie": f"offload_session={cookie}"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    async with httpx.AsyncClient(base_url=site.url, timeout=60) as browser:
        return await browser.request(method, path, headers=headers, **kwargs)


async def with_token(site: Site, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
    """One request with `token` in the Authorization header."""
    async with httpx.AsyncClient(base_url=site.url, timeout=60) as client:
        return await client.request(method, path, headers={"Authorization": f"token {token}"}, **kw)


async def test_a_password_opens_a_session_whose_writes_need_its_csrf_token(site: Site) -> None:
    signed = await sign_in(site, "olive", PASSWORD)
    assert signed.status_code == 200, signed.text
    csrf = signed.json()["csrfToken"]
    assert signed.json()["username"] == "olive" and len(csrf) >= 16
    set_cookie = signed.headers["set-cookie"]
    attributes = [part.strip().lower() for part in set_cookie.split(";")]
    assert attributes[0].startswith("offload_session=")
    assert "httponly" in attributes and "samesite=lax" in attributes
    cookie = signed.cookies["offload_session"]

    me = await with_cookie(site, "GET", "/api/me", cookie)
    assert me.status_code == 200, me.text
    assert (me.json()["username"], me.json()["siteAdmin"]) == ("olive", False)
    assert me.json()["csrfToken"] == csrf
    assert me.json()["organizations"] == [{"name": "acme", "role": "admin"}]

    body = {"note": "from the browser"}
    for header in (None, "not-the-token"):
        refused = await with_cookie(
            site, "POST", "/api/users/olive/tokens", cookie, header, json=body
        )
        assert refused.status_code == 403, refused.text
        assert "X-CSRF-Token" in refused.json()["detail"]
    olive = await Users(site.db).require("olive")
    assert len(await AccessTokens(site.db).list(olive.id)) == 1, "a refused write made a token"
    made = await with_cookie(site, "POST", "/api/users/olive/tokens", cookie, csrf, json=body)
    assert made.status_code == 201, made.text
    assert made.json()["token"].startswith("offload_") and made.json()["note"] == body["note"]

    # Signing out is a write as well: without the header the session lives on.
    kept = await with_cookie(site, "DELETE", "/api/session", cookie)
    assert kept.status_code == 403
    assert (await with_cookie(site, "GET", "/api/me", cookie)).status_code == 200
    ended = await with_cookie(site, "DELETE", "/api/session", cookie, csrf)
    assert ended.status_code == 204, ended.text
    gone = await with_cookie(site, "GET", "/api/me", cookie)
    assert gone.status_code == 401
    assert "sign in again" in gone.json()["detail"]
    # A cookie whose signature does not match is refused too.
    forged = await with_cookie(site, "GET", "/api/me", cookie.split(".")[0] + ".forged")
    assert forged.status_code == 401


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(site: Site) -> None:
    wrong = await sign_in(site, "olive", "not " + PASSWORD)
    unknown = await sign_in(site, "nobody-here", PASSWORD)
    assert (wrong.status_code, unknown.status_code) == (401, 401)
    assert wrong.json() == unknown.json() == {"detail": WRONG}
    assert "set-cookie" not in wrong.headers and "set-cookie" not in unknown.headers
    assert (await sign_in(site, "olive", PASSWORD)).status_code == 200


async def test_an_expired_token_is_refused(site: Site) -> None:
    olive = await Users(site.db).require("olive")
    token, value = await AccessTokens(site.db).create(olive.id, ["user:all"], note="old")
    await site.db.fetch(
        "UPDATE access_tokens SET expires_at = :t WHERE id = :i",
        {"t": datetime.now(UTC) - timedelta(minutes=1), "i": token.id},
    )
    refused = await with_token(site, "GET", "/api/me", value)
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]
    assert refused.headers["www-authenticate"].startswith("token")
    # olive's other token is not affected.
    assert (await site.call("owner", "GET", "/api/me")).status_code == 200


async def test_a_revoked_token_stops_working_at_once(site: Site) -> None:
    made = await site.as_owner("POST", "/api/users/olive/tokens", json={"note": "laptop"})
    value = made["token"]
    assert (await with_token(site, "GET", "/api/me", value)).status_code == 200
    revoked = await site.call("owner", "DELETE", f"/api/users/olive/tokens/{made['id']}")
    assert revoked.status_code == 204, revoked.text
    refused = await with_token(site, "GET", "/api/me", value)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    listed = await site.as_owner("GET", "/api/users/olive/tokens")
    assert [t["revoked"] for t in listed if t["id"] == made["id"]] == [True]
    # Nobody else revokes olive's tokens: her record is not found for them.
    other = await site.call("other", "DELETE", f"/api/users/olive/tokens/{made['id']}")
    assert other.status_code == 404


async def test_a_disabled_user_neither_uses_a_token_nor_signs_in(site: Site) -> None:
    session = await sign_in(site, "mallory", PASSWORD)
    assert session.status_code == 200
    cookie = session.cookies["offload_session"]
    assert (await site.call("other", "GET", "/api/me")).status_code == 200
    # Only site admins disable users.
    assert (await site.call("owner", "POST", "/api/users/mallory/disable")).status_code == 403
    disabled = await site.call("admin", "POST", "/api/users/mallory/disable")
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled"] is True
    refused = await site.call("other", "GET", "/api/me")
    assert refused.status_code == 401
    assert (await with_cookie(site, "GET", "/api/me", cookie)).status_code == 401
    again = await sign_in(site, "mallory", PASSWORD)
    assert again.status_code == 401
    assert again.json() == {"detail": WRONG}
    enabled = await site.call("admin", "POST", "/api/users/mallory/enable")
    assert enabled.status_code == 200
    assert (await site.call("other", "GET", "/api/me")).status_code == 200


async def test_the_sixth_failed_sign_in_in_a_minute_is_refused_and_audited(site: Site) -> None:
    for _ in range(5):
        failed = await sign_in(site, "olive", "guess " + PASSWORD)
        assert failed.status_code == 401
    limited = await sign_in(site, "olive", PASSWORD)
    assert limited.status_code == 429, limited.text
    assert "too many failed sign-ins" in limited.json()["detail"]
    assert 1 <= int(limited.headers["retry-after"]) <= 61
    assert "set-cookie" not in limited.headers
    audit = await site.call("admin", "GET", "/api/audit", params={"action": "sign-in.failed"})
    assert audit.status_code == 200, audit.text
    entries = audit.json()
    assert len(entries) == 5
    assert {(e["actor"], e["action"], e["address"]) for e in entries} == {
        ("olive", "sign-in.failed", "127.0.0.1")
    }
    # The audit log is for site admins only.
    assert (await site.call("owner", "GET", "/api/audit")).status_code == 403
    # Tokens are not rate-limited by failed passwords.
    assert (await site.call("owner", "GET", "/api/me")).status_code == 200


async def test_a_site_admins_token_needs_the_site_admin_scope(site: Site) -> None:
    narrow = await site.call("admin", "POST", "/api/users/root/tokens", json={"note": "reader"})
    assert narrow.status_code == 201, narrow.text
    assert narrow.json()["scopes"] == ["user:all"]
    value = narrow.json()["token"]
    refused = await with_token(site, "GET", "/api/users", value)
    assert refused.status_code == 403
    assert "only site admins" in refused.json()["detail"]
    me = await with_token(site, "GET", "/api/me", value)
    assert (me.json()["username"], me.json()["siteAdmin"]) == ("root", False)
    # With this token the admin cannot mint a broader one either.
    widened = await with_token(
        site, "POST", "/api/users/root/tokens", value, json={"scopes": ["user:all", "site-admin"]}
    )
    assert widened.status_code == 403
    listed = await site.call("admin", "GET", "/api/users")
    assert listed.status_code == 200
    assert {u["username"] for u in listed.json()} == {"root", "olive", "mallory"}
    broad = await site.call(
        "admin", "POST", "/api/users/root/tokens", json={"scopes": ["user:all", "site-admin"]}
    )
    assert broad.status_code == 201, broad.text
    assert (await with_token(site, "GET", "/api/users", broad.json()["token"])).status_code == 200


async def test_a_plain_user_cannot_make_a_site_admin_token(site: Site) -> None:
    for scopes in (["user:all", "site-admin"], ["site-admin"]):
        refused = await site.call(
            "owner", "POST", "/api/users/olive/tokens", json={"scopes": scopes}
        )
        assert refused.status_code == 403, refused.text
        assert "site-admin scope" in refused.json()["detail"]
    # Not for anyone else's account either, whoever it is.
    for user in ("root", "mallory"):
        other = await site.call("owner", "POST", f"/api/users/{user}/tokens", json={})
        assert other.status_code == 404
    olive = await Users(site.db).require("olive")
    assert [t.scopes for t in await AccessTokens(site.db).list(olive.id)] == [("user:all",)]


async def test_a_tokens_expiry_is_listed_and_its_value_never_is(site: Site) -> None:
    before = datetime.now(UTC)
    made = await site.as_owner(
        "POST", "/api/users/olive/tokens", json={"note": "ci", "expiresIn": 3600}
    )
    value = made["token"]
    assert (await with_token(site, "GET", "/api/me", value)).status_code == 200
    listing = await site.call("owner", "GET", "/api/users/olive/tokens")
    assert listing.status_code == 200
    assert value not in listing.text and value[len("offload_") :] not in listing.text
    (entry,) = [t for t in listing.json() if t["id"] == made["id"]]
    assert "token" not in entry and entry["note"] == "ci"
    expires = datetime.fromisoformat(entry["expiresAt"])
    expected = before + timedelta(hours=1)
    assert expected - timedelta(seconds=5) <= expires <= expected + timedelta(minutes=1)
    assert entry["lastUsedAt"] is not None and entry["revoked"] is False
    # The token made by the test site has no expiry.
    assert [t["expiresAt"] for t in listing.json() if t["id"] != made["id"]] == [None]
    # An expiry in the past, or too short to be useful, is refused.
    for seconds in (0, -60, 59):
        refused = await site.call(
            "owner", "POST", "/api/users/olive/tokens", json={"expiresIn": seconds}
        )
        assert refused.status_code == 422, (seconds, refused.text)


def test_the_limiter_refuses_the_sixth_failure_until_the_window_passes() -> None:
    now = [1000.0]
    limiter = SignInLimiter(limit=5, window=60.0, clock=lambda: now[0])
    keys = ("user:olive", "address:10.0.0.1")
    for _ in range(5):
        assert limiter.retry_after(*keys) == 0
        limiter.failed(*keys)
        now[0] += 1
    # Five failures at 1000..1004; at 1005 the sixth try waits until the first leaves.
    assert limiter.retry_after(*keys) == pytest.approx(55.0)
    now[0] = 1059.9
    assert limiter.retry_after(*keys) > 0
    now[0] = 1060.0
    assert limiter.retry_after(*keys) == 0
    limiter.failed(*keys)
    assert limiter.retry_after(*keys) > 0, "five failures in the window again"
    now[0] = 2000.0
    assert limiter.retry_after(*keys) == 0


def test_the_limiter_counts_an_addresss_failures_across_usernames() -> None:
    now = [0.0]
    limiter = SignInLimiter(clock=lambda: now[0])
    for n in range(5):
        limiter.failed(f"user:user{n}", "address:10.0.0.9")
    # A sixth username from the same address waits; the same username elsewhere does not.
    assert limiter.retry_after("user:user5", "address:10.0.0.9") > 0
    assert limiter.retry_after("user:user5", "address:10.0.0.7") == 0
    assert limiter.retry_after("user:user0", "address:10.0.0.7") == 0
    now[0] = 61.0
    assert limiter.retry_after("user:user5", "address:10.0.0.9") == 0


def test_the_limiter_forgets_the_quietest_keys_beyond_its_bound() -> None:
    now = [0.0]
    limiter = SignInLimiter(limit=1, clock=lambda: now[0], max_keys=3)
    for n in range(4):
        limiter.failed(f"address:10.0.0.{n}")
        now[0] += 1
    assert limiter.retry_after("address:10.0.0.0") == 0
    assert all(limiter.retry_after(f"address:10.0.0.{n}") > 0 for n in (1, 2, 3))
