"""GET /api/codeintel/infer over repositories mirrored by the Syncer: a Python package, a
TypeScript project, an invalid sourcegraph.yaml; unknown names and revisions; sign-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from access_site import Site, served
from fleet import git, make_repo

from offload.codeintel.inference import IMAGES
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer

PYPROJECT = '[project]\nname = "greet"\nversion = "1.2.0"\n'
INVALID = "index_jobs:\n  - root: api\n    indexer: 42\n"


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


async def add(site: Site, name: str, files: dict[str, str]) -> str:
    """A new repository of `files`, registered and mirrored through the Syncer; its commit."""
    commit = make_repo(site.tmp / "src" / name, files)
    syncer = Syncer(RepoRegistry(site.db), Mirrors.in_data_dir(site.tmp / "data"))
    await syncer.add(str(site.tmp / "src" / name), name=name)
    return commit


async def infer(site: Site, who: str = "other", **params: str) -> Any:
    response = await site.call(who, "GET", "/api/codeintel/infer", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_python_package_gets_a_named_scip_python_job(site: Site) -> None:
    commit = await add(site, "greet", {"pyproject.toml": PYPROJECT, "greet/__init__.py": ""})
    answer = await infer(site, repo="greet")
    assert answer == {
        "repo": "greet",
        "commit": commit,
        "source": "inferred",
        "jobs": [
            {
                "steps": [],
                "local_steps": ["pip install . || true"],
                "root": "",
                "indexer": IMAGES["python"],
                "indexer_args": [
                    "scip-python",
                    "index",
                    ".",
                    "--project-name",
                    "greet",
                    "--project-version",
                    "1.2.0",
                ],
                "outfile": "index.scip",
                "requestedEnvVars": [],
                "why": "Python project pyproject.toml (project greet 1.2.0)",
            }
        ],
        "errors": [],
        "notes": [],
    }


async def test_a_typescript_project_and_an_older_commit(site: Site) -> None:
    first = await add(
        site, "web", {"package.json": "{}", "yarn.lock": "", "src/tsconfig.json": "{}"}
    )
    work = site.tmp / "src" / "web"
    git("rm", "-q", "src/tsconfig.json", cwd=work)
    git("commit", "-q", "-m", "no tsconfig", cwd=work)
    await Syncer(RepoRegistry(site.db), Mirrors.in_data_dir(site.tmp / "data")).sync_all()

    head = await infer(site, repo="web")
    assert head["commit"] != first
    assert [(j["indexer_args"], j["why"]) for j in head["jobs"]] == [
        (
            ["scip-typescript", "index", "--infer-tsconfig"],
            "JavaScript package package.json (no tsconfig.json: one is inferred)",
        )
    ]
    older = await infer(site, repo="web", commit="HEAD~1")
    assert older["commit"] == first
    [job] = older["jobs"]
    assert job["root"] == "src" and job["indexer"] == IMAGES["typescript"]
    assert job["steps"] == [{"root": "", "image": IMAGES["typescript"], "commands": ["yarn"]}]
    assert job["why"] == "TypeScript project src/tsconfig.json"
    assert (await infer(site, repo="web", commit=first[:10]))["commit"] == first


async def test_an_invalid_sourcegraph_yaml_gives_its_errors_and_no_jobs(site: Site) -> None:
    await add(site, "broken", {"sourcegraph.yaml": INVALID, "go.mod": "module x\n"})
    answer = await infer(site, repo="broken")
    assert answer["source"] == "sourcegraph.yaml"
    assert answer["jobs"] == []
    [error] = answer["errors"]
    assert (error["line"], error["column"]) == (3, 14)
    assert error["path"] == "index_jobs[0].indexer"
    assert "string" in error["message"]


async def test_unknown_repositories_and_revisions_are_404(site: Site) -> None:
    await add(site, "lib", {"go.mod": "module lib\n"})
    for params, detail in (
        ({"repo": "nope"}, "no repository named 'nope' is registered"),
        ({"repo": "lib", "commit": "no-such-branch"}, "has no revision 'no-such-branch'"),
        ({"repo": "lib", "commit": "0" * 40}, "has no revision"),
    ):
        response = await site.call("other", "GET", "/api/codeintel/infer", params=params)
        assert response.status_code == 404, (params, response.text)
        assert detail in response.json()["detail"]


async def test_anonymous_callers_must_sign_in(site: Site) -> None:
    response = await site.call("anonymous", "GET", "/api/codeintel/infer", params={"repo": "demo"})
    assert response.status_code == 401
    assert (await infer(site, "owner", repo="demo"))["jobs"] == []
