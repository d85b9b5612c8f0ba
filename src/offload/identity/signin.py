"""Password sign-in, shared by the API (`POST /api/session`) and the web interface's form."""

from __future__ import annotations

from fastapi import HTTPException, Request, Response

from offload.identity import passwords
from offload.identity.audit import AuditLog
from offload.identity.ratelimit import SignInLimiter
from offload.identity.sessions import COOKIE, Sessions
from offload.identity.users import User, Users


class PasswordSignIn:
    """Checks a username and password (rate-limited, audited) and starts a session."""

    def __init__(
        self, users: Users, sessions: Sessions, audit: AuditLog, limiter: SignInLimiter
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.audit = audit
        self.limiter = limiter

    async def __call__(self, username: str, password: str, address: str) -> tuple[User, str, str]:
        """The user, the session cookie's value and its CSRF token; 429 while the username or
        the address failed too often lately, 401 for wrong credentials."""
        keys = (f"user:{username.lower()}", f"address:{address}")
        wait = self.limiter.retry_after(*keys)
        if wait > 0:
            raise HTTPException(
                429,
                f"too many failed sign-ins; try again in {wait:.0f} s",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        user = await self.users.get(username)
        ok = await passwords.verify(user.password_hash if user else None, password)
        if user is None or not ok or user.disabled:
            self.limiter.failed(*keys)
            await self.audit.record(
                username, "sign-in.failed", address=address, reason="wrong credentials"
            )
            # One message for all three: which usernames exist is nobody's business.
            raise HTTPException(401, "wrong username or password, or the user is disabled")
        cookie, csrf = await self.sessions.create(user.id, address)
        await self.audit.record(user.username, "sign-in", address=address)
        return user, cookie, csrf

    def set_cookie(self, request: Request, response: Response, cookie: str) -> None:
        """Give the browser its session cookie: HttpOnly, SameSite=Lax, Secure over HTTPS."""
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(self.sessions.ttl.total_seconds()),
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
