"""Who is asking for a page: the signed-in user of a request, and of a posted form."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse

from offload.identity.authenticator import Authenticator
from offload.identity.principal import Principal
from offload.web.forms import MAX_BYTES, read_form


class SignInRequired(Exception):
    """A page was asked for without a session: the browser goes to sign in, then back."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


def sign_in_redirect(exc: SignInRequired) -> RedirectResponse:
    """The redirect to the sign-in page that brings the user back afterwards."""
    return RedirectResponse(f"/sign-in?next={quote(exc.back_to, safe='/')}", status_code=303)


class Viewer:
    """The principal behind a page's request, as the API's authenticator sees it."""

    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth

    async def signed_in(self, request: Request) -> Principal | None:
        """The signed-in user, or None (no session, or one that ended)."""
        try:
            return await self.auth.optional(request)
        except HTTPException as exc:
            if exc.status_code == 401:  # a session that ended, a user since disabled
                return None
            raise

    async def require(self, request: Request) -> Principal:
        """The signed-in user; SignInRequired otherwise (a FastAPI dependency)."""
        principal = await self.signed_in(request)
        if principal is None:
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise SignInRequired(back)
        return principal

    async def posted(
        self, request: Request, max_bytes: int = MAX_BYTES
    ) -> tuple[Principal, dict[str, str]]:
        """The signed-in user behind a form, proven by the form's CSRF token, and its fields."""
        form = await read_form(request, max_bytes)
        try:
            principal = await self.auth.optional(request, csrf=form.get("csrf", ""))
        except HTTPException as exc:
            if exc.status_code == 401:
                raise SignInRequired("/") from exc
            raise
        if principal is None:
            raise SignInRequired("/")
        return principal, form
