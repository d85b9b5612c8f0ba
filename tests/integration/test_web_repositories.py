"""The repositories pages over a served offload, as a browser without JavaScript sees them: the
list with each repository's sync state (filtered, paginated), adding and syncing by site
admins (403 for others, 4xx pages that say what was wrong), the built-in host's pull requests
with their exact diff, merged and closed from their page as the API agrees."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from access_site import Site, served
from fleet import git
from web_client import csrf_of, signed_in

from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.repos import commits
from offload.repos.codehosts.base import PullRequestDraft
from offload.repos.mirror import Mirrors
from offload.repos.pulls import PullRequests, PullRequestStore, StoredPullRequest
from offload.repos.registry import RepoRegistry
from offload.web.repositories import DIFF_LINES, REPOS_PER_PAGE

APP_BEFORE = "def main():\n    print('hello')\n    return 0\n"
APP_AFTER = "def main():\n    print('hello, <world>')\n    return 0\n"


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


def hosted(site: Site, name: str) -> Path:
    """A bare repository for offload to host (not registered): main with app.py, and branch
    `feature` that changes one of its lines and adds a file."""
    source = site.tmp / "hosted" / name
    source.mkdir(parents=True)
    git("init", "-q", "--bare", "-b", "main", cwd=source)
    work = site.tmp / "clones" / name
    work.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=work)
    (work / "app.py").write_text(APP_BEFORE)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "initial", cwd=work)
    git("remote", "add", "origin", str(source), cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "app.py").write_text(APP_AFTER)
    (work / "NOTES.md").write_text("first\nsecond\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "feature", cwd=work)
    git("push", "-q", "origin", "feature", cwd=work)
    return source


def service(site: Site) -> PullRequests:
    """The built-in host's pull requests, over the served site's database and mirrors."""
    registry = RepoRegistry(site.db)
    return PullRequests(PullRequestStore(site.db), registry, Mirrors.in_data_dir(site.tmp / "data"))


async def open_pull(site: Site, repo: str, *, head: str = "feature") -> StoredPullRequest:
    """A pull request of olive's from `head` into main, opened through the service."""
    body = "Says hello to <world>.\n\n<script>alert(1)</script> stays text."
    draft = PullRequestDraft(
        repo=repo,
        base_ref="main",
        head_ref=head,
        title=f"Greet <world> from {head}",
        body=body,
        author="olive",
    )
    return await service(site).open(draft)


async def add_as_root(client: httpx.AsyncClient, source: str, name: str = "") -> httpx.Response:
    """Post the page's add form."""
    page = await client.get("/repositories")
    return await client.post(
        "/repositories", data={"csrf": csrf_of(page.text), "source": source, "name": name}
    )


def table_rows(page: str, table: str) -> list[str]:
    """The text of each body row of a table, tags dropped, spaces squeezed."""
    body = page[page.index(f'<table id="{table}"') :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in rows]


async def test_everyone_sees_the_repositories_and_their_sync_state(site: Site) -> None:
    async with signed_in(site, "root") as root:
        source = hosted(site, "broken")
        added = await add_as_root(root, str(source), "acme/broken")
        assert added.status_code == 200, added.text
        shutil.rmtree(source)
        page = await root.get("/repositories")
        synced = await root.post(
            "/repositories/acme/broken/sync", data={"csrf": csrf_of(page.text), "back": "list"}
        )
        assert synced.status_code == 200
        assert "Could not sync acme/broken: git ls-remote" in synced.text
    async with signed_in(site, "mallory") as mallory:
        page = await mallory.get("/repositories")
        assert page.status_code == 200
        rows = table_rows(page.text, "repos")
        assert rows[0].startswith(f"acme/broken pull requests {source} main ")
        assert (
            " failed git ls-remote" in rows[0]
            and "does not appear to be a git repository" in rows[0]
        )
        assert rows[1].startswith("demo pull requests ") and rows[1].endswith(" synced")
        assert re.search(r"demo pull requests \S+/src/demo main [0-9a-f]{12} \d+ \w+ ago", rows[1])
        # Site admins' forms only.
        assert "Add repository" not in page.text and 'action="/repositories/sync"' not in page.text
        assert "/sync" not in page.text
        one = await mallory.get("/repositories/acme/broken")
        assert one.status_code == 200 and "does not appear to be a git repository" in one.text
        assert "Sync now" not in one.text
        filtered = await mallory.get("/repositories?name=BROK")
        assert [r.split()[0] for r in table_rows(filtered.text, "repos")] == ["acme/broken"]
        nothing = await mallory.get("/repositories?name=%25")
        assert nothing.status_code == 200 and "No repositories match." in nothing.text
        missing = await mallory.get("/repositories/acme/nothing")
        assert (
            missing.status_code == 404
            and "No repository named &#39;acme/nothing&#39;" in missing.text
        )


async def test_the_list_pages_by_name(site: Site) -> None:
    registry = RepoRegistry(site.db)
    for i in range(REPOS_PER_PAGE + 5):
        await registry.add(str(site.tmp / "nowhere"), name=f"many/r{i:03d}")
    async with signed_in(site, "olive") as olive:
        first = await olive.get("/repositories?name=many/")
        names = [r.split()[0] for r in table_rows(first.text, "repos")]
        assert names == [f"many/r{i:03d}" for i in range(REPOS_PER_PAGE)]
        assert all(r.endswith("never synced") for r in table_rows(first.text, "repos"))
        link = re.search(r'href="(/repositories\?name=many%2F&amp;after=[^"]+)"', first.text)
        assert link, "no link to the next page"
        second = await olive.get(link.group(1).replace("&amp;", "&"))
        names = [r.split()[0] for r in table_rows(second.text, "repos")]
        assert names == [f"many/r{i:03d}" for i in range(REPOS_PER_PAGE, REPOS_PER_PAGE + 5)]
        assert "More repositories" not in second.text


async def test_site_admins_add_and_sync_others_get_403(site: Site) -> None:
    source = hosted(site, "tools")
    async with signed_in(site, "mallory") as mallory:
        token = csrf_of((await mallory.get("/repositories")).text)
        for path, data in (
            ("/repositories", {"source": str(source), "name": "acme/tools"}),
            ("/repositories/sync", {}),
            ("/repositories/demo/sync", {}),
        ):
            answer = await mallory.post(path, data={"csrf": token, **data})
            assert answer.status_code == 403, path
            assert "Only site admins add and sync repositories." in answer.text
    assert await RepoRegistry(site.db).get("acme/tools") is None
    async with signed_in(site, "root") as root:
        page = await root.get("/repositories")
        assert "Add repository" in page.text and 'aria-label="Sync demo"' in page.text
        added = await add_as_root(root, str(source), "acme/tools")
        assert added.status_code == 200
        head = git("rev-parse", "main", cwd=source)
        assert f"Added acme/tools from {source}: main at {head[:12]}." in added.text
        listed = await site.call("admin", "GET", "/api/repos")
        assert {r["name"]: r["headCommit"] for r in listed.json()}["acme/tools"] == head

        # A new commit at the source: syncing one brings it in, and says so.
        work = site.tmp / "clones" / "tools"
        git("checkout", "-q", "main", cwd=work)
        (work / "more.txt").write_text("more\n")
        git("add", ".", cwd=work)
        git("commit", "-q", "-m", "more", cwd=work)
        git("push", "-q", "origin", "main", cwd=work)
        newer = git("rev-parse", "main", cwd=source)
        synced = await root.post(
            "/repositories/acme/tools/sync", data={"csrf": csrf_of(page.text), "back": "repo"}
        )
        assert synced.status_code == 200 and "<h1" in synced.text and "acme/tools" in synced.text
        assert re.search(rf"Synced acme/tools in [\d.]+ s: main at {newer[:12]}\.", synced.text)
        assert newer in synced.text  # the repository page's head commit
        every = await root.post("/repositories/sync", data={"csrf": csrf_of(page.text)})
        assert every.status_code == 200 and "Synced 2 of 2 repositories." in every.text
    audited = await site.db.fetch("SELECT actor, target FROM audit_log WHERE action = 'repo.add'")
    assert [(r["actor"], r["target"]) for r in audited] == [("root", "acme/tools")]


@pytest.mark.parametrize(
    ("source", "name", "status", "message"),
    [
        ("{tools}", "../up", 400, "repository name '../up' is not valid at '..'"),
        ("{tools}", "demo", 409, "a repository named &#39;demo&#39; is already registered"),
        ("{tmp}/no/such/repo", "gone", 422, "cannot mirror {tmp}/no/such/repo as gone"),
        ("   ", "", 400, "the repository source is empty"),
        ("-upload-pack=evil", "", 400, "looks like an option"),
    ],
)
async def test_a_bad_add_is_answered_with_the_page_and_what_was_wrong(
    site: Site, source: str, name: str, status: int, message: str
) -> None:
    tools = hosted(site, "tools")
    source = source.format(tools=tools, tmp=site.tmp)
    message = message.format(tmp=site.tmp).replace("'", "&#39;")
    async with signed_in(site, "root") as root:
        answer = await add_as_root(root, source, name)
        assert answer.status_code == status, answer.text
        assert '<p class="error repo-message" role="alert">' in answer.text
        assert message in answer.text
        # The form keeps what was typed.
        if source.strip():
            assert f'value="{source}"' in answer.text
        assert f'name="name" maxlength="255" value="{name}"' in answer.text
    names = [r.name for r in await RepoRegistry(site.db).list()]
    assert names == ["demo"]


async def test_a_pull_request_page_shows_its_exact_diff_and_merges(site: Site) -> None:
    source = hosted(site, "tools")
    async with signed_in(site, "root") as root:
        assert (await add_as_root(root, str(source), "acme/tools")).status_code == 200
    pr = await open_pull(site, "acme/tools")
    async with signed_in(site, "olive") as olive:
        listed = await olive.get("/repositories/acme/tools/pulls")
        assert listed.status_code == 200
        assert table_rows(listed.text, "pulls") == [
            f"{pr.number} Greet &lt;world&gt; from feature feature → main olive open "
            + table_rows(listed.text, "pulls")[0].split(" open ")[1]
        ]
        assert (await olive.get("/repositories/acme/tools/pulls?state=merged")).text.count(
            "No pull requests are merged."
        ) == 1
        page = await olive.get(f"/repositories/acme/tools/pulls/{pr.number}")
        assert page.status_code == 200
        text = page.text
        assert "Greet &lt;world&gt; from feature" in text
        assert (
            "&lt;script&gt;alert(1)&lt;/script&gt; stays text." in text
            and "<script>alert" not in text
        )
        assert "olive wants to merge <code>feature</code> into <code>main</code>" in text
        # The diff: both files, each line numbered on its side and marked in text.
        assert '<span class="diff-path">app.py</span>' in text
        assert '<span class="diff-path">NOTES.md</span>' in text
        rows = re.findall(r'<tr class="diff-(context|added|deleted)">(.*?)</tr>', text)
        cells = [(kind, re.findall(r"<td[^>]*>(.*?)</td>", row)) for kind, row in rows]
        assert cells == [
            ("added", ["", "1", "+", "first"]),
            ("added", ["", "2", "+", "second"]),
            ("context", ["1", "1", " ", "def main():"]),
            ("deleted", ["2", "", "-", "    print(&#39;hello&#39;)"]),
            ("added", ["", "2", "+", "    print(&#39;hello, &lt;world&gt;&#39;)"]),
            ("context", ["3", "3", " ", "    return 0"]),
        ]
        assert text.count('<tr class="diff-hunk"><td colspan="4">@@ ') == 2
        assert "2 files changed" in re.sub(r"<[^>]+>", "", text)
        raw = await olive.get(f"/repositories/acme/tools/pulls/{pr.number}/diff.txt")
        expected = git("diff", "-M", "main...feature", cwd=source) + "\n"
        assert raw.status_code == 200 and raw.text == expected
        assert raw.headers["content-type"].startswith("text/plain")

        merge = f"/repositories/acme/tools/pulls/{pr.number}/merge"
        form = re.search(rf'<form method="post" action="{merge}" data-confirm="([^"]+)"', text)
        assert form and "cannot be undone" in form.group(1)
        forged = await olive.post(merge, data={"csrf": "forged"})
        assert forged.status_code == 403
        done = await olive.post(merge, data={"csrf": csrf_of(text)})
        assert done.status_code == 303
        assert done.headers["location"] == f"/repositories/acme/tools/pulls/{pr.number}?did=merge"
        after = await olive.get(done.headers["location"])
        merged = git("rev-parse", "main", cwd=source)
        assert f"Merged feature into main as {merged[:12]}." in after.text
        assert 'class="state pr-merged">merged' in after.text and merge not in after.text
        # What it brought into main reads the same after the merge.
        kinds = re.findall(r'<tr class="diff-(context|added|deleted)">', after.text)
        assert kinds == [k for k, _ in cells]
    api = await site.call("owner", "GET", f"/api/pulls/acme/tools/{pr.number}")
    assert api.json()["state"] == "merged" and api.json()["mergeCommit"] == merged
    audited = await site.db.fetch("SELECT actor, target FROM audit_log WHERE action = 'pull.merge'")
    assert [(r["actor"], r["target"]) for r in audited] == [("olive", f"acme/tools#{pr.number}")]


async def test_others_may_read_but_not_merge_or_close_and_the_author_closes(site: Site) -> None:
    number = await site.pull_request()  # olive's, on the site's own repository `demo`
    close = f"/repositories/demo/pulls/{number}/close"
    merge = f"/repositories/demo/pulls/{number}/merge"
    async with signed_in(site, "mallory") as mallory:
        page = await mallory.get(f"/repositories/demo/pulls/{number}")
        assert page.status_code == 200 and "Only site admins and olive may merge or close it." in (
            page.text
        )
        assert close not in page.text and merge not in page.text
        for path in (merge, close):
            answer = await mallory.post(path, data={"csrf": csrf_of(page.text)})
            assert answer.status_code == 403, path
            assert "Only site admins and olive may" in answer.text
        for missing in (
            "/repositories/nothing/pulls",
            "/repositories/nothing/pulls/1",
            f"/repositories/demo/pulls/{number + 50}",
        ):
            answer = await mallory.get(missing)
            assert answer.status_code == 404 and "Not found" in answer.text, missing
        assert (await mallory.get("/repositories/demo/pulls/x")).status_code == 400
    assert (await site.call("owner", "GET", f"/api/pulls/demo/{number}")).json()["state"] == "open"
    async with signed_in(site, "olive") as olive:
        page = await olive.get(f"/repositories/demo/pulls/{number}")
        form = re.search(rf'<form method="post" action="{close}" data-confirm="[^"]+"', page.text)
        assert form, "no close form with a confirmation"
        done = await olive.post(close, data={"csrf": csrf_of(page.text)})
        assert done.status_code == 303
        after = await olive.get(done.headers["location"])
        assert "Closed without merging." in after.text and close not in after.text
        assert 'class="state pr-closed">closed' in after.text
        listed = await olive.get("/repositories/demo/pulls?state=closed")
        assert f'href="/repositories/demo/pulls/{number}"' in listed.text
        assert (
            f'href="/repositories/demo/pulls/{number}"'
            not in (await olive.get("/repositories/demo/pulls?state=open")).text
        )
        assert (await olive.get("/repositories/demo/pulls?state=weird")).status_code == 400
    assert (await site.call("owner", "GET", f"/api/pulls/demo/{number}")).json()["state"] == (
        "closed"
    )


async def test_a_repository_mirrored_from_a_url_keeps_its_pull_requests_on_its_host(
    site: Site,
) -> None:
    source = hosted(site, "elsewhere")
    async with signed_in(site, "root") as root:
        added = await add_as_root(root, f"file://{source}", "mirror/elsewhere")
        assert added.status_code == 200, added.text
        page = await root.get("/repositories/mirror/elsewhere")
        assert "on its code host" in page.text and "/pulls" not in page.text
        pulls = await root.get("/repositories/mirror/elsewhere/pulls")
        assert pulls.status_code == 200 and "its pull requests live on that host" in pulls.text


async def test_a_long_diff_is_cut_on_the_page_and_whole_as_text(site: Site) -> None:
    source = hosted(site, "big")
    work = site.tmp / "clones" / "big"
    lines = DIFF_LINES + 500
    (work / "big.txt").write_text("".join(f"line {i}\n" for i in range(lines)))
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "big", cwd=work)
    git("push", "-q", "origin", "feature", cwd=work)
    async with signed_in(site, "root") as root:
        assert (await add_as_root(root, str(source), "big")).status_code == 200
        pr = await open_pull(site, "big")
        page = await root.get(f"/repositories/big/pulls/{pr.number}")
        shown = re.findall(r'<tr class="diff-(?:context|added|deleted)">', page.text)
        assert len(shown) == DIFF_LINES
        flat = " ".join(re.sub(r"<[^>]+>", " ", page.text).split())
        assert f"lines past the first {DIFF_LINES} are counted but not shown." in flat
        assert f"3 files changed, +{lines + 3} \u22121" in flat
        link = f'<a href="/repositories/big/pulls/{pr.number}/diff.txt">Read the whole diff'
        assert link in page.text
        text = await root.get(f"/repositories/big/pulls/{pr.number}/diff.txt")
        assert text.text.count("\n+line ") == lines and text.headers["x-diff-cut"] == "False"
    # The git read itself stops at its bound, and says it did.
    head = git("rev-parse", "feature", cwd=source)
    raw, cut = await commits.diff(source, "main", head, max_bytes=1000)
    assert (len(raw), cut) == (1000, True)
    whole, cut = await commits.diff(source, "main", head, max_bytes=10_000_000)
    assert not cut and whole.startswith(raw) and len(whole) > 1000


async def test_a_repository_named_like_a_pull_request_list_still_has_its_page(
    site: Site,
) -> None:
    await RepoRegistry(site.db).add(str(site.tmp / "nowhere"), name="acme/pulls")
    async with signed_in(site, "olive") as olive:
        page = await olive.get("/repositories/acme/pulls")
        assert page.status_code == 200 and '<h1 class="repo-name">acme/pulls</h1>' in page.text


async def test_a_merge_that_conflicts_is_answered_with_the_page_and_the_files(site: Site) -> None:
    source = hosted(site, "clash")
    work = site.tmp / "clones" / "clash"
    git("checkout", "-q", "main", cwd=work)
    (work / "app.py").write_text(APP_BEFORE.replace("hello", "bonjour"))
    git("commit", "-q", "-am", "bonjour", cwd=work)
    git("push", "-q", "origin", "main", cwd=work)
    async with signed_in(site, "root") as root:
        assert (await add_as_root(root, str(source), "clash")).status_code == 200
        pr = await open_pull(site, "clash")
        page = await root.get(f"/repositories/clash/pulls/{pr.number}")
        merge = f"/repositories/clash/pulls/{pr.number}/merge"
        answer = await root.post(merge, data={"csrf": csrf_of(page.text)})
        assert answer.status_code == 409
        assert (
            "merging feature into main of" in answer.text and "conflicts in app.py" in answer.text
        )
        assert 'class="state pr-open">open' in answer.text and merge in answer.text
    api = await site.call("owner", "GET", f"/api/pulls/clash/{pr.number}")
    assert api.json()["state"] == "open"
