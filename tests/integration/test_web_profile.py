"""The profile page over a served offload, as a browser without JavaScript sees it: the user's
record and their own access tokens only; creating a token (CSRF, shown once, works against the
API, site-admin scope for site admins only) and revoking it (CSRF, 401 afterwards, another
user's token not found), both audited. (tests/browser/test_browser_profile.py drives it in
Chromium.)"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from access_site import Site, served
from web_client import csrf_of, signed_in

from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.identity.audit import AuditLog
from offload.identity.tokens import AccessTokens, digest
from offload.identity.users import Users


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


def shown_token(page: str) -> str:
    """The new token's value on the page that answers the create form."""
    found = re.search(r'id="token-value"[^>]* value="([^"]+)"', page)
    assert found, "the page shows no token"
    return html.unescape(found.group(1))


async def tokens_of(site: Site, username: str) -> list[tuple[int, str, bool]]:
    """(id, note, revoked) of each of `username`'s tokens, as the database holds them."""
    user = await Users(site.db).require(username)
    return [
        (t.id, t.note, t.revoked_at is not None) for t in await AccessTokens(site.db).list(user.id)
    ]


async def create(client: httpx.AsyncClient, note: str, **fields: str) -> tuple[httpx.Response, str]:
    """Post the profile's create-token form; the answer and (when made) the token's value."""
    profile = await client.get("/profile")
    assert profile.status_code == 200, profile.text
    answer = await client.post(
        "/profile/tokens",
        data={"csrf": csrf_of(profile.text), "note": note, "expires": "30", **fields},
    )
    return answer, shown_token(answer.text) if answer.status_code == 201 else ""


async def me(site: Site, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=site.url, timeout=60) as client:
        return await client.get("/api/me", headers={"Authorization": f"token {token}"})


async def test_the_profile_shows_the_users_record_and_only_their_own_tokens(site: Site) -> None:
    async with signed_in(site, "mallory") as mallory:
        made, _ = await create(mallory, "mallory laptop")
        assert made.status_code == 201, made.text
    async with signed_in(site, "olive") as olive:
        made, value = await create(olive, "olive ci")
        assert made.status_code == 201, made.text
        page = await olive.get("/profile")
        assert page.status_code == 200
        assert "olive ci" in page.text and "mallory laptop" not in page.text
        # Her record: name, not a site admin, admin of acme.
        assert re.search(r"<dt>Username</dt><dd>olive</dd>", page.text)
        assert re.search(r"<dt>Site admin</dt><dd>no</dd>", page.text)
        assert re.search(
            r"<a href=\"/orgs/acme\">acme</a> <span class=\"badge\">admin</span>", page.text
        )
        # The token's value and its hash are never on the page again.
        assert value not in page.text and digest(value) not in page.text
        ids = [token_id for token_id, _, _ in await tokens_of(site, "olive")]
        rows = re.findall(r'<th scope="row">(\d+)</th>', page.text)
        assert sorted(map(int, rows)) == sorted(ids)
        # The header's name leads here.
        assert 'href="/profile"' in (await olive.get("/")).text


async def test_a_token_is_made_with_csrf_shown_once_works_and_is_revoked_with_csrf(
    site: Site,
) -> None:
    async with signed_in(site, "olive") as olive:
        before = await tokens_of(site, "olive")
        for forged in ({"note": "forged"}, {"csrf": "forged", "note": "forged"}):
            answer = await olive.post("/profile/tokens", data=forged)
            assert answer.status_code == 403 and "CSRF" in answer.text
        assert await tokens_of(site, "olive") == before, "a forged form made a token"

        made, value = await create(olive, "deploy", expires="never")
        assert made.status_code == 201, made.text
        assert "it will not be shown again" in made.text
        assert made.headers["cache-control"] == "no-store"
        assert value.startswith("offload_")
        who = await me(site, value)
        assert who.status_code == 200 and who.json()["username"] == "olive"
        assert who.json()["siteAdmin"] is False

        (token_id, note, revoked), *_ = await tokens_of(site, "olive")
        assert (note, revoked) == ("deploy", False)
        profile = await olive.get("/profile")
        assert value not in profile.text and "deploy" in profile.text
        revoke = f"/profile/tokens/{token_id}/revoke"
        assert f'action="{revoke}"' in profile.text

        forged_revoke = await olive.post(revoke, data={"csrf": "forged"})
        assert forged_revoke.status_code == 403
        assert (await me(site, value)).status_code == 200, "a forged form revoked the token"

        done = await olive.post(revoke, data={"csrf": csrf_of(profile.text)})
        assert (
            done.status_code == 303 and done.headers["location"] == f"/profile?revoked={token_id}"
        )
        after = await olive.get(done.headers["location"])
        assert f"Token {token_id} (deploy) is revoked" in after.text
        assert f'action="{revoke}"' not in after.text
        assert (await me(site, value)).status_code == 401
        again = await olive.post(revoke, data={"csrf": csrf_of(profile.text)})
        assert again.status_code == 404

    actions = [(e["action"], e["target"]) for e in await AuditLog(site.db).list(actor="olive")]
    assert ("token.create", f"olive token {token_id}") in actions
    assert ("token.revoke", f"olive token {token_id}") in actions


async def test_only_a_site_admin_makes_a_site_admin_token(site: Site) -> None:
    async with signed_in(site, "mallory") as mallory:
        page = await mallory.get("/profile")
        assert 'name="site_admin"' not in page.text
        before = await tokens_of(site, "mallory")
        # The box is not offered: a form changed by hand sends it anyway.
        tampered, _ = await create(mallory, "escalate", site_admin="on")
        assert tampered.status_code == 403
        assert "Only a site admin can make a token with the site-admin scope." in tampered.text
        assert await tokens_of(site, "mallory") == before
    async with signed_in(site, "root") as root:
        assert 'name="site_admin"' in (await root.get("/profile")).text
        made, value = await create(root, "admin tool", site_admin="on")
        assert made.status_code == 201 and "user:all, site-admin" in made.text
        async with httpx.AsyncClient(base_url=site.url, timeout=60) as client:
            users = await client.get("/api/users", headers={"Authorization": f"token {value}"})
        assert users.status_code == 200 and "olive" in users.text
        plain, value = await create(root, "plain tool")
        assert plain.status_code == 201
        assert (await me(site, value)).json()["siteAdmin"] is False


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"expires": "0"}, "is not a number of days from 1 to 3650"),
        ({"expires": "tomorrow"}, "is not a number of days from 1 to 3650"),
        ({"expires": "3651"}, "is not a number of days from 1 to 3650"),
        ({"note": "x" * 257}, "A note is at most 256 characters; this one has 257."),
    ],
)
async def test_a_token_form_filled_in_wrong_says_why_and_makes_nothing(
    site: Site, fields: dict[str, str], message: str
) -> None:
    async with signed_in(site, "olive") as olive:
        before = await tokens_of(site, "olive")
        given = dict(fields)  # the parameters are shared by both databases' runs
        answer, _ = await create(olive, given.pop("note", "wrong"), **given)
        assert answer.status_code == 400 and message in answer.text
        assert 'role="alert"' in answer.text and 'action="/profile/tokens"' in answer.text
        assert await tokens_of(site, "olive") == before


async def test_another_users_token_cannot_be_revoked(site: Site) -> None:
    olives = site.tokens["owner"]
    (token_id, _, _), *_ = await tokens_of(site, "olive")
    async with signed_in(site, "mallory") as mallory:
        csrf = csrf_of((await mallory.get("/profile")).text)
        answer = await mallory.post(f"/profile/tokens/{token_id}/revoke", data={"csrf": csrf})
        assert answer.status_code == 404 and f"You have no token {token_id}." in answer.text
        for unknown in (0, 99999, 2**63):
            missing = await mallory.post(f"/profile/tokens/{unknown}/revoke", data={"csrf": csrf})
            assert missing.status_code == 404
        # Nor does the notice of a revoked token speak of another user's.
        page = await mallory.get(f"/profile?revoked={token_id}")
        assert page.status_code == 200 and "is revoked" not in page.text
    assert (await me(site, olives)).status_code == 200
    assert await tokens_of(site, "olive") == [(token_id, "", False)]
