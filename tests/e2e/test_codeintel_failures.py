"""Auto-indexing when it goes wrong, end to end: an indexer that fails in one repository, and
corrupt, truncated and oversized uploads, each failing alone with its message while the other
repositories are indexed and the server keeps serving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fleet import Fleet
from indexfleet import SHAPES, IndexFleet, serving_fleet, tarballs

from offload.db.url import DatabaseURL

pytestmark = pytest.mark.slow


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    with serving_fleet(db_url, tmp_path) as serving:
        yield serving


# A stored configuration whose indexer fails the way a broken build does.
FAILING = """index_jobs:
  - root: ""
    indexer: sourcegraph/scip-python
    local_steps:
      - echo "indexing failed, cannot resolve the imports of shapes" >&2
      - exit 3
    indexer_args: [scip-python, index, .]
"""
# What the indexer step writes to index.scip instead of an index.
GARBAGE = """index_jobs:
  - indexer: sourcegraph/scip-python
    local_steps:
      - printf 'this is not a SCIP index at all, just words' > index.scip
"""
# A real index, cut in half.
TRUNCATED = """index_jobs:
  - indexer: sourcegraph/scip-python
    local_steps:
      - scip-python index . --project-name shapes --project-version 0.1.0
      - head -c $(( $(wc -c < index.scip) / 2 )) index.scip > half.scip
      - mv half.scip index.scip
"""
# More than OFFLOAD_CODEINTEL_UPLOAD_LIMIT (64 KiB here).
OVERSIZED = """index_jobs:
  - indexer: sourcegraph/scip-python
    local_steps:
      - head -c 200000 /dev/zero > index.scip
"""


def test_failing_indexers_and_bad_uploads_fail_alone(fleet: Fleet, tmp_path: Path) -> None:
    started = time.monotonic()
    images = tarballs(["scip-python"])
    index = IndexFleet(fleet, tmp_path)
    configs = {"broken": FAILING, "garbage": GARBAGE, "truncated": TRUNCATED, "big": OVERSIZED}
    for name in ["shapes", *configs]:
        index.add_repo(name, SHAPES)
    for name, text in configs.items():
        stored = index.cli("config", "set", name, "-f", "-", stdin=text)
        assert stored.returncode == 0, stored.stderr
    index.start_executor("indexer", images)
    index.start_worker()

    jobs = {j["repo"]: j for j in index.wait_jobs(5, timeout=600)}
    assert {r: j["state"] for r, j in jobs.items()} == {
        "shapes": "completed",
        "broken": "failed",
        "garbage": "completed",
        "truncated": "completed",
        "big": "failed",
    }, jobs

    # The failing indexer's own words, through the CLI.
    shown = index.cli("indexes", "show", str(jobs["broken"]["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "indexing failed, cannot resolve the imports of shapes" in shown.stdout
    assert "(exit 3)" in shown.stdout
    assert "failed" in shown.stdout.splitlines()[0]

    # The oversized index is refused by the server, and the job says so.
    big = jobs["big"]["failureMessage"]
    assert "the server refused the upload (413)" in big, big
    assert "200000" in index.cli("indexes", "show", str(jobs["big"]["id"])).stdout

    uploads = {u.repo_name: u for u in index.wait_uploads(3, timeout=120)}
    assert {r: u.state for r, u in uploads.items()} == {
        "shapes": "completed",
        "garbage": "failed",
        "truncated": "failed",
    }
    for name in ("garbage", "truncated"):
        message = uploads[name].failure_message or ""
        assert f"the index of upload {uploads[name].id} cannot be read: " in message, message
    # What a site admin sees of them.
    listed = index.cli("uploads", "list", "--state", "failed")
    assert listed.returncode == 0, listed.stderr
    assert sorted(line.split()[0] for line in listed.stdout.splitlines() if line[0] == "#") == (
        sorted(f"#{uploads[name].id}" for name in ("garbage", "truncated"))
    )
    assert listed.stdout.count("cannot be read: ") == 2

    # The server still serves, and the good repository's navigation still answers.
    assert httpx.get(f"{fleet.base}/healthz", timeout=10).status_code == 200
    assert index.navigate("shapes", "shapes/report.py:5:20", "definitions") == [
        "shapes/area.py:1:5"
    ]
    print(f"failing indexers and bad uploads in {time.monotonic() - started:.1f} s")
