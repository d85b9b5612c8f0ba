"""People and access end to end: the first site admin a fresh server prints, and the CLI tour
of the README, signed in with `offload login` from terminals that know no database."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from busybox import BusyboxMissing, build_rootfs, build_tarball
from ci import unavailable
from fleet import Fleet, make_repo, spawn

from offload.db.url import DatabaseURL

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces")

BLOCK = "offload created the first site admin"
BUSYBOX = "offload-test/busybox:latest"
SECRET = "s3cr3t-" + "7f1c9a2e40d8"


def flat(text: str) -> str:
    """`text` with every run of whitespace made one space (the CLI wraps to its terminal)."""
    return " ".join(text.split())


class Terminal:
    """A shell of one person on another machine: its own config directory, no OFFLOAD_*
    setting, and an empty data directory that no command may write to."""

    def __init__(self, tmp: Path, config: str) -> None:
        self.config = tmp / config
        self.data_dir = tmp / "cli-data"
        self.home = tmp / "home"
        for directory in (self.data_dir, self.home):
            directory.mkdir(exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
        self.env = {
            **inherited,
            "XDG_CONFIG_HOME": str(self.config),
            "HOME": str(self.home),
            "OFFLOAD_DATA_DIR": str(self.data_dir),
            # A wide terminal, so that tables show whole cells.
            "COLUMNS": "200",
        }

    @property
    def credentials(self) -> Path:
        """Where `offload login` keeps the sign-in."""
        return self.config / "offload" / "credentials.json"

    def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run `offload ARGS` here (with `env` added to the environment)."""
        return subprocess.run(
            [sys.executable, "-m", "offload", *args],
            env={**self.env, **env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `offload ARGS`, which must succeed."""
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done


def job_ids(listing: str) -> set[int]:
    """The ids in the first column of `offload jobs list`'s table."""
    return {int(m) for m in re.findall(r"^\W*(\d+)\s", listing, re.MULTILINE)}


def suggested(message: str) -> str:
    """The command a refusal tells to run (between backticks)."""
    found = re.search(r"`(offload [^`]+)`", message)
    assert found is not None, message
    return found.group(1)


@pytest.fixture
def fleet(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(db_url, tmp_path / "data")
    make_repo(tmp_path / "src" / "demo", {"README": "hello from demo\n"})
    yield fleet
    fleet.stop_all()


def test_the_first_start_prints_the_first_site_admins_sign_in_once(fleet: Fleet) -> None:
    fleet.start_server()
    assert fleet.server is not None
    first = "".join(fleet.server.lines)
    assert first.count(BLOCK) == 1, first
    assert f"echo {fleet.admin_token} | offload login {fleet.base}" in first
    found = re.search(r"username admin\s+password (\S+)", first)
    assert found is not None, first
    password = found.group(1)
    assert fleet.server.stop() == 0

    fleet.start_server()
    again = "".join(fleet.server.lines)
    assert BLOCK not in again and fleet.admin_token not in again and password not in again

    me = fleet.api("GET", "/api/me")
    assert me.status_code == 200, me.text
    assert (me.json()["username"], me.json()["siteAdmin"]) == ("admin", True)
    signed = httpx.post(
        f"{fleet.base}/api/session", json={"username": "admin", "password": password}
    )
    assert signed.status_code == 200, signed.text
    assert "offload_session" in signed.cookies
    wrong = httpx.post(
        f"{fleet.base}/api/session", json={"username": "admin", "password": password + "x"}
    )
    assert wrong.status_code == 401


@pytest.mark.slow
def test_the_cli_tour_from_a_terminal_without_a_database(fleet: Fleet, tmp_path: Path) -> None:
    fleet.start_server()
    url = fleet.base
    admin = Terminal(tmp_path, "config")
    alice = Terminal(tmp_path, "config-alice")

    # Signing in: the token from the server's first start, checked, then kept for its owner.
    login = admin.ok("login", url, stdin=f"{fleet.admin_token}\n")
    assert f"signed in to {url} as admin (site admin)" in flat(login.stdout)
    assert stat.S_IMODE(admin.credentials.stat().st_mode) == 0o600
    assert json.loads(admin.credentials.read_text()) == {"url": url, "token": fleet.admin_token}
    assert flat(admin.ok("whoami").stdout) == "admin (site admin); organizations: none"

    # People: a user with a password shown once, an organization, a token of hers.
    added = admin.ok("users", "add", "alice")
    assert "added user alice" in added.stdout
    found = re.search(r"password \(shown once\): (\S+)", added.stdout)
    assert found is not None, added.stdout
    signed = httpx.post(
        f"{url}/api/session", json={"username": "alice", "password": found.group(1)}
    )
    assert signed.status_code == 200, signed.text
    assert "added organization ml" in admin.ok("orgs", "add", "ml").stdout
    members = admin.ok("orgs", "members", "ml", "--add", "alice")
    assert flat(members.stdout) == "alice member"
    made = admin.ok("tokens", "create", "--user", "alice", "--note", "tour")
    assert re.fullmatch(r"offload_[0-9a-f]{40}\n", made.stdout), made.stdout
    assert "shown this once" in made.stderr
    alice_token = made.stdout.strip()

    bogus = alice("login", url, stdin="offload_" + "0" * 40 + "\n")
    assert bogus.returncode != 0
    assert "invalid access token" in flat(bogus.stderr)
    assert not alice.credentials.exists()
    login = alice.ok("login", url, stdin=alice_token + "\n")
    assert f"signed in to {url} as alice;" in flat(login.stdout)
    assert "site admin" not in login.stdout
    assert flat(alice.ok("whoami").stdout) == "alice; organizations: ml (member)"

    # Repositories: everyone reads them, site admins add them.
    source = str(tmp_path / "src" / "demo")
    refused = alice("repos", "add", source, "--name", "demo")
    assert refused.returncode != 0
    assert "only site admins" in flat(refused.stderr)
    assert "added demo" in admin.ok("repos", "add", source, "--name", "demo").stdout
    assert "demo" in alice.ok("repos", "list").stdout

    # Jobs: her own, run on the executor; her secret redacted from what she sees.
    fleet.start_executor("exec-tour", slots=2)
    hi = alice.ok("run", "--repo", "demo", "--", "sh", "-c", "echo hi")
    assert hi.stdout.splitlines() == ["hi"], hi.stdout
    stored = alice.ok("secrets", "set", "API_KEY", stdin=SECRET)
    assert SECRET not in stored.stdout + stored.stderr
    shown = alice.ok(
        "run", "--repo", "demo", "--secret", "API_KEY", "--", "sh", "-c", "echo $API_KEY"
    )
    assert "${{ secrets.API_KEY }}" in shown.stdout
    assert SECRET not in shown.stdout + shown.stderr
    theirs = admin.ok("run", "--repo", "demo", "--", "sh", "-c", "echo the-admins-own")
    assert "the-admins-own" in theirs.stdout

    everyone = fleet.api("GET", "/api/jobs").json()
    hers = {j["id"] for j in everyone if j["submittedBy"] == "alice"}
    admins = {j["id"] for j in everyone if j["submittedBy"] == "admin"}
    assert len(hers) == 2 and len(admins) == 1
    listed = alice.ok("jobs", "list")
    assert job_ids(listed.stdout) == hers, listed.stdout
    assert job_ids(admin.ok("jobs", "list").stdout) == hers | admins

    # Queues: the gpu queue is the organization's once a site admin grants it.
    gpu = ["run", "--repo", "demo", "--org", "ml", "--queue", "gpu", "--", "true"]
    refused = alice(*gpu)
    assert refused.returncode != 0
    assert "ml may not use the gpu queue" in flat(refused.stderr)
    assert suggested(flat(refused.stderr)) == "offload queues grant gpu --org ml"
    assert alice("queues", "grant", "gpu", "--org", "ml").returncode != 0
    granted = admin.ok("queues", "grant", "gpu", "--org", "ml")
    assert "granted ml use of the gpu queue" in flat(granted.stdout)
    fleet.start_executor("exec-gpu", slots=1, EXECUTOR_QUEUE_NAME="gpu")
    alice.ok(*gpu)
    newest = httpx.get(
        f"{url}/api/jobs", headers={"Authorization": f"token {alice_token}"}, params={"limit": 1}
    ).json()[0]
    assert (newest["namespace"], newest["queue"], newest["submittedBy"]) == ("ml", "gpu", "alice")
    assert (newest["state"], newest["executor"]) == ("completed", "exec-gpu")

    # Network access: granted per namespace, here to her alone.
    network = ["run", "--repo", "demo", "--network", "--", "true"]
    refused = alice(*network)
    assert refused.returncode != 0
    assert "alice may not give jobs network access on the default queue" in flat(refused.stderr)
    assert suggested(flat(refused.stderr)) == "offload queues grant default --user alice --network"
    admin.ok("queues", "grant", "default", "--user", "alice", "--network")
    alice.ok(*network)

    # Executors and the audit log are for site admins.
    refused = alice("executors", "list")
    assert refused.returncode != 0 and "only site admins" in flat(refused.stderr)
    connected = admin.ok("executors", "list", "--json")
    hosts = {e["hostname"]: e["active"] for e in json.loads(connected.stdout)}
    assert hosts == {"exec-tour": True, "exec-gpu": True}
    assert alice("audit").returncode != 0
    audit = admin.ok("audit", "--action", "queue.grant")
    assert "gpu/ml" in audit.stdout and "default/alice" in audit.stdout
    entries = json.loads(admin.ok("audit", "--action", "queue.grant", "--json").stdout)
    grants: list[tuple[Any, ...]] = [
        (e["actor"], e["target"], e["detail"]["permission"], e["address"]) for e in entries
    ]
    assert grants == [
        ("admin", "default/alice", "network", "127.0.0.1"),
        ("admin", "gpu/ml", "use", "127.0.0.1"),
    ]

    # No command of the tour made a database (or anything else) on this side.
    assert list(admin.data_dir.iterdir()) == []

    # Signing out forgets the token here, not in alice's terminal; the next command here says
    # how to sign in again.
    assert flat(admin.ok("logout").stdout) == "signed out"
    assert not admin.credentials.exists()
    assert flat(alice.ok("whoami").stdout).startswith("alice;")
    pointed = admin("whoami", OFFLOAD_URL=url)
    assert pointed.returncode != 0
    assert f"sign in with `offload login {url}`" in flat(pointed.stderr), pointed.stderr
    after = admin("whoami")
    assert after.returncode != 0
    assert "offload login" in flat(after.stderr), after.stderr
    assert list(admin.data_dir.iterdir()) == []


BATCH_SPEC = """\
name: fix-colour
on:
  - repository: site
steps:
  - run: sed -i 's/colour/color/g' README.md
    container: offload-test/busybox:latest
changesetTemplate:
  title: Use color
  branch: fix-colour
  commit:
    message: Fix colour
  published: true
"""


@pytest.mark.slow
def test_the_batch_tour_from_a_terminal_without_a_database(fleet: Fleet, tmp_path: Path) -> None:
    # The README's batch commands, as a user signed in with `offload login` runs them: her
    # batch change is hers, its pull request is hers to merge, and another user sees none of it.
    work = tmp_path / "site-work"
    make_repo(work, {"README.md": "the colour of the site\n"})
    hosted = tmp_path / "hosted" / "site.git"
    hosted.parent.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(hosted)], check=True)
    try:
        tarball = build_tarball(build_rootfs(tmp_path / "rootfs"), tmp_path / "busybox.tar")
    except BusyboxMissing as exc:
        unavailable(str(exc))
    imported = subprocess.run(
        [sys.executable, "-m", "offload", "executor", "images", "import", BUSYBOX, str(tarball)],
        env={**os.environ, "EXECUTOR_DATA_DIR": str(fleet.data_dir / "executor-exec-batch")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    fleet.start_server()
    worker = spawn(
        "worker",
        ["worker", "--job", "batches.resolver", "--job", "batches.reconciler"],
        {**fleet.env, "OFFLOAD_WORKER_PORT": "0"},
    )
    try:
        worker.wait_for("offload worker listening")
        fleet.start_executor("exec-batch", slots=2, EXECUTOR_QUEUE_NAME="batches")
        admin = Terminal(tmp_path, "config")
        admin.ok("login", fleet.base, stdin=fleet.admin_token + "\n")
        admin.ok("repos", "add", str(hosted), "--name", "site")
        carol = Terminal(tmp_path, "config-carol")
        carol.ok("login", fleet.base, stdin=fleet.user("carol") + "\n")
        mallory = Terminal(tmp_path, "config-mallory")
        mallory.ok("login", fleet.base, stdin=fleet.user("mallory") + "\n")

        spec = tmp_path / "fix.yaml"
        assert "wrote" in carol.ok("batch", "new", "-f", str(spec), "--name", "fix-colour").stdout
        spec.write_text(BATCH_SPEC)
        carol.ok("batch", "validate", "-f", str(spec))
        preview = carol.ok("batch", "preview", "-f", str(spec))
        found = re.search(r"offload batch apply --spec (\w+)", preview.stdout)
        assert found is not None, preview.stdout
        assert "site" in preview.stdout and "create,push,publish" in preview.stdout
        # Another user can neither apply her spec nor see her batch change.
        assert mallory("batch", "apply", "--spec", found.group(1)).returncode != 0
        applied = carol.ok("batch", "apply", "--spec", found.group(1))
        assert "applied batch change fix-colour" in applied.stdout
        deadline = time.monotonic() + 90
        status = ""
        while "1 open" not in status and time.monotonic() < deadline:
            status = flat(carol.ok("batch", "status", "fix-colour").stdout)
            time.sleep(0.5)
        assert "changesets: 1 open" in status, status
        seen = mallory("batch", "status", "fix-colour", "--namespace", "carol")
        assert seen.returncode != 0 and "carol has no batch change" in flat(seen.stderr)
        logs = carol.ok("batch", "logs", "fix-colour", "--repo", "site")
        assert "== site: completed" in logs.stdout
        assert "queued 0 workspace(s) again" in carol.ok("batch", "retry", "fix-colour").stdout

        pulls = carol.ok("repos", "pulls", "list").stdout
        assert "site#1" in pulls and "fix-colour -> " in pulls
        refused = mallory("repos", "pulls", "merge", "site", "1")
        assert refused.returncode != 0 and "only site admins and carol" in flat(refused.stderr)
        merged = carol.ok("repos", "pulls", "merge", "site", "1")
        assert "site#1 is merged" in merged.stdout
        readme = subprocess.run(
            ["git", "show", "main:README.md"], cwd=hosted, capture_output=True, text=True
        )
        assert readme.stdout == "the color of the site\n"
        assert list(carol.data_dir.iterdir()) == []
    finally:
        worker.stop()
