"""The secrets pages: a namespace's secrets by name (never a value), setting and deleting one,
and each secret's access log (which job read it, when).

Same rules as the API's `/api/secrets` (secrets/routes.py): the names of `global` secrets any
signed-in user; a user's that user and site admins; an organization's its members and site
admins; another namespace is "not found". Setting, deleting and reading the access log:
global ones site admins, an organization's its admins and site admins, a user's that user
and site admins; others see the names and get 403 for the rest. A value travels only in the
body of the form that sets it: never in a URL, never back into a page.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from offload.batches.queue import NAME as BATCH_QUEUE
from offload.identity.namespaces import resolve
from offload.identity.principal import Principal
from offload.secrets.store import GLOBAL, NAME_MAX, NAMESPACE_MAX, SecretAccess, check_name
from offload.web.pages import Pages
from offload.web.routes import WebServices
from offload.web.viewer import Viewer

# How URLs and forms name the namespace of the site's own secrets, as the API does.
GLOBAL_NAME = "global"
ACCESSES_PER_PAGE = 50


class Refused(Exception):
    """A namespace the viewer may not see (404) or not change (403); the message says which."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Place:
    """A namespace of secrets as the pages name it (`global` for the site's own), and what
    the viewer may do there."""

    name: str
    store: str
    changeable: bool
    # Why the viewer may not change it (empty when they may).
    why_not: str

    @property
    def label(self) -> str:
        """How the page speaks of it."""
        return "the global namespace" if self.store == GLOBAL else f"namespace {self.name}"


@dataclass(frozen=True)
class AccessRow:
    """One use of a secret, with a link to the job's page where it has one."""

    access: SecretAccess
    job: str
    href: str | None


async def place_of(services: WebServices, principal: Principal, namespace: str) -> Place:
    """The viewer's view of `namespace`; Refused(404) when they may not see it."""
    if namespace == GLOBAL_NAME:
        why = "" if principal.site_admin else "Only site admins set and delete global secrets."
        return Place(GLOBAL_NAME, GLOBAL, principal.site_admin, why)
    missing = Refused(404, f"No user or organization {namespace[:NAMESPACE_MAX]!r} of yours.")
    if not namespace or len(namespace) > NAMESPACE_MAX or not principal.may_act_in(namespace):
        raise missing
    mine = namespace == principal.username or namespace in principal.orgs
    if not mine and await resolve(services.secrets.db, namespace) is None:
        raise missing
    if namespace in principal.orgs and not principal.may_admin_org(namespace):
        why = f"Only admins of organization {namespace} set, delete and audit its secrets."
        return Place(namespace, namespace, False, why)
    return Place(namespace, namespace, True, "")


def changeable(place: Place) -> Place:
    """`place` if the viewer may change its secrets; Refused(403) saying who may otherwise."""
    if not place.changeable:
        raise Refused(403, place.why_not)
    return place


def secret_name(name: str) -> str:
    """`name` if it can be a secret's; Refused(400) saying why otherwise."""
    try:
        return check_name(name)
    except ValueError as exc:
        raise Refused(400, f"The {exc}.") from exc


def listing(namespace: str, **said: str) -> str:
    """The URL of a namespace's secrets page, with what it should say."""
    return "/secrets?" + urlencode({"namespace": namespace, **said})


def secret_pages_router(pages: Pages, services: WebServices) -> APIRouter:
    """/secrets and a secret's access log page, with the set and delete forms."""
    router = APIRouter(include_in_schema=False)
    secrets, audit = services.secrets, services.audit
    who = Viewer(services.auth)

    def choices(principal: Principal) -> list[str]:
        return [*principal.namespaces(), GLOBAL_NAME]

    async def listing_page(
        request: Request,
        principal: Principal,
        place: Place,
        *,
        status: int = 200,
        done: str = "",
        error: str = "",
        name: str = "",
    ) -> Response:
        return pages.render(
            request,
            "secrets.html",
            principal,
            status=status,
            place=place,
            namespaces=choices(principal),
            secrets=await secrets.names(place.store),
            done=done,
            error=error,
            name=name,
        )

    @router.get("/secrets")
    async def secrets_page(
        request: Request,
        principal: Principal = Depends(who.require),
        namespace: str = "",
        did: str = "",
        secret: str = "",
    ) -> Response:
        try:
            place = await place_of(services, principal, namespace or principal.username)
        except Refused as exc:
            return pages.error(request, exc.status, str(exc), principal)
        done, name = "", secret[:NAME_MAX]
        # Said only when true: the URL is anyone's to write.
        found = await secrets.info(place.store, name) if name else None
        if did == "set" and found is not None:
            done = f"Secret {name} is set in {place.label}."
        elif did == "delete" and name and found is None:
            done = f"Secret {name} is deleted from {place.label}."
        return await listing_page(request, principal, place, done=done)

    @router.post("/secrets")
    async def set_secret(request: Request) -> Response:
        principal, form = await who.posted(request)
        name = form.get("name", "").strip()
        try:
            place = await place_of(services, principal, form.get("namespace", ""))
        except Refused as exc:
            return pages.error(request, exc.status, str(exc), principal)
        try:
            changeable(place)
            await secrets.set(place.store, secret_name(name), form.get("value", ""))
        except Refused as exc:
            return await listing_page(
                request, principal, place, status=exc.status, error=str(exc), name=name[:NAME_MAX]
            )
        except ValueError as exc:  # the value: empty, too long, a NUL byte
            return await listing_page(
                request, principal, place, status=400, error=f"The {exc}.", name=name
            )
        await audit.by(principal, request, "secret.set", f"{place.name}/{name}")
        return RedirectResponse(listing(place.name, did="set", secret=name), status_code=303)

    @router.post("/secrets/{namespace}/{secret}/delete")
    async def delete_secret(request: Request, namespace: str, secret: str) -> Response:
        principal, _ = await who.posted(request)
        try:
            place = changeable(await place_of(services, principal, namespace))
            if not await secrets.delete(place.store, secret_name(secret)):
                raise Refused(404, f"No secret {secret} in {place.label}.")
        except Refused as exc:
            return pages.error(request, exc.status, str(exc), principal)
        await audit.by(principal, request, "secret.delete", f"{place.name}/{secret}")
        return RedirectResponse(listing(place.name, did="delete", secret=secret), status_code=303)

    @router.get("/secrets/{namespace}/{secret}")
    async def secret_page(
        request: Request,
        namespace: str,
        secret: str,
        principal: Principal = Depends(who.require),
        before: int | None = None,
    ) -> Response:
        try:
            place = changeable(await place_of(services, principal, namespace))
            info = await secrets.info(place.store, secret_name(secret))
            if info is None:
                raise Refused(404, f"No secret {secret} in {place.label}.")
        except Refused as exc:
            return pages.error(request, exc.status, str(exc), principal)
        older = before if before is not None and 0 < before < 2**63 else None
        uses = await secrets.accesses(
            place.store, info.name, limit=ACCESSES_PER_PAGE + 1, before=older
        )
        job_queues = set(services.jobs.stores)
        rows = []
        for use in uses[:ACCESSES_PER_PAGE]:
            if use.job_queue in job_queues:
                rows.append(AccessRow(use, f"job {use.job_id}", f"/jobs/{use.job_id}"))
            elif use.job_queue == BATCH_QUEUE:
                rows.append(AccessRow(use, f"batch workspace job {use.job_id}", None))
            else:
                rows.append(AccessRow(use, f"{use.job_queue} job {use.job_id}", None))
        return pages.render(
            request,
            "secret.html",
            principal,
            place=place,
            secret=info,
            accesses=rows,
            more=uses[ACCESSES_PER_PAGE - 1].id if len(uses) > ACCESSES_PER_PAGE else None,
            first_page=older is None,
        )

    return router
