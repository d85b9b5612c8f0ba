"""Creating a batch change: the template gallery, a template's form, and the spec editor.

`/batch-changes/new` shows the gallery and an editor; `?template=NAME` the template's form,
which asks only for its own fields (and the name, namespace and repositories of the batch
change) and makes the spec (batches/gallery.py), to edit or to run at once. Specs are read as
POST /api/batches/specs reads them: in the spec workers, never on the event loop, within the
same limits; running one passes the API's checks (a namespace of the viewer's, the batches
queue granted to it, its secrets, no mounted files: a page uploads none) and leads to
/batch-specs/{id}. A spec with problems comes back in the editor, its text kept.

While someone types, htmx sends the editor's text to `/batch-changes/new/validate` after a
pause; the answer lists each problem as `line L, column C: ...`, the CLI's words. A user's
checks run one at a time; one that a newer check of the same user overtook while it waited
is dropped unread (204), as is the request htmx itself abandons.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from offload.batches import gallery
from offload.batches.cli import STARTER
from offload.batches.queue import NAME as EXECUTION
from offload.batches.service import MountError
from offload.batches.spec.limits import MAX_SPEC_CHARS, MAX_SUBMISSION_BYTES, check_text
from offload.batches.spec.model import BatchSpec, OnQuery, SpecErrors
from offload.batches.spec.workers import WorkersBusy
from offload.dispatch.grants import NotGranted
from offload.identity.principal import Principal
from offload.secrets.store import UnknownSecret
from offload.web.pages import Pages
from offload.web.routes import WebServices
from offload.web.viewer import SignInRequired, Viewer

NEW = "/batch-changes/new"
# A form holding a spec may be as large as the API's submission: the spec's own limit
# (MAX_SPEC_CHARS) is what refuses a spec, with the API's words.
SPEC_FORM_BYTES = MAX_SUBMISSION_BYTES
# What the spec's problems name as its file; the page shows only line and column.
SOURCE = "<spec>"
# Repository selectors a valid spec's summary names; the rest are counted.
ON_SHOWN = 3
NAMESPACE_MAX = 64
STARTER_NAME = "hello-world"
PROBLEMS = "The batch spec has problems: fix them, then run it again."
BUSY = "The server is reading many batch specs at the moment; try again in a few seconds."


@dataclass(frozen=True)
class Problem:
    """One problem of a spec, as `offload batch validate` prints it after FILE:LINE:COLUMN."""

    line: int
    column: int
    text: str


@dataclass(frozen=True)
class Check:
    """What the editor says of a spec: its problems, or what a valid one does."""

    problems: list[Problem] = field(default_factory=list)
    name: str = ""
    steps: int = 0
    on: list[str] = field(default_factory=list)
    more_on: int = 0
    busy: str = ""
    signed_out: bool = False

    @classmethod
    def of_errors(cls, exc: SpecErrors) -> Check:
        """The problems of a spec that did not validate."""
        problems = []
        for e in exc.errors:
            # The CLI's line, less its FILE:LINE:COLUMN (the page says line and column).
            text = str(e).removeprefix(f"{e.source}:{e.line}:{e.column}: ")
            problems.append(Problem(e.line, e.column, text))
        return cls(problems=problems)

    @classmethod
    def of_spec(cls, spec: BatchSpec) -> Check:
        """A valid spec's summary: its name, steps and repositories."""
        on = [
            entry.repositories_matching_query
            if isinstance(entry, OnQuery)
            else entry.repository + "".join(f"@{b}" for b in entry.requested_branches())
            for entry in spec.on
        ]
        return cls(
            name=spec.name,
            steps=len(spec.steps),
            on=on[:ON_SHOWN],
            more_on=max(0, len(on) - ON_SHOWN),
        )


class LatestOnly:
    """One turn at a time per user; a turn overtaken by a newer one of the same user while
    it waited is told so (and should do nothing)."""

    def __init__(self) -> None:
        self._users: dict[str, _Turns] = {}

    @contextlib.asynccontextmanager
    async def turn(self, user: str) -> AsyncIterator[bool]:
        """Wait for `user`'s turn; True if this is still their newest request."""
        turns = self._users.setdefault(user, _Turns())
        turns.waiting += 1
        turns.newest += 1
        mine = turns.newest
        try:
            async with turns.lock:
                yield mine == turns.newest
        finally:
            turns.waiting -= 1
            if turns.waiting == 0:
                del self._users[user]


@dataclass
class _Turns:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    newest: int = 0


def spec_text(form: dict[str, str]) -> str:
    """The editor's text as the CLI reads a file: every line break a newline."""
    return form.get("spec", "").replace("\r\n", "\n").replace("\r", "\n")


def mount_problems(spec: BatchSpec) -> list[str]:
    """What a spec from the page cannot do: mount files, which only the CLI uploads."""
    return [
        f"steps[{i}].mount[{j}]: {mount.path} would be uploaded with the spec, and a spec "
        "written on this page has no files beside it. Run it with `offload batch preview -f "
        "SPEC`, which uploads what the steps mount, or do what the file does in the step's run."
        for i, step in enumerate(spec.steps)
        for j, mount in enumerate(step.mount)
    ]


def editor_router(pages: Pages, services: WebServices) -> APIRouter:
    """/batch-changes/new: the gallery, a template's form, the editor and its checks."""
    router = APIRouter(include_in_schema=False)
    who = Viewer(services.auth)
    batches = services.batches
    checks = LatestOnly()

    async def templates() -> dict[str, gallery.Template]:
        # Read once (YAML, pure Python): the first time off the event loop.
        return await asyncio.to_thread(gallery.templates)

    def own_namespace(principal: Principal, asked: str) -> str:
        return asked if asked in principal.namespaces() else principal.username

    async def parse(text: str) -> BatchSpec:
        if len(text) > MAX_SPEC_CHARS:
            check_text(text, SOURCE)  # refuses it, with the API's words, without sending it
        return await batches.workers.parse(text, SOURCE)

    async def check(text: str) -> Check:
        try:
            return Check.of_spec(await parse(text))
        except SpecErrors as exc:
            return Check.of_errors(exc)
        except WorkersBusy:
            return Check(busy=BUSY)

    async def editor(
        request: Request,
        principal: Principal,
        *,
        text: str,
        namespace: str,
        status: int = 200,
        result: Check | None = None,
        error: str = "",
        done: str = "",
        show_gallery: bool = False,
    ) -> Response:
        return pages.render(
            request,
            "batch_new.html",
            principal,
            status=status,
            templates=list((await templates()).values()) if show_gallery else [],
            text=text,
            lines=text.count("\n") + 1,
            namespaces=principal.namespaces(),
            namespace=namespace,
            check=result,
            error=error,
            done=done,
        )

    async def template_form(
        request: Request,
        principal: Principal,
        template: gallery.Template,
        *,
        values: dict[str, str],
        namespace: str,
        status: int = 200,
        errors: dict[str, str] | None = None,
        error: str = "",
    ) -> Response:
        return pages.render(
            request,
            "batch_template.html",
            principal,
            status=status,
            chosen=template,
            fields=template.form_fields(),
            values=values,
            errors=errors or {},
            error=error,
            namespaces=principal.namespaces(),
            namespace=namespace,
        )

    async def submit(request: Request, principal: Principal, namespace: str, text: str) -> Response:
        """Run `text` as POST /api/batches/specs would, in the same order of checks."""

        async def again(status: int, error: str, result: Check | None = None) -> Response:
            shown = namespace if namespace in principal.namespaces() else principal.username
            return await editor(
                request,
                principal,
                text=text,
                namespace=shown,
                status=status,
                result=result,
                error=error,
            )

        namespace = namespace or principal.username
        if len(namespace) > NAMESPACE_MAX or not principal.may_act_in(namespace):
            return await again(
                403,
                f"You may not submit batch specs in {namespace[:NAMESPACE_MAX]}: it is not you "
                "or an organization you belong to.",
            )
        try:
            await services.grants.require(EXECUTION, namespace)
        except NotGranted as exc:
            return await again(403, str(exc))
        try:
            spec = await parse(text)
        except SpecErrors as exc:
            return await again(getattr(exc, "status", 400), PROBLEMS, Check.of_errors(exc))
        except WorkersBusy:
            return await again(503, BUSY)
        result = Check.of_spec(spec)
        mounts = mount_problems(spec)
        if mounts:
            return await again(400, " ".join(mounts), result)
        try:
            row = await batches.submit(
                namespace, text, SOURCE, {}, created_by=principal.username, parsed=spec
            )
        except (MountError, UnknownSecret) as exc:
            return await again(400, str(exc).strip("'\""), result)
        return RedirectResponse(f"/batch-specs/{row.rand_id}", status_code=303)

    @router.get(NEW)
    async def new(
        request: Request,
        principal: Principal = Depends(who.require),
        template: str = "",
        namespace: str = "",
    ) -> Response:
        namespace = own_namespace(principal, namespace)
        if template:
            chosen = (await templates()).get(template)
            if chosen is None:
                names = ", ".join(gallery.TEMPLATES)
                message = f"No template {template[:64]!r}; the gallery has {names}."
                return pages.error(request, 404, message, principal)
            return await template_form(
                request, principal, chosen, values=chosen.defaults(), namespace=namespace
            )
        return await editor(
            request,
            principal,
            text=STARTER.format(name=STARTER_NAME),
            namespace=namespace,
            show_gallery=True,
        )

    @router.post(f"{NEW}/template")
    async def fill(request: Request) -> Response:
        principal, form = await who.posted(request)
        chosen = (await templates()).get(form.get("template", ""))
        if chosen is None:
            message = f"No template {form.get('template', '')[:64]!r}."
            return pages.error(request, 404, message, principal)
        values = {f.name: form.get(f.name, "") for f in chosen.form_fields()}
        namespace = form.get("namespace", "") or principal.username
        try:
            with batches.workers.admitted():
                text = await batches.workers.run(gallery.render, chosen.key, values)
        except gallery.FieldErrors as exc:
            return await template_form(
                request,
                principal,
                chosen,
                values=values,
                namespace=namespace,
                status=400,
                errors=exc.errors,
                error="Some values cannot be used: see below.",
            )
        except WorkersBusy:
            return await template_form(
                request,
                principal,
                chosen,
                values=values,
                namespace=namespace,
                status=503,
                error=BUSY,
            )
        if form.get("do") == "run":
            return await submit(request, principal, namespace, text)
        return await editor(
            request,
            principal,
            text=text,
            namespace=own_namespace(principal, namespace),
            result=await check(text),
            done=f"Made from the template “{chosen.title}”: read it, change what you like, "
            "then run it.",
        )

    @router.post(f"{NEW}/validate")
    async def validate(request: Request) -> Response:
        try:
            principal, form = await who.posted(request, SPEC_FORM_BYTES)
        except SignInRequired:
            if request.headers.get("hx-request") != "true":
                raise
            # Said where the checks appear: a redirect would put the sign-in page there.
            return pages.render(request, "_spec_errors.html", None, check=Check(signed_out=True))
        text = spec_text(form)
        async with checks.turn(principal.username) as newest:
            if not newest:
                return Response(status_code=204)
            result = await check(text)
        return pages.render(request, "_spec_errors.html", principal, check=result)

    @router.post(NEW)
    async def run(request: Request) -> Response:
        principal, form = await who.posted(request, SPEC_FORM_BYTES)
        return await submit(request, principal, form.get("namespace", ""), spec_text(form))

    return router
