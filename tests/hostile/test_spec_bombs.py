"""Hostile batch specs against a real server: it stays responsive and small, and no running
job is handed to another executor because the server stalled (issue 12, acceptance c).

While an executor runs a job, 20 specs built to make the server work without end are posted:
anchor bombs, deep nesting, 10,000s of `on` entries, 50 MB bodies, a 100,000-digit integer,
binary garbage. `/healthz` is probed every 100 ms throughout and must answer each probe within
250 ms; the server's peak RSS must stay under 500 MB; the job must complete once, never reset;
every post must be refused with a 4xx that names the limit it passed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleet import Fleet, make_repo, spawn

from offload.db.url import DatabaseURL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces"),
]

MB = 1000 * 1000
TAIL = "steps:\n  - run: 'true'\n    container: busybox\n"
TEMPLATE = "changesetTemplate: {title: t, branch: b, commit: {message: m}}\n"


@dataclass
class Attack:
    """One hostile request, and what its answer must name."""

    name: str
    request: dict[str, Any]
    names: str  # a regular expression the answer's text must match
    answer: httpx.Response | None = None
    error: str = ""
    started: float = 0
    ended: float = 0


def spec(text: str) -> dict[str, Any]:
    return raw(json.dumps({"spec": text}).encode())


def raw(body: bytes | Iterator[bytes]) -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": "application/json"}}


def chunks(size: int) -> Iterator[bytes]:
    for _ in range(0, size, 1 << 16):
        yield b" " * (1 << 16)


def attacks() -> list[Attack]:
    """The 20 hostile posts."""
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    laughs = "name: x\n" + "\n".join(levels) + "\non: *a8\n"
    merged = ", ".join(f"k{i}: v" for i in range(1000))
    merge = f"name: x\na: &a {{{merged}}}\n" + "".join(f"b{j}: {{<<: *a}}\n" for j in range(200))
    repo = "{repository: github.com/acme/repository}"
    query = "{repositoriesMatchingQuery: file:README}"
    return [
        Attack("billion laughs", spec(laughs), "MAX_NODES"),
        Attack("merge-key bomb", spec(merge), "MAX_NODES"),
        Attack(
            "100,000 aliases in on",
            spec(f"name: x\nr: &r {repo}\non: [{', '.join(['*r'] * 100_000)}]\n"),
            "MAX_ON",
        ),
        Attack("recursive alias", spec("name: x\non: &a [*a, *a]\n"), "recursive"),
        Attack("deep brackets", spec("name: x\non: " + "[" * 200_000), "MAX_DEPTH"),
        Attack(
            "deep blocks",
            spec("name: x\non:\n" + "".join(" " * i + "-\n" for i in range(1, 400))),
            "MAX_DEPTH",
        ),
        Attack(
            "deep aliases",
            spec(
                "name: x\na0: &a0 [1]\n"
                + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 999))
            ),
            "MAX_DEPTH",
        ),
        Attack(
            "100,000 on entries (2 MB)",
            spec("name: x\non:\n" + "".join(f"  - repository: r{i}\n" for i in range(100_000))),
            "MAX_SPEC_CHARS",
        ),
        Attack(
            "10,001 on entries",
            spec(f"name: x\non: [{', '.join([repo] * 10_001)}]\n{TAIL}{TEMPLATE}"),
            "MAX_ON",
        ),
        Attack("100,000-digit integer", spec("name: x\nversion: " + "9" * 100_000), "MAX_INTEGER"),
        Attack(
            "100,000-digit integer in JSON",
            raw(b'{"spec": "name: x", "local": ' + b"9" * 100_000 + b"}"),
            "MAX_INTEGER_DIGITS",
        ),
        Attack("binary garbage body", raw(os.urandom(256 * 1024)), "not UTF-8"),
        Attack(
            "binary garbage in the spec",
            spec("name: x\n" + "".join(map(chr, range(1, 32))) * 1000),
            r"control character U\+0001",
        ),
        Attack("50 MB body", raw(b" " * 50 * MB), r"MAX_SUBMISSION_BYTES"),
        Attack("50 MB chunked body", raw(chunks(50 * MB)), r"MAX_SUBMISSION_BYTES"),
        Attack("deep JSON", raw(b'{"spec": ' + b"[" * 1_000_000 + b"}"), "MAX_DEPTH"),
        Attack(
            "101 steps",
            spec(
                "name: x\non: [{repository: demo}]\nsteps:\n" + "  - {run: x, container: y}\n" * 101
            ),
            "MAX_STEPS",
        ),
        Attack(
            "101 queries",
            spec(f"name: x\non: [{', '.join([query] * 101)}]\n{TAIL}{TEMPLATE}"),
            "MAX_ON_QUERIES",
        ),
        Attack(
            "17 MB of mounted files",
            raw(
                json.dumps(
                    {
                        "spec": f"name: x\non: [{repo}]\n{TAIL}{TEMPLATE}",
                        "files": {"blob": base64.b64encode(b"\0" * 17 * MB).decode()},
                    }
                ).encode()
            ),
            "MAX_FILES_BYTES",
        ),
        Attack(
            "a lone surrogate",
            raw(b'{"spec": "name: x\\ndescription: \\ud800\\n"}'),
            r"U\+D800|unicode|surrogate",
        ),
    ]


# GET /healthz every 100 ms, from a process of its own (the test's threads that send 50 MB
# share a GIL it must not wait for): one line per probe, "started took status".
PROBE = """
import sys, time, httpx
with httpx.Client(base_url=sys.argv[1], timeout=5) as client:
    tick = time.monotonic()
    while True:
        started = time.monotonic()
        try:
            status = client.get("/healthz").status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        print(started, time.monotonic() - started, status, flush=True)
        tick += 0.1
        time.sleep(max(tick - time.monotonic(), 0))
"""


@dataclass
class Probe:
    """The /healthz prober's process and what it measured."""

    url: str
    took: list[float] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROBE, self.url], stdout=subprocess.PIPE, text=True
        )

    def end(self) -> None:
        """Stop probing; read what was measured."""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        for line in out.splitlines():
            started, took, status = line.split()
            self.at.append(float(started))
            self.took.append(float(took))
            if status != "200":
                self.failures.append(f"at {started}: {status}")


@dataclass
class Memory:
    """The peak resident memory of a process and its children, sampled every 50 ms."""

    pid: int
    peaks: dict[int, int] = field(default_factory=dict)  # pid: VmHWM in kB
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in [self.pid, *_children(self.pid)]:
                peak = _status(pid, "VmHWM")
                if peak is not None:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), peak)
            time.sleep(0.05)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):  # a thread's children are its own
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _status(pid: int, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found[1]) if found else None


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(db_url, tmp_path / "data")
    make_repo(tmp_path / "src" / "demo", {"README": "hello\n"})
    fleet.start_server()
    added = fleet.offload("repos", "add", str(tmp_path / "src" / "demo"), "--name", "demo")
    assert added.returncode == 0, added.stderr
    yield fleet
    fleet.stop_all()


def test_hostile_specs_neither_stall_the_server_nor_reset_a_running_job(fleet: Fleet) -> None:
    fleet.start_executor("exec-1", slots=1)
    # The resetter hands a job to another executor once its heartbeats stop reaching the
    # database, as they would while the server's event loop is stalled.
    resetter = spawn(
        "worker",
        ["worker", "--job", "queues.resetter"],
        {**fleet.env, "OFFLOAD_RESETTER_INTERVAL": "1s"},
    )
    try:
        job_id = fleet.submit("demo", ["sh", "-c", "echo started; sleep 30; echo finished"])
        fleet.wait_state(job_id, {"processing"})
        token = fleet.user("mallory")
        posts = attacks()
        assert len(posts) == 20
        assert fleet.server is not None
        memory = Memory(fleet.server.popen.pid)
        watcher = threading.Thread(target=memory.run)
        watcher.start()
        probe = Probe(fleet.base)
        time.sleep(0.5)
        try:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda attack: _post(fleet, token, attack), posts))
            time.sleep(0.5)
        finally:
            probe.end()
            memory.stop.set()
            watcher.join()
        during = fleet.job(job_id)
        job = fleet.wait_state(job_id, {"completed", "failed", "errored"}, timeout=120)
    finally:
        resetter.stop()

    for attack in posts:
        assert attack.answer is not None, f"{attack.name}: {attack.error}"
        text = attack.answer.text
        assert 400 <= attack.answer.status_code < 500, (attack.name, attack.answer.status_code)
        assert re.search(attack.names, text), f"{attack.name}: {text[:300]}"
        assert "Traceback" not in text
    assert not probe.failures, probe.failures
    slowest = max(probe.took)
    at = probe.at[probe.took.index(slowest)]
    during_it = [a.name for a in posts if a.started <= at + slowest and a.ended >= at]
    assert len(probe.took) >= 20
    assert slowest <= 0.25, f"/healthz took {slowest * 1000:.0f} ms during {during_it}"
    server_peak = memory.peaks[memory.pid] / 1024
    assert server_peak < 500, f"the server's peak RSS was {server_peak:.0f} MB"
    # The spec workers hold what a parse needs, within their own cap (PARSE_MEMORY, 1 GiB).
    assert all(kb < 1024 * 1024 for kb in memory.peaks.values()), memory.peaks
    assert during["state"] in ("processing", "completed") and during["numResets"] == 0
    assert job["state"] == "completed" and job["numResets"] == 0, job
    out = "".join(str(entry["out"]) for entry in fleet.logs(job_id))
    assert out.count("stdout: started") == 1 and out.count("stdout: finished") == 1, out
    assert "attempt 2" not in out, out

    # And a real spec still goes through.
    normal = {"spec": "name: normal\non: [{repository: demo}]\n" + TAIL + TEMPLATE}
    made = fleet.api("POST", "/api/batches/specs", token=token, json=normal)
    assert made.status_code == 201, made.text


def _post(fleet: Fleet, token: str, attack: Attack) -> None:
    attack.started = time.monotonic()
    try:
        attack.answer = httpx.post(
            f"{fleet.base}/api/batches/specs",
            headers={"Authorization": f"token {token}", **attack.request.pop("headers", {})},
            timeout=120,
            **attack.request,
        )
    except Exception as exc:
        attack.error = f"{type(exc).__name__}: {exc}"
    attack.ended = time.monotonic()
