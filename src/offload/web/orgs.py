"""Organizations: the site admins' list and create form (`/admin/orgs`), and each
organization's page (`/orgs/{org}`) with its members.

As the API's `/api/orgs` (identity/routes.py): creating one is for site admins (others 403);
an organization's page is for its members and site admins (others "not found"); adding a
member, changing a role and removing a member for its admins and site admins (members 403),
with the same audit entries, taking effect at once on this server.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from offload.identity.namespaces import BadName, NameTaken
from offload.identity.orgs import ROLES, Role, UnknownOrg
from offload.identity.principal import Principal
from offload.identity.users import UnknownUser
from offload.web.admin import ONLY_ADMINS
from offload.web.pages import Pages
from offload.web.routes import WebServices
from offload.web.viewer import Viewer

NAME_MAX = 64
TEXT_MAX = 256


def orgs_router(pages: Pages, services: WebServices) -> APIRouter:
    """/admin/orgs with its create form; /orgs/{org} with its member forms."""
    router = APIRouter(include_in_schema=False)
    who = Viewer(services.auth)
    auth, audit = services.auth, services.audit
    orgs = auth.orgs

    async def orgs_page(
        request: Request,
        principal: Principal,
        *,
        status: int = 200,
        error: str = "",
        form: dict[str, str] | None = None,
    ) -> Response:
        return pages.render(
            request,
            "admin_orgs.html",
            principal,
            status=status,
            orgs=await orgs.overview(),
            error=error,
            form=form or {},
        )

    @router.get("/admin/orgs")
    async def orgs_list(request: Request, principal: Principal = Depends(who.require)) -> Response:
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        return await orgs_page(request, principal)

    @router.post("/admin/orgs")
    async def create_org(request: Request) -> Response:
        principal, form = await who.posted(request)
        if not principal.site_admin:
            return pages.error(request, 403, ONLY_ADMINS, principal)
        name = form.get("name", "").strip()[:TEXT_MAX]
        display_name = form.get("display_name", "").strip()
        try:
            if "\x00" in display_name:
                raise ValueError("a display name has no NUL character")
            await orgs.create(name, display_name=display_name)
        except NameTaken as exc:
            return await orgs_page(
                request, principal, status=409, error=f"Not created: {exc}.", form=form
            )
        except (BadName, ValueError) as exc:
            return await orgs_page(
                request, principal, status=400, error=f"Not created: {exc}.", form=form
            )
        await audit.by(principal, request, "org.create", name)
        return RedirectResponse(f"/orgs/{name}?did=create", status_code=303)

    async def org_page(
        request: Request,
        principal: Principal,
        org: str,
        *,
        status: int = 200,
        done: str = "",
        error: str = "",
        form: dict[str, str] | None = None,
    ) -> Response:
        try:
            members = await orgs.members(org)
        except UnknownOrg:
            return pages.error(request, 404, f"No organization {org[:NAME_MAX]!r}.", principal)
        return pages.render(
            request,
            "org.html",
            principal,
            status=status,
            org=org,
            members=members,
            manage=principal.may_admin_org(org),
            roles=ROLES,
            done=done,
            error=error,
            form=form or {},
        )

    def said(did: str, member: str, role: str | None) -> str:
        """What the page says after a form did `did` to `member` (only if it is so)."""
        if did == "create":
            return "The organization is created. Add its first members below."
        if did == "set" and role is not None:
            return f"{member} is {'an' if role == 'admin' else 'a'} {role} of the organization."
        if did == "remove" and member and role is None:
            return f"{member} is no longer a member of the organization."
        return ""

    @router.get("/orgs/{org}")
    async def org_detail(
        request: Request,
        org: str,
        principal: Principal = Depends(who.require),
        did: str = "",
        member: str = "",
    ) -> Response:
        # Another organization is not found rather than forbidden: no telling what exists.
        if not principal.may_act_in(org) or len(org) > NAME_MAX:
            return pages.error(request, 404, f"No organization {org[:NAME_MAX]!r}.", principal)
        try:
            roles = {m.username: m.role for m in await orgs.members(org)}
        except UnknownOrg:
            return pages.error(request, 404, f"No organization {org!r}.", principal)
        done = said(did, member[:TEXT_MAX], roles.get(member))
        return await org_page(request, principal, org, done=done)

    async def change_member(
        request: Request, org: str, username: str | None, *, remove: bool
    ) -> Response:
        """Remove `username` from `org`, or add the form's user with the form's role."""
        principal, form = await who.posted(request)
        if not principal.may_act_in(org) or len(org) > NAME_MAX:
            return pages.error(request, 404, f"No organization {org[:NAME_MAX]!r}.", principal)
        if not principal.may_admin_org(org):
            return pages.error(
                request, 403, f"Only admins of {org} and site admins manage its members.", principal
            )
        member = username or form.get("username", "").strip()[:TEXT_MAX]
        role: Role | None = None
        if not remove:
            if form.get("role") not in ROLES:
                error = f"A role is one of {', '.join(ROLES)}."
                return await org_page(request, principal, org, status=400, error=error, form=form)
            role = "admin" if form.get("role") == "admin" else "member"
        try:
            if role is not None:
                await orgs.set_member(org, member, role)
            elif not await orgs.remove_member(org, member):
                error = f"{member} is not a member of {org}."
                return await org_page(request, principal, org, status=404, error=error)
        except UnknownOrg:
            return pages.error(request, 404, f"No organization {org!r}.", principal)
        except UnknownUser:
            error = f"No user {member!r}: a site admin creates users first."
            return await org_page(request, principal, org, status=404, error=error, form=form)
        auth.forget(member)
        await audit.by(
            principal,
            request,
            "org.member.set" if role else "org.member.remove",
            f"{org}/{member}",
            role=role or "",
        )
        query = urlencode({"did": "set" if role else "remove", "member": member})
        return RedirectResponse(f"/orgs/{org}?{query}", status_code=303)

    @router.post("/orgs/{org}/members")
    async def set_member(request: Request, org: str) -> Response:
        return await change_member(request, org, None, remove=False)

    @router.post("/orgs/{org}/members/{username}/remove")
    async def remove_member(request: Request, org: str, username: str) -> Response:
        return await change_member(request, org, username, remove=True)

    return router
