"""The users page of site administration (site admins only; others get a 403 page): the list,
creating a user, disabling and enabling, promoting and demoting.

Each does what the API's `/api/users` route does (identity/routes.py), with the same audit
entry: nobody disables or demotes themselves (409), disabling ends the user's sessions, and
every change takes effect at once on this server. A password left empty is generated and
shown once, on the page that answers the form (never in a URL).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from offload.api.inputs import ID_MAX
from offload.identity import passwords
from offload.identity.namespaces import BadName, NameTaken
from offload.identity.principal import Principal
from offload.identity.users import UnknownUser, User
from offload.web.admin import ONLY_ADMINS
from offload.web.pages import Pages
from offload.web.routes import WebServices
from offload.web.viewer import Viewer

USERS_PER_PAGE = 50
CHANGES = ("disable", "enable", "promote", "demote")
# What the page says after each change, of the user it names.
SAID = {
    "disable": "{} is disabled: their sessions and tokens no longer work.",
    "enable": "{} is enabled again: they may sign in.",
    "promote": "{} is a site admin now.",
    "demote": "{} is no longer a site admin.",
    "create": "User {} is created.",
}
TEXT_MAX = 256


@dataclass(frozen=True)
class NewUser:
    """What the create-user form asks for."""

    username: str
    display_name: str
    email: str
    site_admin: bool
    password: str

    @classmethod
    def read(cls, form: dict[str, str]) -> NewUser:
        """The form's fields, trimmed (the password as typed)."""
        return cls(
            username=form.get("username", "").strip()[:TEXT_MAX],
            display_name=form.get("display_name", "").strip(),
            email=form.get("email", "").strip(),
            site_admin=form.get("site_admin") == "on",
            password=form.get("password", ""),
        )

    def check(self) -> NewUser:
        """The same fields, if the database can hold them; ValueError saying which not."""
        if "\x00" in self.display_name or not self.email.isprintable():
            raise ValueError("a display name has no NUL character, an email no control character")
        return self


def holds(user: User, change: str) -> bool:
    """Whether `user` is as `change` leaves them."""
    return {
        "disable": user.disabled,
        "enable": not user.disabled,
        "promote": user.site_admin,
        "demote": not user.site_admin,
        "create": True,
    }[change]


def users_router(pages: Pages, services: WebServices) -> APIRouter:
    """/admin/users, its create form and each user's change forms."""
    router = APIRouter(include_in_schema=False)
    who = Viewer(services.auth)
    auth, audit = services.auth, services.audit
    users = auth.users

    async def users_page(
        request: Request,
        principal: Principal,
        *,
        after: int = 0,
        status: int = 200,
        done: str = "",
        error: str = "",
        asked: NewUser | None = None,
        generated: tuple[str, str] | None = None,
    ) -> Response:
        found = await users.list(after=after, limit=USERS_PER_PAGE + 1)
        shown = found[:USERS_PER_PAGE]
        return pages.render(
            request,
            "admin_users.html",
            principal,
            status=status,
            users=shown,
            more=shown[-1].id if len(found) > USERS_PER_PAGE else None,
            first_page=after == 0,
            done=done,
            error=error,
            asked=asked,
            generated=generated,
        )

    @router.get("/admin/users")
    async def users_list(
        request: Request,
        principal: Principal = Depends(who.require),
        after: int = 0,
        did: str = "",
        user: str = "",
    ) -> Response:
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        done = ""
        named = await users.get(user[:TEXT_MAX]) if did in SAID and user else None
        # Said only when true: the URL is anyone's to write.
        if named is not None and holds(named, did):
            done = SAID[did].format(named.username)
        return await users_page(
            request, principal, after=after if 0 <= after <= ID_MAX else 0, done=done
        )

    @router.post("/admin/users")
    async def create_user(request: Request) -> Response:
        principal, form = await who.posted(request)
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        asked = NewUser.read(form)
        password = asked.password or passwords.generate()
        try:
            asked.check()
            user = await users.create(
                asked.username,
                display_name=asked.display_name,
                email=asked.email,
                site_admin=asked.site_admin,
                password=password,
            )
        except NameTaken as exc:
            return await users_page(
                request, principal, status=409, error=f"Not created: {exc}.", asked=asked
            )
        except (BadName, passwords.WeakPassword, ValueError) as exc:
            return await users_page(
                request, principal, status=400, error=f"Not created: {exc}.", asked=asked
            )
        await audit.by(principal, request, "user.create", user.username, site_admin=user.site_admin)
        if asked.password:
            query = urlencode({"did": "create", "user": user.username})
            return RedirectResponse(f"/admin/users?{query}", status_code=303)
        # Rendered from the POST itself: a redirect would have to carry the password in a URL.
        return await users_page(
            request,
            principal,
            status=201,
            done=SAID["create"].format(user.username),
            generated=(user.username, password),
        )

    @router.post("/admin/users/{username}/{change}")
    async def change_user(request: Request, username: str, change: str) -> Response:
        principal, _ = await who.posted(request)
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        if change not in CHANGES:
            return pages.error(
                request, 404, f"No change {change[:20]!r}; one of {', '.join(CHANGES)}.", principal
            )
        if change in ("disable", "demote") and username == principal.username:
            return pages.error(
                request, 409, f"You cannot {change} yourself; ask another site admin.", principal
            )
        try:
            if change in ("disable", "enable"):
                user = await users.set_disabled(username, change == "disable")
            else:
                user = await users.set_site_admin(username, change == "promote")
        except UnknownUser:
            return pages.error(request, 404, f"No user {username[:TEXT_MAX]!r}.", principal)
        if change == "disable":
            await auth.sessions.end_all(user.id)
        auth.forget(user.username)
        await audit.by(principal, request, f"user.{change}", username)
        query = urlencode({"did": change, "user": user.username})
        return RedirectResponse(f"/admin/users?{query}", status_code=303)

    return router
