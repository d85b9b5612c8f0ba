"""A served offload with people in it, for the access tests: a site admin, the owner of every
object the tests reach for (olive, admin of organization acme), and an unrelated user (mallory).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from batchspecs import minimal
from fleet import git

from offload import serving
from offload.api.app import create_app
from offload.batches.store import BatchStore
from offload.config import Settings
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.identity.orgs import Orgs
from offload.identity.tokens import AccessTokens
from offload.identity.users import Users
from offload.repos.mirror import Mirrors
from offload.repos.pulls import PullRequestStore
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer

CALLERS = ("anonymous", "other", "owner", "admin")
PASSWORD = "correct horse battery"


@dataclass
class Site:
    """The server, its database, and a token per caller."""

    db: Database
    url: str
    tmp: Path
    tokens: dict[str, str]
    app: Any = None
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def fresh(self, prefix: str) -> str:
        """A name no other call of this test used."""
        return f"{prefix}{next(self.counter)}"

    async def call(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request as `who` (one of CALLERS)."""
        headers = dict(kwargs.pop("headers", {}))
        if who != "anonymous":
            headers["Authorization"] = f"token {self.tokens[who]}"
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            return await client.request(method, path, headers=headers, **kwargs)

    async def as_owner(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request olive makes to set something up; its JSON (None for 204)."""
        response = await self.call("owner", method, path, **kwargs)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    async def job(self) -> int:
        """A new job of olive's (it waits: no executor runs)."""
        made = await self.as_owner("POST", "/api/jobs", json={"repo": "demo", "command": ["true"]})
        return int(made["id"])

    async def spec(self, *, local: bool = False) -> str:
        """A new batch spec of olive's; its id."""
        body = {"spec": minimal(self.fresh("change")), "local": local}
        return str((await self.as_owner("POST", "/api/batches/specs", json=body))["id"])

    async def batch_change(self) -> str:
        """A batch change of olive's (its spec as it was submitted); its name."""
        rand_id = await self.spec()
        row = await BatchStore(self.db).spec_by_rand_id(rand_id)
        assert row is not None
        await self.db.fetch(
            "INSERT INTO batch_changes (user_name, name, batch_spec_id, created_at, updated_at)"
            " VALUES (:u, :n, :s, :now, :now)",
            {"u": "olive", "n": row.name, "s": row.id, "now": row.created_at},
        )
        return row.name

    async def pull_request(self) -> int:
        """A new pull request of the built-in host opened by olive's batch change; its number."""
        branch = self.fresh("feature-")
        work = self.tmp / "work" / "demo"
        git("checkout", "-q", "-b", branch, "main", cwd=work)
        (work / f"{branch}.txt").write_text("change\n")
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", branch, cwd=work)
        git("push", "-q", "origin", branch, cwd=work)
        git("checkout", "-q", "main", cwd=work)
        await Syncer(RepoRegistry(self.db), Mirrors.in_data_dir(self.tmp / "data")).sync_all()
        pr = await PullRequestStore(self.db).create(
            "demo", title=branch, base_ref="main", head_ref=branch, author="olive"
        )
        return pr.number

    async def repo(self) -> str:
        """A new local repository, not registered; its path."""
        name = self.fresh("repo")
        path = self.tmp / "src" / name
        path.mkdir(parents=True)
        git("init", "-q", "-b", "main", cwd=path)
        (path / "README").write_text(name)
        git("add", ".", cwd=path)
        git("commit", "-q", "-m", "initial", cwd=path)
        return str(path)


@contextlib.asynccontextmanager
async def served(
    db: Database, db_url: DatabaseURL, tmp: Path, **settings_given: Any
) -> AsyncIterator[Site]:
    """create_app on a free port of 127.0.0.1, with its people and a repository `demo`."""
    settings = Settings(
        data_dir=tmp / "data",
        database_url=db_url.raw,
        job_queues=["default", "gpu"],
        **settings_given,
    )
    users, tokens, orgs = Users(db), AccessTokens(db), Orgs(db)
    made: dict[str, str] = {}
    admin = await users.create("root", site_admin=True, password=PASSWORD)
    made["admin"] = (await tokens.create(admin.id, ["user:all", "site-admin"]))[1]
    for who, name in (("owner", "olive"), ("other", "mallory")):
        user = await users.create(name, password=PASSWORD)
        made[who] = (await tokens.create(user.id, ["user:all"]))[1]
    await orgs.create("acme", admin="olive")
    # The built-in code host holds a bare repository; people push to it from their clones.
    source = tmp / "src" / "demo"
    source.mkdir(parents=True)
    git("init", "-q", "--bare", "-b", "main", cwd=source)
    work = tmp / "work" / "demo"
    work.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=work)
    (work / "README").write_text("demo\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "initial", cwd=work)
    git("remote", "add", "origin", str(source), cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    await Syncer(RepoRegistry(db), Mirrors.in_data_dir(settings.data_dir)).add(
        str(source), name="demo"
    )
    sock = serving.listen("127.0.0.1", 0, settings_hint="the test")
    app = create_app(db, settings)
    http = serving.server(app, stop_timeout=1)
    task = asyncio.create_task(http.serve(sockets=[sock]))
    while not http.started:  # noqa: ASYNC110 - uvicorn offers no start-up event
        await asyncio.sleep(0.01)
    try:
        yield Site(db, serving.address(sock), tmp, made, app)
    finally:
        app.state.dispatcher.close()
        http.should_exit = True
        await task
