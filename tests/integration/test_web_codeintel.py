"""The code intelligence pages over a served offload, as a browser without JavaScript sees
them: the ranking and the summary by state, a repository's status, index jobs (Index now),
uploads and configuration (site admins only; an invalid one shows line:column and stores
nothing), one index job's step logs, and the file view whose symbols link to pages of their
definitions and references, which link back to the lines. Both databases."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from access_site import Site, served
from fleet import make_repo
from scip_builder import DEF, Uploads, scip_index
from web_client import browser, csrf_of, signed_in

from offload.codeintel.queue import SPEC as INDEX_JOBS
from offload.codeintel.service import IndexService
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.queue.record import LogEntry
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer

GREET = "scip-python python mypkg 0.1.0 mypkg/util/greet()."
RUN = "scip-python python mypkg 0.1.0 mypkg/main/run()."
UTIL = 'def greet(name):\n    msg = "hi " + name\n    return msg\n'
MAIN = 'from mypkg.util import greet\ndef run():\n    return greet("<x>")\n'
INDEX = scip_index(
    [
        (
            "mypkg/util.py",
            [([0, 4, 9], GREET, DEF), ([1, 4, 7], "local 0", DEF), ([2, 11, 14], "local 0", 0)],
            {GREET: "Say hello."},
        ),
        (
            "mypkg/main.py",
            [([0, 23, 28], GREET, 0), ([1, 4, 7], RUN, DEF), ([2, 11, 16], GREET, 0)],
            {},
        ),
    ]
)
CONFIG = (
    "index_jobs:\n  - indexer: sourcegraph/scip-python\n    indexer_args: [scip-python, index]\n"
)
INVALID = "index_jobs:\n  - root: api\n    indexer: 42\n"


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


async def indexed_lib(site: Site) -> str:
    """The repository `lib`, synced, with a processed upload of its commit; the commit."""
    mirrors = Mirrors.in_data_dir(site.tmp / "data")
    commit = make_repo(site.tmp / "src" / "lib", {"mypkg/util.py": UTIL, "mypkg/main.py": MAIN})
    await Syncer(RepoRegistry(site.db), mirrors).add(str(site.tmp / "src" / "lib"), name="lib")
    await Uploads(site.db, mirrors, site.tmp / "data" / "uploads").add("lib", commit, INDEX)
    return commit


def links(page: str, pattern: str) -> list[str]:
    """The hrefs of a page matching `pattern`, unescaped."""
    found = [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]*)"', page)]
    return [h for h in found if re.search(pattern, h)]


async def test_anonymous_visitors_are_sent_to_sign_in(site: Site) -> None:
    async with browser(site) as client:
        for path in (
            "/code-intelligence",
            "/code-intelligence/demo",
            "/code-intelligence/indexes/1",
        ):
            answer = await client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/sign-in?next=/code-intelligence")


async def test_the_file_view_links_symbols_to_definitions_and_references(site: Site) -> None:
    commit = await indexed_lib(site)
    async with signed_in(site, "mallory") as client:
        overview = (await client.get("/code-intelligence")).text
        assert 'href="/code-intelligence/lib"' in overview and "demo" in overview
        summary = overview[overview.index('id="ci-summary"') :]
        uploads_row = summary[
            summary.index("Uploads") : summary.index("</tr>", summary.index("Uploads"))
        ]
        # One upload, completed (the states' columns run queued, processing, completed, ...).
        assert re.findall(r'<td class="num">(\d+)</td>', uploads_row)[:3] == ["0", "0", "1"]

        repo = (await client.get("/code-intelligence/lib")).text
        uploads = repo[repo.index('id="uploads"') :]
        assert "state-completed" in uploads and commit[:12] in uploads
        assert '<td class="num">2</td>' in uploads  # documents
        assert '<td class="num">6</td>' in uploads  # occurrences
        assert "Replace configuration" not in repo, "only site admins get the form"

        view = await client.get(f"/code-intelligence/lib/-/blob/mypkg/main.py?commit={commit}")
        assert view.status_code == 200, view.text
        # The file's text is text: markup in it is escaped, each line numbered.
        assert "&lt;x&gt;" in view.text and 'id="L3"' in view.text
        (call,) = links(view.text, r"line=2&character=11")
        assert call.startswith("/code-intelligence/lib/-/def?")

        definitions = await client.get(call)
        assert definitions.status_code == 200, definitions.text
        assert "Say hello." in definitions.text
        (target,) = links(definitions.text, r"mypkg/util\.py")
        assert target == f"/code-intelligence/lib/-/blob/mypkg/util.py?commit={commit}#L1"
        assert "mypkg/util.py:1:5" in definitions.text
        landed = await client.get(target.split("#")[0])
        assert 'id="L1"' in landed.text and ">greet</a>(name)" in landed.text

        (refs_link,) = links(definitions.text, r"/-/refs\?")
        refs = (await client.get(refs_link)).text
        refs = refs[refs.index('id="locations"') :]
        assert [h.split("?")[0] + h[h.index("#") :] for h in links(refs, r"#L\d+$")] == [
            "/code-intelligence/lib/-/blob/mypkg/main.py#L1",
            "/code-intelligence/lib/-/blob/mypkg/main.py#L3",
            "/code-intelligence/lib/-/blob/mypkg/util.py#L1",
        ]

        # A position with no symbol says why; a file the commit lacks is not found.
        empty = await client.get(
            f"/code-intelligence/lib/-/def?commit={commit}&path=mypkg/main.py&line=0&character=0"
        )
        assert (
            empty.status_code == 200 and "No definitions: no symbol at this position" in empty.text
        )
        missing = await client.get(f"/code-intelligence/lib/-/blob/nothing.py?commit={commit}")
        assert missing.status_code == 404 and "has no file nothing.py" in missing.text
        bad = await client.get("/code-intelligence/lib/-/blob/../etc/passwd")
        assert bad.status_code in (400, 404)


async def test_index_now_and_an_index_jobs_logs(site: Site) -> None:
    commit = await indexed_lib(site)
    await IndexService(
        site.db, RepoRegistry(site.db), Mirrors.in_data_dir(site.tmp / "data")
    ).set_config("lib", CONFIG, by="root")
    async with signed_in(site, "mallory") as client:
        page = (await client.get("/code-intelligence/lib")).text
        assert "No index jobs yet." in page
        forged = await client.post("/code-intelligence/lib/-/index", data={"csrf": "forged"})
        assert forged.status_code == 403
        done = await client.post("/code-intelligence/lib/-/index", data={"csrf": csrf_of(page)})
        assert done.status_code == 200, done.text
        assert "1 queued ahead of scheduled ones" in done.text and commit[:12] in done.text
        (job_link,) = links(done.text, r"^/code-intelligence/indexes/\d+$")
        assert "state-queued" in done.text and "Jobs come from</dt><dd>configuration" in done.text

        store = SqlQueueStore(site.db, INDEX_JOBS)
        (record,) = await store.dequeue("exec-test")
        now = datetime.now(UTC)
        await store.add_log_entry(
            record.lease,
            LogEntry(
                key="indexer",
                command=["scip-python", "index"],
                start_time=now,
                exit_code=1,
                out="<boom> no module\n",
            ),
        )
        await store.mark_failed(record.lease, "the indexer exited with status 1")
        job = await client.get(job_link)
        assert job.status_code == 200, job.text
        assert "state-failed" in job.text and "the indexer exited with status 1" in job.text
        assert '<pre class="log" tabindex="0">&lt;boom&gt; no module' in job.text
        assert "scip-python index" in job.text and "none yet" in job.text
        assert (await client.get("/code-intelligence/indexes/999999")).status_code == 404


async def test_only_site_admins_replace_a_configuration_and_errors_show_their_place(
    site: Site,
) -> None:
    await indexed_lib(site)
    async with signed_in(site, "mallory") as client:
        page = (await client.get("/code-intelligence/lib")).text
        refused = await client.post(
            "/code-intelligence/lib/-/config", data={"csrf": csrf_of(page), "config": CONFIG}
        )
        assert refused.status_code == 403 and "Only site admins" in refused.text
    async with signed_in(site, "root") as admin:
        page = (await admin.get("/code-intelligence/lib")).text
        assert "Replace configuration" in page
        bad = await admin.post(
            "/code-intelligence/lib/-/config", data={"csrf": csrf_of(page), "config": INVALID}
        )
        assert bad.status_code == 422
        errors = bad.text[bad.text.index('id="config-errors"') :]
        assert "line 3, column 14" in errors and "nothing was stored" in bad.text
        assert "indexer: 42\n</textarea>" in bad.text, "the text stays in the form to fix"
        good = await admin.post(
            "/code-intelligence/lib/-/config",
            data={"csrf": csrf_of(page), "config": CONFIG.replace("\n", "\r\n")},
        )
        assert (
            good.status_code == 200 and "Stored the configuration of lib: 1 index job" in good.text
        )
    rows = await site.db.fetch("SELECT config, updated_by FROM codeintel_configs")
    assert [(r["config"], r["updated_by"]) for r in rows] == [(CONFIG, "root")]
    async with signed_in(site, "mallory") as client:
        page = (await client.get("/code-intelligence/lib")).text
        assert "scip-python, index]" in page and "<textarea" not in page


async def test_an_invalid_sourcegraph_yaml_shows_its_place_on_the_status(site: Site) -> None:
    path = site.tmp / "src" / "broken"
    make_repo(path, {"sourcegraph.yaml": INVALID, "setup.py": "print()\n"})
    await Syncer(RepoRegistry(site.db), Mirrors.in_data_dir(site.tmp / "data")).add(
        str(path), name="acme/broken"
    )
    async with signed_in(site, "mallory") as client:
        page = (await client.get("/code-intelligence/acme/broken")).text
        assert 'id="status-errors"' not in page
        asked = await client.post(
            "/code-intelligence/acme/broken/-/index", data={"csrf": csrf_of(page)}
        )
        assert asked.status_code == 422 and "no index job was queued" in asked.text
        shown = (await client.get("/code-intelligence/acme/broken")).text
        problems = shown[shown.index('id="status-errors"') :]
        assert "<code>sourcegraph.yaml:3:14</code>" in problems
        assert "No index jobs yet." in shown
