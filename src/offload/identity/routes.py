"""HTTP routes of identity: sign-in, the caller, users, their tokens, organizations, audit.

Who may call each: `POST /api/session` anyone (rate-limited); `/api/me` and sign-out any
signed-in user; a user's own record and tokens that user or a site admin (others get 404);
creating, disabling and promoting users site admins; an organization's members its members and
site admins (others 404), changing them its admins and site admins; the audit log site admins.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from offload.api.errors import BODY, documented
from offload.api.inputs import AfterQuery, BeforeQuery, IdPath, NamePath, NameQuery, PlainName, Text
from offload.identity import passwords
from offload.identity.audit import AuditLog
from offload.identity.authenticator import Authenticator, client_address
from offload.identity.namespaces import BadName, NameTaken
from offload.identity.orgs import Orgs, Role, UnknownOrg
from offload.identity.principal import Principal, Scope
from offload.identity.ratelimit import SignInLimiter
from offload.identity.sessions import COOKIE, Sessions
from offload.identity.signin import PasswordSignIn
from offload.identity.tokens import AccessTokens, TokenError
from offload.identity.users import UnknownUser, User, Users

LIMIT_MAX = 1000
# What disabling, enabling, promoting and demoting a user may answer (409: doing it to oneself).
CHANGE_USER = documented(403, 404, 409, 422)
Limit = Annotated[int, Query(ge=1, le=LIMIT_MAX)]


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SignIn(_Body):
    """The body of POST /api/session."""

    username: PlainName = Field(max_length=64)
    password: str = Field(max_length=passwords.MAX_LENGTH)


class CreateUser(_Body):
    """The body of POST /api/users."""

    username: PlainName = Field(max_length=64)
    display_name: Text = Field("", max_length=256)
    email: PlainName = Field("", max_length=256)
    site_admin: bool = False
    password: str | None = Field(None, max_length=passwords.MAX_LENGTH)


class SetPassword(_Body):
    """The body of PUT /api/users/{username}/password."""

    password: str = Field(max_length=passwords.MAX_LENGTH)


def _user_scope() -> list[Scope]:
    return ["user:all"]


class CreateToken(_Body):
    """The body of POST /api/users/{username}/tokens."""

    scopes: list[Scope] = Field(default_factory=_user_scope, max_length=2)
    note: Text = Field("", max_length=256)
    # Seconds from now; none: the token lasts until revoked.
    expires_in: int | None = Field(None, ge=60, le=10 * 365 * 86400)


class CreateOrg(_Body):
    """The body of POST /api/orgs."""

    name: PlainName = Field(max_length=64)
    display_name: Text = Field("", max_length=256)


class SetMember(_Body):
    """The body of PUT /api/orgs/{name}/members/{username}."""

    role: Role = "member"


def identity_router(
    auth: Authenticator, sessions: Sessions, audit: AuditLog, limiter: SignInLimiter
) -> APIRouter:
    """/api/session, /api/me, /api/users, /api/orgs, /api/audit."""
    router = APIRouter(prefix="/api", responses=documented(401))
    users: Users = auth.users
    tokens: AccessTokens = auth.tokens
    orgs: Orgs = auth.orgs
    password_sign_in = PasswordSignIn(users, sessions, audit, limiter)

    async def visible_user(principal: Principal, username: str) -> User:
        # Another user's record is not found rather than forbidden: no telling who exists.
        user = await users.get(username)
        if user is None or not (principal.site_admin or principal.username == username):
            raise HTTPException(404, f"no user {username!r}")
        return user

    @router.post("/session", responses=documented(*BODY, 429))
    async def sign_in(body: SignIn, request: Request, response: Response) -> dict[str, Any]:
        user, cookie, csrf = await password_sign_in(
            body.username, body.password, client_address(request)
        )
        password_sign_in.set_cookie(request, response, cookie)
        return {"username": user.username, "csrfToken": csrf}

    @router.delete("/session", status_code=204, responses=documented(403))
    async def sign_out(
        request: Request, response: Response, principal: Principal = Depends(auth.require)
    ) -> None:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            await sessions.end(cookie)
        response.delete_cookie(COOKIE, path="/")
        await audit.by(principal, request, "sign-out")

    @router.get("/me")
    async def me(principal: Principal = Depends(auth.require)) -> dict[str, Any]:
        user = await users.require(principal.username)
        return {
            **user.to_json(),
            # What this credential may do: a token without the site-admin scope may not.
            "siteAdmin": principal.site_admin,
            "organizations": [{"name": n, "role": r} for n, r in sorted(principal.orgs.items())],
            "csrfToken": principal.csrf_token or None,
        }

    @router.get("/users", responses=documented(403, 422))
    async def list_users(
        _: Principal = Depends(auth.require_site_admin), after: AfterQuery = 0, limit: Limit = 100
    ) -> list[dict[str, Any]]:
        return [u.to_json() for u in await users.list(after=after, limit=limit)]

    @router.post("/users", status_code=201, responses=documented(*BODY, 403, 409))
    async def create_user(
        body: CreateUser, request: Request, principal: Principal = Depends(auth.require_site_admin)
    ) -> dict[str, Any]:
        try:
            user = await users.create(
                body.username,
                display_name=body.display_name,
                email=body.email,
                site_admin=body.site_admin,
                password=body.password,
            )
        except (BadName, passwords.WeakPassword, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc
        except NameTaken as exc:
            raise HTTPException(409, str(exc)) from exc
        await audit.by(principal, request, "user.create", user.username, site_admin=user.site_admin)
        return user.to_json()

    @router.get("/users/{username}", responses=documented(404, 422))
    async def show_user(
        username: NamePath, principal: Principal = Depends(auth.require)
    ) -> dict[str, Any]:
        return (await visible_user(principal, username)).to_json()

    async def admin_change(
        principal: Principal, request: Request, username: str, action: str
    ) -> dict[str, Any]:
        if action in ("disable", "demote") and username == principal.username:
            raise HTTPException(409, f"you cannot {action} yourself; ask another site admin")
        try:
            if action in ("disable", "enable"):
                user = await users.set_disabled(username, action == "disable")
            else:
                user = await users.set_site_admin(username, action == "promote")
        except UnknownUser as exc:
            raise HTTPException(404, str(exc)) from exc
        if action == "disable":
            await sessions.end_all(user.id)
        auth.forget(user.username)
        await audit.by(principal, request, f"user.{action}", username)
        return user.to_json()

    @router.post("/users/{username}/disable", responses=CHANGE_USER)
    async def disable(
        username: NamePath,
        request: Request,
        principal: Principal = Depends(auth.require_site_admin),
    ) -> dict[str, Any]:
        return await admin_change(principal, request, username, "disable")

    @router.post("/users/{username}/enable", responses=CHANGE_USER)
    async def enable(
        username: NamePath,
        request: Request,
        principal: Principal = Depends(auth.require_site_admin),
    ) -> dict[str, Any]:
        return await admin_change(principal, request, username, "enable")

    @router.post("/users/{username}/promote", responses=CHANGE_USER)
    async def promote(
        username: NamePath,
        request: Request,
        principal: Principal = Depends(auth.require_site_admin),
    ) -> dict[str, Any]:
        return await admin_change(principal, request, username, "promote")

    @router.post("/users/{username}/demote", responses=CHANGE_USER)
    async def demote(
        username: NamePath,
        request: Request,
        principal: Principal = Depends(auth.require_site_admin),
    ) -> dict[str, Any]:
        return await admin_change(principal, request, username, "demote")

    @router.put(
        "/users/{username}/password", status_code=204, responses=documented(*BODY, 403, 404)
    )
    async def set_password(
        username: NamePath,
        body: SetPassword,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> None:
        user = await visible_user(principal, username)
        try:
            await users.set_password(user.username, body.password)
        except passwords.WeakPassword as exc:
            raise HTTPException(400, str(exc)) from exc
        await sessions.end_all(user.id)
        await audit.by(principal, request, "user.password", username)

    @router.get("/users/{username}/tokens", responses=documented(404, 422))
    async def list_tokens(
        username: NamePath, principal: Principal = Depends(auth.require)
    ) -> list[dict[str, Any]]:
        user = await visible_user(principal, username)
        return [t.to_json() for t in await tokens.list(user.id)]

    @router.post("/users/{username}/tokens", status_code=201, responses=documented(*BODY, 403, 404))
    async def create_token(
        username: NamePath,
        body: CreateToken,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> dict[str, Any]:
        user = await visible_user(principal, username)
        if "site-admin" in body.scopes and not (user.site_admin and principal.site_admin):
            raise HTTPException(
                403, "only a site admin, acting as one, can make a token with the site-admin scope"
            )
        expires = timedelta(seconds=body.expires_in) if body.expires_in else None
        try:
            token, value = await tokens.create(
                user.id, body.scopes, note=body.note, expires_in=expires
            )
        except TokenError as exc:
            raise HTTPException(400, str(exc)) from exc
        await audit.by(
            principal,
            request,
            "token.create",
            f"{username} token {token.id}",
            scopes=", ".join(token.scopes),
        )
        return {**token.to_json(), "token": value}

    @router.delete(
        "/users/{username}/tokens/{token_id}",
        status_code=204,
        responses=documented(403, 404, 422),
    )
    async def revoke_token(
        username: NamePath,
        token_id: IdPath,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> None:
        user = await visible_user(principal, username)
        token = await tokens.get(token_id)
        if token is None or token.user_id != user.id:
            raise HTTPException(404, f"{username} has no token {token_id}")
        await tokens.revoke(token_id)
        auth.forget(user.username)
        await audit.by(principal, request, "token.revoke", f"{username} token {token_id}")

    @router.get("/orgs")
    async def list_orgs(principal: Principal = Depends(auth.require)) -> list[dict[str, Any]]:
        return await orgs.overview(names=None if principal.site_admin else list(principal.orgs))

    @router.post("/orgs", status_code=201, responses=documented(*BODY, 403, 409))
    async def create_org(
        body: CreateOrg, request: Request, principal: Principal = Depends(auth.require_site_admin)
    ) -> dict[str, Any]:
        try:
            await orgs.create(body.name, display_name=body.display_name)
        except (BadName, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc
        except NameTaken as exc:
            raise HTTPException(409, str(exc)) from exc
        await audit.by(principal, request, "org.create", body.name)
        return {"name": body.name, "displayName": body.display_name, "members": 0}

    def visible_org(principal: Principal, name: str) -> None:
        if not principal.may_act_in(name):
            raise HTTPException(404, f"no organization {name!r}")

    @router.get("/orgs/{name}/members", responses=documented(404, 422))
    async def members(
        name: NamePath, principal: Principal = Depends(auth.require)
    ) -> list[dict[str, Any]]:
        visible_org(principal, name)
        try:
            return [m.to_json() for m in await orgs.members(name)]
        except UnknownOrg as exc:
            raise HTTPException(404, str(exc)) from exc

    async def change_member(
        principal: Principal, request: Request, name: str, username: str, role: Role | None
    ) -> None:
        visible_org(principal, name)
        if not principal.may_admin_org(name):
            raise HTTPException(403, f"only admins of {name} and site admins manage its members")
        try:
            if role is not None:
                await orgs.set_member(name, username, role)
            elif not await orgs.remove_member(name, username):
                raise HTTPException(404, f"{username} is not a member of {name}")
        except (UnknownOrg, UnknownUser) as exc:
            raise HTTPException(404, str(exc)) from exc
        auth.forget(username)
        await audit.by(
            principal,
            request,
            "org.member.set" if role else "org.member.remove",
            f"{name}/{username}",
            role=role or "",
        )

    @router.put(
        "/orgs/{name}/members/{username}",
        status_code=204,
        responses=documented(*BODY, 403, 404),
    )
    async def set_member(
        name: NamePath,
        username: NamePath,
        body: SetMember,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> None:
        await change_member(principal, request, name, username, body.role)

    @router.delete(
        "/orgs/{name}/members/{username}", status_code=204, responses=documented(403, 404, 422)
    )
    async def remove_member(
        name: NamePath,
        username: NamePath,
        request: Request,
        principal: Principal = Depends(auth.require),
    ) -> None:
        await change_member(principal, request, name, username, None)

    @router.get("/audit", responses=documented(403, 422))
    async def audit_log(
        _: Principal = Depends(auth.require_site_admin),
        before: BeforeQuery = None,
        limit: Limit = 100,
        actor: NameQuery = None,
        action: NameQuery = None,
    ) -> list[dict[str, Any]]:
        return await audit.list(before=before, limit=limit, actor=actor, action=action)

    return router
