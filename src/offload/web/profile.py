"""The profile page: the signed-in user's record and their access tokens (create, revoke).

Each user sees and changes only their own tokens, by the API's rules
(`/api/users/{username}/tokens`): a token with the site-admin scope only by a site admin,
another user's token is "not found". A new token's value is shown once, on the page that
answers the form (never in a URL, never again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from offload.identity.principal import Principal, Scope
from offload.identity.tokens import AccessToken, TokenError
from offload.web.pages import Pages
from offload.web.routes import WebServices
from offload.web.viewer import Viewer

# What the expiry field offers, in days; the server takes any whole number up to the maximum.
EXPIRY_DAYS = (7, 30, 90, 365)
DEFAULT_EXPIRY = "30"
MAX_EXPIRY_DAYS = 10 * 365
NOTE_MAX = 256


class FormError(Exception):
    """A token form that cannot be done as filled in; the message says why, the status how."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TokenForm:
    """What the create-token form asks for."""

    note: str
    scopes: list[Scope]
    expires_in: timedelta | None

    @classmethod
    def read(cls, form: dict[str, str], principal: Principal) -> TokenForm:
        """The form's fields, checked; FormError says which one is wrong."""
        note = form.get("note", "").strip()
        if len(note) > NOTE_MAX:
            raise FormError(
                400, f"A note is at most {NOTE_MAX} characters; this one has {len(note)}."
            )
        scopes: list[Scope] = ["user:all"]
        if form.get("site_admin"):
            if not principal.site_admin:
                # The box is offered to site admins only: this form was changed by hand.
                raise FormError(
                    403, "Only a site admin can make a token with the site-admin scope."
                )
            scopes.append("site-admin")
        return cls(note, scopes, expiry(form.get("expires", DEFAULT_EXPIRY)))


def expiry(field: str) -> timedelta | None:
    """The expiry field as a span of time: whole days, or "never"."""
    if field == "never":
        return None
    days = int(field) if field.isascii() and field.isdigit() and len(field) <= 5 else 0
    if not 1 <= days <= MAX_EXPIRY_DAYS:
        raise FormError(
            400,
            f"Expiry {field[:20]!r} is not a number of days from 1 to {MAX_EXPIRY_DAYS}, "
            "nor never.",
        )
    return timedelta(days=days)


def profile_router(pages: Pages, services: WebServices) -> APIRouter:
    """/profile and its token forms (not part of the API's OpenAPI document)."""
    router = APIRouter(include_in_schema=False)
    auth, audit = services.auth, services.audit
    who = Viewer(auth)

    async def profile_page(
        request: Request,
        principal: Principal,
        *,
        status: int = 200,
        done: str = "",
        error: str = "",
        note: str = "",
    ) -> Response:
        user = await auth.users.require(principal.username)
        now = datetime.now(UTC)
        tokens = [t for t in await auth.tokens.list(principal.user_id) if t.revoked_at is None]
        return pages.render(
            request,
            "profile.html",
            principal,
            status=status,
            user=user,
            orgs=sorted(principal.orgs.items()),
            tokens=[(t, t.usable(now)) for t in tokens],
            expiry_days=EXPIRY_DAYS,
            default_expiry=DEFAULT_EXPIRY,
            done=done,
            error=error,
            note=note,
        )

    async def own_token(principal: Principal, token_id: int) -> AccessToken | None:
        # Another user's token is not found rather than forbidden: no telling what exists.
        token = await auth.tokens.get(token_id) if 0 < token_id < 2**63 else None
        if token is None or token.user_id != principal.user_id or token.revoked_at is not None:
            return None
        return token

    @router.get("/profile")
    async def profile(
        request: Request, principal: Principal = Depends(who.require), revoked: int = 0
    ) -> Response:
        done = ""
        token = await auth.tokens.get(revoked) if 0 < revoked < 2**63 else None
        # Said only of the user's own token: the URL is anyone's to write.
        if token is not None and token.user_id == principal.user_id and token.revoked_at:
            named = f" ({token.note})" if token.note else ""
            done = f"Token {token.id}{named} is revoked: it no longer works."
        return await profile_page(request, principal, done=done)

    @router.post("/profile/tokens")
    async def create_token(request: Request) -> Response:
        principal, form = await who.posted(request)
        try:
            asked = TokenForm.read(form, principal)
            token, value = await auth.tokens.create(
                principal.user_id, asked.scopes, note=asked.note, expires_in=asked.expires_in
            )
        except FormError as exc:
            return await profile_page(
                request, principal, status=exc.status, error=str(exc), note=form.get("note", "")
            )
        except TokenError as exc:
            return await profile_page(
                request, principal, status=400, error=str(exc), note=form.get("note", "")
            )
        await audit.by(
            principal,
            request,
            "token.create",
            f"{principal.username} token {token.id}",
            scopes=", ".join(token.scopes),
        )
        # Rendered from the POST itself: a redirect would have to carry the value in a URL.
        return pages.render(
            request, "token_created.html", principal, status=201, token=token, value=value
        )

    @router.post("/profile/tokens/{token_id}/revoke")
    async def revoke_token(request: Request, token_id: int) -> Response:
        principal, _ = await who.posted(request)
        token = await own_token(principal, token_id)
        if token is None or not await auth.tokens.revoke(token.id):
            return pages.error(request, 404, f"You have no token {token_id}.", principal)
        auth.forget(principal.username)
        await audit.by(principal, request, "token.revoke", f"{principal.username} token {token_id}")
        return RedirectResponse(f"/profile?revoked={token_id}", status_code=303)

    return router
