"""`offload codeintel def` and `refs` in a real process against a real server, over uploads
processed by the real consumer: 1-based path:line:col lines, another repository's with its
name and commit, and exit status 1 with the reason when nothing is indexed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import Fleet, make_repo
from scip_builder import DEF, Uploads, scip_index

from offload.db.connect import open_database
from offload.db.url import DatabaseURL
from offload.repos.mirror import Mirrors

GREET = "scip-python python mypkg 0.1.0 mypkg/util/greet()."
UTIL = "def greet(name):\n    return name\n"
MAIN = 'from mypkg.util import greet\nprint(greet("x"))\n'


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(db_url, tmp_path / "data")
    fleet.start_server()
    yield fleet
    fleet.stop_all()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_def_and_refs_print_compiler_style_positions(
    fleet: Fleet, db_url: DatabaseURL, tmp_path: Path
) -> None:
    lib = make_repo(tmp_path / "src" / "lib", {"mypkg/util.py": UTIL, "mypkg/main.py": MAIN})
    app = make_repo(tmp_path / "src" / "app", {"app.py": MAIN})
    make_repo(tmp_path / "src" / "plain", {"README": "x\n"})
    for name in ("lib", "app", "plain"):
        added = fleet.offload("repos", "add", str(tmp_path / "src" / name))
        assert added.returncode == 0, added.stderr
    db = await open_database(db_url)
    try:
        uploads = Uploads(db, Mirrors.in_data_dir(fleet.data_dir), fleet.data_dir / "uploads")
        await uploads.add(
            "lib",
            lib,
            scip_index(
                [
                    ("mypkg/util.py", [([0, 4, 9], GREET, DEF)], {}),
                    ("mypkg/main.py", [([0, 23, 28], GREET, 0), ([1, 6, 11], GREET, 0)], {}),
                ]
            ),
        )
        await uploads.add("app", app, scip_index([("app.py", [([1, 6, 11], GREET, 0)], {})]))
    finally:
        await db.close()

    found = fleet.offload("codeintel", "def", "lib", "mypkg/main.py:2:8")
    assert (found.returncode, found.stdout) == (0, "mypkg/util.py:1:5\n"), found.stderr
    cross = fleet.offload("codeintel", "def", "app", "app.py:2:7", "--commit", app)
    assert cross.stdout == f"lib@{lib[:12]} mypkg/util.py:1:5\n", cross.stderr
    refs = fleet.offload("codeintel", "refs", "lib", "mypkg/util.py:1:5")
    assert refs.stdout == (
        f"mypkg/main.py:1:24\nmypkg/main.py:2:7\nmypkg/util.py:1:5\napp@{app[:12]} app.py:2:7\n"
    ), refs.stderr
    as_json = json.loads(
        fleet.offload("codeintel", "def", "lib", "mypkg/main.py:2:8", "--json").stdout
    )
    assert as_json["locations"][0]["range"]["start"] == {"line": 0, "character": 4}

    nothing = fleet.offload("codeintel", "def", "plain", "README:1:1")
    assert (nothing.returncode, nothing.stdout) == (1, "")
    assert "no index for this commit or its 50 nearest ancestors" in nothing.stderr
    bad = fleet.offload("codeintel", "refs", "lib", "mypkg/main.py:0:3")
    assert bad.returncode == 2 and "1-based line and column" in bad.stderr
