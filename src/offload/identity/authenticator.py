"""Who is calling: an access token in `Authorization`, or a signed session cookie."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from fastapi import HTTPException, Request

from offload.db.base import Database
from offload.identity.orgs import Orgs
from offload.identity.principal import Principal
from offload.identity.sessions import COOKIE, CSRF_HEADER, Sessions
from offload.identity.tokens import AccessTokens, digest
from offload.identity.users import Users

# A verified token is trusted this long without reading the database again: the token check
# stays far below a millisecond, and a revoked token or disabled user stops working within it.
CACHE_TTL = 2.0
CACHE_MAX = 10_000
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SCHEMES = ("token", "bearer")


def unauthorized(message: str) -> HTTPException:
    """A 401 that tells the client how to authenticate."""
    return HTTPException(401, message, headers={"WWW-Authenticate": 'token realm="offload"'})


def token_of(request: Request) -> str | None:
    """The access token in the request's Authorization header, if any."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() not in SCHEMES or not value.strip():
        raise unauthorized(
            "the Authorization header must be `token <access token>` or `Bearer <access token>`"
        )
    return value.strip()


def acting_namespace(principal: Principal, given: str, what: str) -> str:
    """The namespace a request acts in: `given`, or the caller's own; 403 when the caller may
    not act there. `what` names what is being submitted (jobs, batch specs)."""
    namespace = given or principal.username
    if not principal.may_act_in(namespace):
        raise HTTPException(
            403,
            f"you may not submit {what} in {namespace}: it is not you or an organization you "
            "belong to",
        )
    return namespace


def client_address(request: Request) -> str:
    """The caller's address as the server saw it."""
    return request.client.host if request.client else ""


class Authenticator:
    """Turns a request into a Principal; 401 when it carries no valid credential."""

    def __init__(
        self,
        db: Database,
        sessions: Sessions,
        *,
        ttl: float = CACHE_TTL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.sessions = sessions
        self.tokens = AccessTokens(db)
        self.users = Users(db)
        self.orgs = Orgs(db)
        self.ttl = ttl
        self.monotonic = monotonic
        self._cache: dict[str, tuple[Principal, float]] = {}

    def forget(self, username: str) -> None:
        """Drop the verified tokens of `username` (one was revoked, or the user changed here);
        other users' stay cached."""
        for key in [k for k, (p, _) in self._cache.items() if p.username == username]:
            del self._cache[key]

    async def check_token(self, value: str) -> Principal:
        """The principal of an access token; 401 if it is unknown, expired, revoked or its
        user is disabled."""
        key = digest(value)
        cached = self._cache.get(key)
        if cached is not None and cached[1] > self.monotonic():
            return cached[0]
        found = await self.tokens.lookup(value)
        if found is None:
            self._cache.pop(key, None)
            raise unauthorized("invalid access token (unknown, expired or revoked)")
        token, row = found
        if row["disabled_at"] is not None:
            raise unauthorized(f"user {row['username']} is disabled")
        principal = Principal(
            user_id=token.user_id,
            username=str(row["username"]),
            site_admin=bool(row["site_admin"]) and "site-admin" in token.scopes,
            orgs=await self.orgs.memberships(token.user_id),
        )
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (principal, self.monotonic() + self.ttl)
        return principal

    async def _session(self, request: Request, cookie: str, csrf_given: str | None) -> Principal:
        found = await self.sessions.lookup(cookie)
        if found is None:
            raise unauthorized("your session has ended; sign in again")
        user_id, csrf = found
        rows = await self.db.fetch(
            "SELECT username, site_admin, disabled_at FROM users WHERE id = :u", {"u": user_id}
        )
        if not rows or rows[0]["disabled_at"] is not None:
            raise unauthorized("this user is disabled")
        if csrf_given is None:
            csrf_given = request.headers.get(CSRF_HEADER)
        if request.method not in SAFE_METHODS and not (
            csrf_given and hmac.compare_digest(csrf_given, csrf)
        ):
            # A cookie is sent by the browser on any site's behalf: writes need proof that
            # the page making them is ours.
            raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header")
        return Principal(
            user_id=user_id,
            username=str(rows[0]["username"]),
            site_admin=bool(rows[0]["site_admin"]),
            orgs=await self.orgs.memberships(user_id),
            via="session",
            csrf_token=csrf,
        )

    async def optional(self, request: Request, *, csrf: str | None = None) -> Principal | None:
        """The caller's principal, or None when the request carries no credential. A session's
        write proves itself with `csrf` (a web form's field) or else the CSRF header."""
        value = token_of(request)
        if value is not None:
            return await self.check_token(value)
        cookie = request.cookies.get(COOKIE)
        if cookie:
            return await self._session(request, cookie, csrf)
        return None

    async def require(self, request: Request) -> Principal:
        """The caller's principal; 401 without a valid credential (a FastAPI dependency)."""
        principal = await self.optional(request)
        if principal is None:
            raise unauthorized(
                "sign in first: send `Authorization: token <access token>` "
                "(`offload login` stores one for the CLI)"
            )
        return principal

    async def require_site_admin(self, request: Request) -> Principal:
        """A site admin's principal; 403 for anyone else (a FastAPI dependency)."""
        principal = await self.require(request)
        if not principal.site_admin:
            raise HTTPException(403, "only site admins may do this")
        return principal
