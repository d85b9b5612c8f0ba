"""Schemathesis against a served offload, over every operation of its OpenAPI document.

As a site admin on SQLite and PostgreSQL (where a NUL byte that reaches the database is an
error), and as a user who is not one: no generated request, valid or not, may get a 5xx,
a status the document does not list for its operation, or a content type or JSON body other
than the document describes. Each run has a site of its own, so whatever it deletes, revokes or
rotates cannot spill into another; its credentials come from the site's database
(schemathesis_hooks.py), so revoking its own token does not blind the rest of the run.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from access_site import served

from offload.db.base import Database
from offload.db.url import DatabaseURL

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)
# Cases per operation in each random phase (the coverage phase adds its boundary cases), and a
# fixed seed: the same run every time, and the three runs within about three minutes on two
# busy cores.
MAX_EXAMPLES = 8
SEED = 20260
# Long polls are shortened by the hooks; anything slower than this is a stall.
REQUEST_TIMEOUT = 20


async def schemathesis(schema: Path, url: str, db_url: DatabaseURL, username: str) -> str:
    """`schemathesis run` against `url` as `username`; its exit status and report."""
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", str(schema)),
        *("--url", url, "--checks", CHECKS),
        *("--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)),
        *("--request-timeout", str(REQUEST_TIMEOUT), "--generation-database", "none"),
        "--no-color",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "OFFLOAD_FUZZ_DATABASE_URL": db_url.raw,
        "OFFLOAD_FUZZ_USERNAME": username,
    }
    # Its working directory keeps the crashes it remembers: a fresh one per run.
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=schema.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return f"exit status {process.returncode}\n{out.decode(errors='replace')}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("db_url", "username"),
    # A site admin reaches every operation on both databases; a user who is not one (olive,
    # an admin of organization acme) takes the paths of access control, on PostgreSQL.
    [("sqlite", "root"), ("postgresql", "root"), ("postgresql", "olive")],
    indirect=["db_url"],
)
async def test_schemathesis_finds_no_server_error_and_nothing_undocumented(
    db: Database,
    db_url: DatabaseURL,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    username: str,
) -> None:
    # A repository source that is a relative path is resolved in the server's working
    # directory: the fuzzer's "." must not mirror the checkout the tests run in.
    monkeypatch.chdir(tmp_path)
    async with served(db, db_url, tmp_path) as site:
        answer = await site.call("admin", "GET", "/api/openapi.json")
        assert answer.status_code == 200, answer.text
        operations = sum(len(methods) for methods in answer.json()["paths"].values())
        schema = tmp_path / "fuzz" / "openapi.json"
        schema.parent.mkdir()
        schema.write_bytes(answer.content)
        report = await schemathesis(schema, site.url, db_url, username)
    assert report.startswith("exit status 0\n"), report[-30_000:]
    assert f"Tested: {operations}" in report, report[-5_000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", report)
    assert cases is not None, report[-5_000:]
    # Not a vacuous run: every operation was tried many times, and every case passed.
    assert int(cases[1]) >= 10 * operations, cases[0]
    assert cases[1] == cases[2], cases[0]
