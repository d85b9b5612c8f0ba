"""Code navigation over real processed uploads, through the HTTP API: definitions and
references across files and repositories, local symbols, hover text, and a commit answered
from the index of its parent with the lines carried through the diff. Both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from access_site import Site, served
from fleet import git, make_repo
from scip_builder import DEF, Uploads, scip_index

from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer

GREET = "scip-python python mypkg 0.1.0 mypkg/util/greet()."
RUN = "scip-python python mypkg 0.1.0 mypkg/main/run()."

UTIL = 'def greet(name):\n    msg = "hi " + name\n    return msg\n'
MAIN = 'from mypkg.util import greet\ndef run():\n    return greet("x")\n'
APP = 'from mypkg.util import greet\ngreet("b")\n'

LIB_INDEX = scip_index(
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
APP_INDEX = scip_index([("app.py", [([0, 23, 28], GREET, 0), ([1, 0, 5], GREET, 0)], {})])


def at(line: int, start: int, end: int) -> dict[str, Any]:
    """A one-line range as the API writes it."""
    return {"start": {"line": line, "character": start}, "end": {"line": line, "character": end}}


class Repos:
    """`lib` (indexed at its first commit; its second adds a line above greet) and `app`
    (indexed; uses lib's package), mirrored where the server reads them."""

    def __init__(self, db: Database, tmp: Path) -> None:
        self.db = db
        self.tmp = tmp
        self.mirrors = Mirrors.in_data_dir(tmp / "data")
        self.uploads = Uploads(db, self.mirrors, tmp / "data" / "uploads")

    async def make(self) -> None:
        lib = self.tmp / "src" / "lib"
        self.lib_first = make_repo(lib, {"mypkg/util.py": UTIL, "mypkg/main.py": MAIN})
        (lib / "mypkg" / "util.py").write_text("# greetings\n" + UTIL)
        git("commit", "-q", "-am", "a comment above greet", cwd=lib)
        self.lib_second = git("rev-parse", "HEAD", cwd=lib)
        self.app = make_repo(self.tmp / "src" / "app", {"app.py": APP})
        syncer = Syncer(RepoRegistry(self.db), self.mirrors)
        await syncer.add(str(lib), name="lib")
        await syncer.add(str(self.tmp / "src" / "app"), name="app")
        self.lib_upload = await self.uploads.add("lib", self.lib_first, LIB_INDEX)
        self.app_upload = await self.uploads.add("app", self.app, APP_INDEX)


async def navigate(site: Site, repo: str, kind: str, **params: Any) -> dict[str, Any]:
    """One navigation request as a signed-in user; its JSON (it must be a 200)."""
    response = await site.call("other", "GET", f"/api/codeintel/{repo}/{kind}", params=params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def places(answer: dict[str, Any]) -> list[tuple[str, str, int, int, int]]:
    """(repo, path, line, start, end) of each location, in the answer's order."""
    out = []
    for loc in answer["locations"]:
        start, end = loc["range"]["start"], loc["range"]["end"]
        assert start["line"] == end["line"]
        out.append((loc["repo"], loc["path"], start["line"], start["character"], end["character"]))
    return out


async def test_definitions_references_and_hover_across_files_and_repositories(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    async with served(db, db_url, tmp_path) as site:
        repos = Repos(db, tmp_path)
        await repos.make()
        first = repos.lib_first
        main = {"commit": first, "path": "mypkg/main.py"}

        found = await navigate(site, "lib", "definitions", **main, line=2, character=12)
        assert found == {
            "repo": "lib",
            "commit": first,
            "path": "mypkg/main.py",
            "line": 2,
            "character": 12,
            "upload": {"id": repos.lib_upload.id, "commit": first},
            "adjusted": False,
            "locations": [
                {"repo": "lib", "commit": first, "path": "mypkg/util.py", "range": at(0, 4, 9)}
            ],
            "truncated": False,
            "reason": None,
        }

        refs = await navigate(site, "lib", "references", **main, line=0, character=25)
        assert places(refs) == [
            ("lib", "mypkg/main.py", 0, 23, 28),
            ("lib", "mypkg/main.py", 2, 11, 16),
            ("lib", "mypkg/util.py", 0, 4, 9),
            ("app", "app.py", 0, 23, 28),
            ("app", "app.py", 1, 0, 5),
        ]
        assert {loc["commit"] for loc in refs["locations"][3:]} == {repos.app}

        # A local symbol: answered from its own document only.
        util = {"commit": first, "path": "mypkg/util.py"}
        local = await navigate(site, "lib", "definitions", **util, line=2, character=12)
        assert places(local) == [("lib", "mypkg/util.py", 1, 4, 7)]
        local_refs = await navigate(site, "lib", "references", **util, line=1, character=5)
        assert places(local_refs) == [
            ("lib", "mypkg/util.py", 1, 4, 7),
            ("lib", "mypkg/util.py", 2, 11, 14),
        ]

        # Hover on a use: the documentation written where greet is defined.
        hover = await navigate(site, "lib", "hover", **main, line=2, character=12)
        assert (hover["contents"], hover["range"]) == ("Say hello.", at(2, 11, 16))
        bare = await navigate(site, "lib", "hover", **main, line=1, character=5)
        assert bare["contents"] is None and "no documentation" in bare["reason"]

        # app uses lib's package: its definition is found in lib's upload.
        cross = await navigate(site, "app", "definitions", path="app.py", line=1, character=2)
        assert cross["locations"] == [
            {"repo": "lib", "commit": first, "path": "mypkg/util.py", "range": at(0, 4, 9)}
        ]
        assert cross["upload"] == {"id": repos.app_upload.id, "commit": repos.app}
        cross_hover = await navigate(site, "app", "hover", path="app.py", line=1, character=2)
        assert cross_hover["contents"] == "Say hello."

        nothing = await navigate(site, "lib", "definitions", **main, line=1, character=0)
        assert nothing["locations"] == [] and "no symbol at this position" in nothing["reason"]

        rows = await db.fetch(
            "SELECT repo_name, kind, SUM(count) AS n FROM codeintel_events "
            "GROUP BY repo_name, kind ORDER BY repo_name"
        )
        assert [(r["repo_name"], r["kind"], int(r["n"])) for r in rows] == [
            ("app", "precise", 2),
            ("lib", "precise", 5),
        ]


async def test_the_commit_after_an_indexed_one_is_answered_with_lines_carried(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    async with served(db, db_url, tmp_path) as site:
        repos = Repos(db, tmp_path)
        await repos.make()
        first, second = repos.lib_first, repos.lib_second

        # HEAD is the second commit, which has no index: its parent answers, one line down.
        found = await navigate(
            site, "lib", "definitions", path="mypkg/main.py", line=2, character=12
        )
        assert found["commit"] == second and found["adjusted"] is True
        assert found["upload"] == {"id": repos.lib_upload.id, "commit": first}
        assert found["locations"] == [
            {"repo": "lib", "commit": second, "path": "mypkg/util.py", "range": at(1, 4, 9)}
        ]
        moved = await navigate(site, "lib", "references", path="mypkg/util.py", line=1, character=6)
        assert places(moved)[:3] == [
            ("lib", "mypkg/main.py", 0, 23, 28),
            ("lib", "mypkg/main.py", 2, 11, 16),
            ("lib", "mypkg/util.py", 1, 4, 9),
        ]
        local = await navigate(
            site, "lib", "definitions", path="mypkg/util.py", line=3, character=12
        )
        assert places(local) == [("lib", "mypkg/util.py", 2, 4, 7)]

        changed = await navigate(
            site, "lib", "definitions", path="mypkg/util.py", line=0, character=3
        )
        assert changed["locations"] == [] and changed["adjusted"] is True
        assert changed["reason"] == f"this line changed since the indexed commit {first[:12]}"

        unindexed = await navigate(site, "demo", "definitions", path="README", line=0, character=0)
        assert unindexed["locations"] == [] and unindexed["upload"] is None
        assert unindexed["reason"] == "no index for this commit or its 50 nearest ancestors"


async def test_bad_requests_are_refused_with_what_was_wrong(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    async with served(db, db_url, tmp_path) as site:
        ok = {"path": "README", "line": 0, "character": 0}
        unknown = await site.call("other", "GET", "/api/codeintel/nope/definitions", params=ok)
        assert unknown.status_code == 404 and "no repository named 'nope'" in unknown.text
        rev = await site.call(
            "other", "GET", "/api/codeintel/demo/hover", params={**ok, "commit": "no-such"}
        )
        assert rev.status_code == 404 and "no revision 'no-such'" in rev.text
        for bad in ({"path": "../etc/passwd"}, {"path": "/README"}, {"line": -1}, {"line": "x"}):
            response = await site.call(
                "other", "GET", "/api/codeintel/demo/references", params={**ok, **bad}
            )
            assert response.status_code == 422, (bad, response.text)
        missing = await site.call(
            "other", "GET", "/api/codeintel/demo/definitions", params={**ok, "path": "nope.py"}
        )
        assert missing.status_code == 200 and missing.json()["locations"] == []
        # The fixed routes still win over `{repo}/...`.
        job = await site.call("other", "GET", "/api/codeintel/indexes/99")
        assert job.status_code == 404 and "no index job 99" in job.text


async def test_a_popular_symbols_references_stop_at_the_limit_in_path_order(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    """A symbol used in 1,300 files (two uses each): the answer holds the first 1,000 places
    in path order and says it was cut, without the rest being needed."""
    files = {f"pkg/m{n:04}.py": "from mypkg.util import greet\ngreet()\n" for n in range(1300)}
    files["mypkg/util.py"] = UTIL
    commit = make_repo(tmp_path / "src" / "wide", files)
    mirrors = Mirrors.in_data_dir(tmp_path / "data")
    await Syncer(RepoRegistry(db), mirrors).add(str(tmp_path / "src" / "wide"), name="wide")
    documents = [("mypkg/util.py", [([0, 4, 9], GREET, DEF)], {})] + [
        (path, [([0, 23, 28], GREET, 0), ([1, 0, 5], GREET, 0)], {})
        for path in files
        if path.startswith("pkg/")
    ]
    await Uploads(db, mirrors, tmp_path / "data" / "uploads").add(
        "wide", commit, scip_index(documents)
    )
    async with served(db, db_url, tmp_path) as site:
        refs = await navigate(
            site, "wide", "references", commit=commit, path="mypkg/util.py", line=0, character=5
        )
        defs = await navigate(
            site, "wide", "definitions", commit=commit, path="pkg/m0007.py", line=1, character=2
        )
    assert refs["truncated"] is True
    got = places(refs)
    assert len(got) == 1000
    # Path order: the definition's file first, then the uses up to the limit.
    uses = [
        ("wide", f"pkg/m{n:04}.py", line, start, end)
        for n in range(500)
        for line, start, end in ((0, 23, 28), (1, 0, 5))
    ]
    assert got == [("wide", "mypkg/util.py", 0, 4, 9), *uses[:999]]
    assert places(defs) == [("wide", "mypkg/util.py", 0, 4, 9)]
    assert defs["truncated"] is False
