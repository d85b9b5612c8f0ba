"""Batch specs built to make offload work without end are refused, each naming its limit.

Every limit of offload/batches/spec/limits.py on the parse itself, the worker processes that
parse off the event loop (deadline, memory, a worker that hangs or dies), the submission body,
the request body limit of the whole API, the resolver's, and `offload batch validate`.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from access_site import Site, served
from batchspecs import minimal
from fleet import git

from offload.batches.resolver import SPEC as RESOLUTIONS
from offload.batches.resolver import Resolver
from offload.batches.service import BatchService
from offload.batches.spec import limits as limits
from offload.batches.spec.limits import SpecLimitExceeded
from offload.batches.spec.model import SpecErrors
from offload.batches.spec.reader import parse_spec
from offload.batches.spec.submission import SubmissionError, read_submission
from offload.batches.spec.workers import SpecWorkers, WorkersBusy
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.queue.consumer import JobFailed
from offload.queue.store import SqlQueueStore
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.syncer import Syncer
from offload.secrets.cipher import Cipher, new_key
from offload.secrets.store import Secrets
from offload.serving import settle_heap

TAIL = """\
steps:
  - run: "true"
    container: busybox
changesetTemplate:
  title: t
  branch: b
  commit:
    message: m
"""


def laughs() -> str:
    """The classic: nine levels of nine aliases each, 366 bytes, 387 million strings."""
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return "name: x\n" + "\n".join(levels) + "\non: *a8\n"


def merge_bomb() -> str:
    """A mapping of 1,000 keys merged into 200 others (<<): 200,000 values."""
    keys = ", ".join(f"k{i}: v" for i in range(1000))
    return f"name: x\na: &a {{{keys}}}\n" + "".join(f"b{j}: {{<<: *a}}\n" for j in range(200))


def on_entries(n: int, entry: str = "{repository: demo}") -> str:
    return f"name: x\non: [{', '.join([entry] * n)}]\n{TAIL}"


# (name, spec, status, what the message names, line of the place it names)
BOMBS = [
    ("billion laughs", laughs(), 422, "MAX_NODES", None),
    ("merge keys", merge_bomb(), 422, "MAX_NODES", None),
    ("aliases in on", f"name: x\nr: &r {{repository: a}}\non: [{', '.join(['*r'] * 20_000)}]", 422,
     "MAX_ON", 3),
    ("recursive alias", "name: x\non: &a [*a]\n", 422, "cannot be recursive", 2),
    ("deep brackets", "name: x\non: " + "[" * 100_000 + "]" * 100_000, 422, "MAX_DEPTH", 2),
    ("deep blocks", "name: x\non:\n" + "".join(" " * i + "-\n" for i in range(1, 200)), 422,
     "MAX_DEPTH", 66),
    ("deep aliases", "name: x\na0: &a0 [1]\n" + "".join(
        f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 100)), 422, "MAX_DEPTH", 64),
    ("100,000-digit integer", "name: x\nversion: " + "9" * 100_000 + "\n", 422,
     "MAX_INTEGER_DIGITS", 2),
    ("tagged integer", "name: x\nversion: !!int '" + "9" * 100_000 + "'\n", 422,
     "MAX_INTEGER_DIGITS", 2),
    ("NUL", "name: x\ndescription: a\x00b\n", 422, "U+0000", 2),
    ("binary garbage", "name: x\n" + "".join(map(chr, range(1, 32))), 422, "U+0001", 2),
    ("lone surrogate", "name: x\ndescription: \ud800\n", 422, "U+D800", 2),
    ("2 MB", "name: x\non:\n" + "  - repository: github.com/acme/r\n" * 60_000, 413,
     "MAX_SPEC_CHARS", None),
    ("10,001 on entries", on_entries(10_001), 422, "MAX_ON", 2),
    ("101 queries", on_entries(101, "{repositoriesMatchingQuery: file:README}"), 422,
     "MAX_ON_QUERIES", None),
    ("101 steps", "name: x\non: [{repository: demo}]\nsteps:\n"
     + "  - {run: 'true', container: busybox}\n" * 101, 422, "MAX_STEPS", None),
    ("101 workspace rules", "name: x\nworkspaces:\n"
     + "  - {rootAtLocationOf: go.mod}\n" * 101, 422, "MAX_WORKSPACE_RULES", None),
    ("10,001 imports", "name: x\nimportChangesets:\n  - repository: demo\n    externalIDs: ["
     + ", ".join(map(str, range(10_001))) + "]\n", 422, "MAX_IMPORTED_CHANGESETS", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "text", "status", "names", "line"), BOMBS, ids=[b[0] for b in BOMBS]
)
def test_each_limit_is_refused_naming_it_and_where(
    name: str, text: str, status: int, names: str, line: int | None
) -> None:
    started = time.monotonic()
    with pytest.raises(SpecLimitExceeded) as raised:
        parse_spec(text, source="bomb.yaml")
    took = time.monotonic() - started
    (error,) = raised.value.errors
    assert raised.value.status == status
    assert names in error.message, error
    assert error.source == "bomb.yaml"
    if line is not None:
        assert error.line == line, error
    if name != "10,001 on entries":  # composing 10,000 entries takes its time
        # Refused while it is read, not once it was expanded (a budget for a loaded machine).
        assert took < 3.0, f"{name} took {took:.1f}s to refuse"


def test_specs_at_the_limits_are_valid() -> None:
    steps = "".join(f"  - {{run: 'echo {i}', container: busybox}}\n" for i in range(100))
    entries = ", ".join(["{repository: demo}"] * limits.MAX_ON)
    template = TAIL.split("\n", 3)[3]
    spec = parse_spec(f"name: x\non: [{entries}]\nsteps:\n{steps}{template}")
    assert len(spec.on) == limits.MAX_ON and len(spec.steps) == limits.MAX_STEPS
    # Within the limits, what is wrong is the schema's to say, as before.
    for text in (
        "name: x\nversion: " + "9" * limits.MAX_INTEGER_DIGITS + "\n",
        "name: x\non: " + "[" * 60 + "]" * 60 + "\n",
        'name: x\r\ndescription: "\ttab"\r\non: [{repo: x}]\r\n',
    ):
        with pytest.raises(SpecErrors) as raised:
            parse_spec(text)
        assert not isinstance(raised.value, SpecLimitExceeded), raised.value


def test_problems_past_the_first_hundred_are_counted() -> None:
    with pytest.raises(SpecErrors) as raised:
        parse_spec(on_entries(300, "{repo: demo}"))
    errors = raised.value.errors
    assert len(errors) == limits.MAX_ERRORS + 1
    assert errors[-1].message == "... and 200 more problems (MAX_ERRORS: 100)"


# -- the worker processes ------------------------------------------------------------------


@pytest.fixture
def workers() -> Iterator[SpecWorkers]:
    made = SpecWorkers(1, deadline=1.0)
    yield made
    made.close()


async def test_a_parse_runs_off_the_event_loop(workers: SpecWorkers) -> None:
    await workers.parse(minimal("warm"))  # the worker starts
    slow = on_entries(limits.MAX_ON)  # a valid spec at the limit: seconds of pure Python
    lags: list[float] = []

    async def tick() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - before - 0.01)

    roomy = SpecWorkers(1)  # the default deadline
    # As the server and the worker do once started (serving.settle_heap): otherwise the
    # collector's full pass over this large process, set off by any allocation, is a pause of
    # its own that would be counted here.
    settle_heap()
    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        spec = await roomy.parse(slow, "slow.yaml")
    finally:
        roomy.close()
        ticker.cancel()
        gc.unfreeze()
    took = time.monotonic() - started
    assert len(spec.on) == limits.MAX_ON
    assert took > 0.3, "not slow enough to tell"
    assert max(lags) < 0.1, f"the event loop stalled {max(lags) * 1000:.0f} ms during a parse"


async def test_a_parse_past_its_deadline_is_refused_naming_it(workers: SpecWorkers) -> None:
    before = await _pid(workers)
    with pytest.raises(SpecLimitExceeded) as raised:
        # (Not the spec of the test above: a worker's parse is remembered.)
        await workers.parse(on_entries(limits.MAX_ON).replace("name: x", "name: y"), "slow.yaml")
    assert raised.value.status == 422
    assert "longer than 1s" in str(raised.value) and "PARSE_DEADLINE" in str(raised.value)
    # Its own alarm stopped the parse: the same worker goes on.
    assert await _pid(workers) == before
    assert (await workers.parse(minimal("after"))).name == "after"


async def test_a_worker_that_hangs_or_dies_is_replaced(workers: SpecWorkers) -> None:
    first = await _pid(workers)
    with workers.admitted(), pytest.raises(SpecLimitExceeded) as raised:
        # Blocked in C, where its alarm cannot stop it.
        await workers.run(signal.sigwait, [signal.SIGUSR1])
    assert "PARSE_DEADLINE" in str(raised.value)
    second = await _pid(workers)
    assert second != first and not _exists(first)
    with workers.admitted(), pytest.raises(SpecLimitExceeded) as raised:
        await workers.run(os._exit, 3)
    assert "exit code 3" in str(raised.value)
    assert await _pid(workers) not in (first, second)


async def test_a_parse_that_needs_too_much_memory_is_refused(workers: SpecWorkers) -> None:
    with workers.admitted(), pytest.raises(SpecLimitExceeded) as raised:
        await workers.run(bytearray, 2 * limits.PARSE_MEMORY)
    assert raised.value.status == 413 and "PARSE_MEMORY" in str(raised.value)


async def test_parses_beyond_the_waiting_limit_are_told_to_come_back() -> None:
    workers = SpecWorkers(1, max_waiting=2)
    try:
        with workers.admitted(), workers.admitted():
            with pytest.raises(WorkersBusy, match="MAX_WAITING_PARSES"):
                await workers.parse(minimal("third"))
        assert (await workers.parse(minimal("later"))).name == "later"
    finally:
        workers.close()


async def test_a_normal_spec_costs_a_few_ms_more_in_a_worker(workers: SpecWorkers) -> None:
    text = minimal("usual")
    await workers.run(parse_spec, text)
    here, there = [], []
    for _ in range(30):
        started = time.perf_counter()
        parse_spec(text + "\n")  # not remembered: parsed each time
        here.append(time.perf_counter() - started)
        started = time.perf_counter()
        with workers.admitted():
            await workers.run(parse_spec, text + "\n")
        there.append(time.perf_counter() - started)
    extra = statistics.median(there) - statistics.median(here)
    assert extra < 0.02, f"a parse in a worker costs {extra * 1000:.1f} ms more"


async def _pid(workers: SpecWorkers) -> int:
    with workers.admitted():
        return await workers.run(os.getpid)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the submission body -------------------------------------------------------------------


def _body(**fields: object) -> bytes:
    return json.dumps({"spec": minimal("sent"), **fields}).encode()


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"\xff\xfe\x00garbage" * 10, 400, "not UTF-8"),
        (b'{"spec": "name: x"', 400, "not JSON"),
        (b'{"spec": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 422, "MAX_DEPTH"),
        (b'{"spec": "name: x", "local": ' + b"1" * 100_000 + b"}", 422, "MAX_INTEGER_DIGITS"),
        (b"[]", 422, "JSON object"),
        (_body(user="olive"), 422, "extra_forbidden"),
        (_body(files={"a\x01b": ""}), 422, "control character U+0001"),
        (_body(files={"fix.sh": "not base64!"}), 400, "not base64"),
        (
            _body(files={"big": base64.b64encode(b"x" * (limits.MAX_FILES_BYTES + 1)).decode()}),
            413,
            "MAX_FILES_BYTES",
        ),
    ],
    ids=[
        "binary",
        "truncated",
        "deep",
        "long integer",
        "a list",
        "unknown field",
        "control",
        "base64",
        "files",
    ],
)
def test_a_body_that_is_not_a_submission_is_refused(body: bytes, status: int, says: str) -> None:
    with pytest.raises(SubmissionError) as raised:
        read_submission(body)
    assert raised.value.status == status
    assert says in json.dumps(raised.value.detail), raised.value.detail


def test_a_submission_is_read_with_its_files_and_spec() -> None:
    read = read_submission(_body(files={"fix.sh": base64.b64encode(b"echo\n").decode()}))
    assert read.spec is not None and read.spec.name == "sent" and read.errors is None
    assert read.files == {"fix.sh": b"echo\n"}
    with pytest.raises(SpecLimitExceeded) as raised:
        read_submission(_body(spec="name: x\n" + "#" * limits.MAX_SPEC_CHARS))
    assert raised.value.status == 413 and "MAX_SPEC_CHARS" in str(raised.value)
    bad = read_submission(_body(spec=laughs()))
    assert isinstance(bad.errors, SpecLimitExceeded) and "MAX_NODES" in str(bad.errors)


# -- request bodies, for the whole API -----------------------------------------------------


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path, request_body_limit=64 * 1024) as running:
        yield running


JSON = {"Content-Type": "application/json"}


async def _chunks(size: int) -> AsyncIterator[bytes]:
    for _ in range(0, size, 65536):
        yield b" " * 65536


async def test_request_bodies_over_their_limit_are_refused_before_they_are_read(
    site: Site,
) -> None:
    big = json.dumps({"repo": "demo", "command": ["true"], "env": ["X=" + "x" * 70_000]})
    declared = await site.call("owner", "POST", "/api/jobs", content=big, headers=JSON)
    assert declared.status_code == 413
    assert "OFFLOAD_REQUEST_BODY_LIMIT" in declared.json()["detail"]
    assert "64 KiB" in declared.json()["detail"] or "65,536 bytes" in declared.json()["detail"]
    streamed = await site.call(
        "owner", "POST", "/api/jobs", content=_chunks(200_000),
        headers=JSON,
    )  # fmt: skip
    assert streamed.status_code == 413, streamed.text
    # Even before who is asking is known.
    anonymous = await site.call("anonymous", "POST", "/api/jobs", content=big, headers=JSON)
    assert anonymous.status_code == 413
    # A spec with its mounted files may be larger; the executors' log routes larger still.
    spec = await site.call("owner", "POST", "/api/batches/specs", content=_body(x="y" * 70_000))
    assert spec.status_code == 422 and "extra_forbidden" in spec.text
    huge = b"x" * (limits.MAX_SUBMISSION_BYTES + 1)
    refused = await site.call("owner", "POST", "/api/batches/specs", content=huge)
    assert refused.status_code == 413 and "MAX_SUBMISSION_BYTES" in refused.text
    log = await site.call("anonymous", "POST", "/.executors/queue/default/heartbeat", content=big)
    assert log.status_code != 413
    # What a user may still send: a job with 60 KB of environment.
    fits = json.dumps({"repo": "demo", "command": ["true"], "env": ["X=" + "x" * 60_000]})
    made = await site.call("owner", "POST", "/api/jobs", content=fits, headers=JSON)
    assert made.status_code == 201, made.text


async def test_a_spec_over_a_limit_is_answered_with_its_place(site: Site) -> None:
    answer = await site.call("owner", "POST", "/api/batches/specs", json={"spec": laughs()})
    assert answer.status_code == 422
    (error,) = answer.json()["errors"]
    assert "MAX_NODES" in error["message"] and error["line"] == 7  # a5: 59,049 x 9
    sized = await site.call(
        "owner", "POST", "/api/batches/specs", json={"spec": "#" * (limits.MAX_SPEC_CHARS + 1)}
    )
    assert sized.status_code == 413 and "MAX_SPEC_CHARS" in sized.json()["detail"]
    garbage = await site.call("owner", "POST", "/api/batches/specs", content=os.urandom(4096))
    assert garbage.status_code == 400 and "not UTF-8" in garbage.json()["detail"]
    made = await site.call("owner", "POST", "/api/batches/specs", json={"spec": minimal("ok")})
    assert made.status_code == 201, made.text


# -- resolution ----------------------------------------------------------------------------


async def test_resolution_over_its_workspace_limit_or_deadline_fails_naming_it(
    db: Database, tmp_path: Path
) -> None:
    source = tmp_path / "mono"
    source.mkdir()
    git("init", "-q", "-b", "main", cwd=source)
    for n in range(4):
        (source / f"svc{n}").mkdir()
        (source / f"svc{n}" / "go.mod").write_text("module x\n")
    git("add", ".", cwd=source)
    git("commit", "-q", "-m", "services", cwd=source)
    registry = RepoRegistry(db)
    mirrors = Mirrors.in_data_dir(tmp_path / "data")
    await Syncer(registry, mirrors).add(str(source), name="mono")
    spec = minimal("split").replace("steps:", "workspaces:\n  - rootAtLocationOf: go.mod\nsteps:")
    spec = spec.replace("repository: demo", "repository: mono")
    await BatchService(db).submit("alice", spec)
    queue = SqlQueueStore(db, RESOLUTIONS)
    (record,) = await queue.dequeue("test")
    secrets = Secrets(db, Cipher(new_key()))

    def resolver(**given: float) -> Resolver:
        return Resolver(db, registry, mirrors, secrets=secrets, **given)  # type: ignore[arg-type]

    with pytest.raises(JobFailed, match=r"more than 3 workspaces.*MAX_WORKSPACES"):
        await resolver(max_workspaces=3).handle(record)
    with pytest.raises(JobFailed, match=r"longer than 0s.*RESOLUTION_DEADLINE"):
        await resolver(deadline=0).handle(record)
    assert len(await resolver(max_workspaces=4).workspaces(parse_spec(spec))) == 4


# -- the CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (laughs().encode(), "MAX_NODES"),
        (b"name: x\non: " + b"[" * 10_000, "MAX_DEPTH"),
        (b"name: x\nversion: " + b"9" * 100_000 + b"\n", "MAX_INTEGER_DIGITS"),
        (b"name: x\n\x01\x02\x03", "U+0001"),
        (b"name: x\n" + bytes(range(128, 256)), "not UTF-8"),
        (b"name: x\n" + b"#" * (4 * limits.MAX_SPEC_CHARS + 1), "MAX_SPEC_CHARS"),
    ],
    ids=["laughs", "deep", "integer", "control", "binary", "size"],
)
def test_batch_validate_names_the_limit_without_a_traceback(
    tmp_path: Path, content: bytes, says: str
) -> None:
    (tmp_path / "bomb.yaml").write_bytes(content)
    checked = subprocess.run(
        [sys.executable, "-m", "offload", "batch", "validate", "-f", "bomb.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 1, checked.stderr
    assert says in checked.stderr and "bomb.yaml:" in checked.stderr
    assert "Traceback" not in checked.stderr + checked.stdout


def test_the_limits_leave_room_for_45000_workspaces_and_mounted_files() -> None:
    # The batch-scale target (45,000 workspaces for one spec) and the CLI's 16 MiB of mounts.
    assert limits.MAX_WORKSPACES >= 50_000
    room = limits.MAX_FILES_BYTES * 4 // 3 + 6 * limits.MAX_SPEC_CHARS  # base64, JSON escapes
    assert limits.MAX_SUBMISSION_BYTES >= room
