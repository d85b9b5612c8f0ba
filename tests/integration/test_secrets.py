"""Secrets at three levels, encrypted at rest, every use logged: on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from access_site import Site, served
from pydantic import SecretStr

from offload.config import Settings
from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.identity.namespaces import BadName
from offload.identity.orgs import Orgs
from offload.identity.tokens import AccessTokens
from offload.identity.users import Users
from offload.jobs import queue as jobs
from offload.queue.store import SqlQueueStore
from offload.queues import executor_queues
from offload.secrets.cipher import (
    KEY_FILE,
    PLAINTEXT,
    Cipher,
    CipherError,
    KeySettingError,
    check_key_settings,
    new_key,
)
from offload.secrets.rotation import rotate_key
from offload.secrets.store import GLOBAL, VALUE_MAX, Secrets, UnknownSecret
from offload.testing import FakeClock

VALUE = "hunter2-" + "5e1c0b7a9d"


def settings_for(tmp_path: Path, **keys: object) -> Settings:
    """Settings whose key settings are only those given (not the environment's)."""
    blank: dict[str, object] = {
        "encryption_key": None,
        "encryption_key_file": None,
        "encryption_old_keys": None,
    }
    return Settings(data_dir=tmp_path / "data", **{**blank, **keys})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def secrets(db: Database, clock: FakeClock) -> Secrets:
    return Secrets(db, Cipher(new_key()), clock=clock)


async def everywhere(secrets: Secrets) -> None:
    """TOKEN at each level; ORG_ONLY in organization acme only."""
    await secrets.set(GLOBAL, "TOKEN", "global-value")
    await secrets.set("olive", "TOKEN", "olive-value")
    await secrets.set("acme", "TOKEN", "acme-value")
    await secrets.set("acme", "ORG_ONLY", "acme-only-value")


async def test_a_job_reads_its_namespaces_secret_else_the_global_one(secrets: Secrets) -> None:
    await everywhere(secrets)

    async def seen(namespace: str) -> str:
        found = await secrets.values_for_job(namespace, ["TOKEN"], queue="default", job_id=1)
        return found["TOKEN"]

    assert await seen("olive") == "olive-value"
    assert await seen("acme") == "acme-value"
    assert await seen("mallory") == "global-value"
    assert await seen("") == "global-value"
    both = await secrets.values_for_job("acme", ["ORG_ONLY", "TOKEN"], queue="gpu", job_id=2)
    assert both == {"ORG_ONLY": "acme-only-value", "TOKEN": "acme-value"}


async def test_a_job_in_a_users_namespace_never_sees_an_organizations_secret(
    secrets: Secrets,
) -> None:
    await everywhere(secrets)
    with pytest.raises(UnknownSecret) as refused:
        await secrets.values_for_job("olive", ["TOKEN", "ORG_ONLY"], queue="default", job_id=1)
    message = str(refused.value)
    assert "ORG_ONLY" in message and "namespace olive or globally" in message
    assert "TOKEN" not in message and "acme" not in message
    # Refused when the job is submitted already, before it is queued.
    with pytest.raises(UnknownSecret, match="ORG_ONLY"):
        await secrets.require("olive", ["ORG_ONLY"])
    await secrets.require("acme", ["ORG_ONLY", "TOKEN"])
    await secrets.require("mallory", ["TOKEN"])
    # Nothing was handed out: nothing logged.
    assert await secrets.accesses("acme", "ORG_ONLY") == []


async def test_the_table_holds_no_value_in_plain_text(db: Database, secrets: Secrets) -> None:
    await secrets.set("olive", "API_KEY", VALUE)
    await secrets.set(GLOBAL, "API_KEY", VALUE + "-global")
    rows = await db.fetch("SELECT * FROM secrets")
    assert len(rows) == 2
    for row in rows:
        stored = repr(row).encode()
        assert b"hunter2" not in stored and VALUE.encode() not in stored
        assert row["key_id"] == secrets.cipher.key_id
    listed = await secrets.names("olive")
    assert [(s.namespace, s.name) for s in listed] == [("olive", "API_KEY")]
    assert VALUE not in repr(listed)


async def test_each_use_is_logged_with_its_job(secrets: Secrets, clock: FakeClock) -> None:
    await everywhere(secrets)
    await secrets.values_for_job("olive", ["TOKEN"], queue="default", job_id=11)
    clock.advance(timedelta(seconds=5))
    await secrets.values_for_job("olive", ["TOKEN"], queue="gpu", job_id=12)
    await secrets.values_for_job("mallory", ["TOKEN"], queue="batches", job_id=13)
    # Cache keys hash the values on the server; no job sees them, so nothing is logged.
    await secrets.values_for_keys("olive", ["TOKEN"])

    olive = await secrets.accesses("olive", "TOKEN")
    assert [(a.job_id, a.job_queue, a.job_namespace) for a in olive] == [
        (12, "gpu", "olive"),
        (11, "default", "olive"),
    ]
    assert olive[0].at - olive[1].at == timedelta(seconds=5)
    assert [a.job_id for a in await secrets.accesses("olive", "TOKEN", before=olive[0].id)] == [11]
    shared = await secrets.accesses(GLOBAL, "TOKEN")
    assert [(a.job_id, a.job_namespace) for a in shared] == [(13, "mallory")]
    assert await secrets.accesses("acme", "TOKEN") == []

    # Deleting a secret deletes its log: a later secret never inherits it.
    assert await secrets.delete("olive", "TOKEN")
    assert not await secrets.delete("olive", "TOKEN")
    with pytest.raises(UnknownSecret):
        await secrets.accesses("olive", "TOKEN")
    await secrets.set("olive", "TOKEN", "new-value")
    assert await secrets.accesses("olive", "TOKEN") == []


async def test_values_are_checked_before_they_are_kept(secrets: Secrets) -> None:
    for name, value, reason in (
        ("EMPTY", "", "empty"),
        ("BIG", "x" * (VALUE_MAX + 1), f"most a secret holds is {VALUE_MAX}"),
        ("NUL", "a\x00b", "NUL"),
        ("1BAD", "v", "must be letters"),
        ("BAD-NAME", "v", "must be letters"),
    ):
        with pytest.raises(ValueError, match=reason):
            await secrets.set("olive", name, value)
    await secrets.set("olive", "BIGGEST", "é" * (VALUE_MAX // 2))
    found = await secrets.values_for_job("olive", ["BIGGEST"], queue="default", job_id=1)
    assert found["BIGGEST"] == "é" * (VALUE_MAX // 2)


async def test_rotating_the_key_keeps_every_secret_readable(db: Database, secrets: Secrets) -> None:
    await everywhere(secrets)
    old = secrets.cipher
    rotated = Cipher(new_key(), old.keys)
    assert await secrets.rotate(rotated) == 4
    key_ids = {r["key_id"] for r in await db.fetch("SELECT key_id FROM secrets")}
    assert key_ids == {rotated.key_id} != {old.key_id}
    # Readable with the new key alone...
    alone = Secrets(db, Cipher(rotated.keys[0]))
    found = await alone.values_for_job("acme", ["TOKEN", "ORG_ONLY"], queue="default", job_id=1)
    assert found == {"TOKEN": "acme-value", "ORG_ONLY": "acme-only-value"}
    assert await alone.rotate(rotated) == 0
    # ...and no longer with the old one, which says which key it lacks.
    with pytest.raises(CipherError, match=rotated.key_id) as lacking:
        await secrets.values_for_job("olive", ["TOKEN"], queue="default", job_id=1)
    assert "OFFLOAD_ENCRYPTION_OLD_KEYS" in str(lacking.value)


async def test_a_rotation_that_cannot_read_a_secret_changes_none(
    db: Database, secrets: Secrets
) -> None:
    await everywhere(secrets)
    stranger = Secrets(db, Cipher(new_key()))
    await stranger.set("zed", "TOKEN", "under-another-key")
    before = await db.fetch("SELECT id, value_encrypted, key_id FROM secrets ORDER BY id")
    with pytest.raises(CipherError, match="TOKEN"):
        await secrets.rotate(Cipher(new_key(), secrets.cipher.keys))
    assert await db.fetch("SELECT id, value_encrypted, key_id FROM secrets ORDER BY id") == before


async def test_a_value_moved_to_another_row_does_not_open(db: Database, secrets: Secrets) -> None:
    await everywhere(secrets)
    # Someone who can write the database but has no key moves acme's value to olive.
    await db.fetch(
        "UPDATE secrets SET value_encrypted = (SELECT value_encrypted FROM secrets"
        " WHERE namespace = 'acme' AND name = 'TOKEN') WHERE namespace = 'olive'"
        " AND name = 'TOKEN'"
    )
    with pytest.raises(CipherError, match="moved"):
        await secrets.values_for_job("olive", ["TOKEN"], queue="default", job_id=1)


async def test_a_row_from_before_0010_is_encrypted_when_the_server_starts(
    db: Database, secrets: Secrets, clock: FakeClock
) -> None:
    await db.fetch(
        "INSERT INTO secrets (namespace, name, value_encrypted, key_id, created_at, updated_at)"
        " VALUES ('', 'LEGACY', :value, :plain, :now, :now)",
        {"value": VALUE, "plain": PLAINTEXT, "now": clock.now()},
    )
    # Readable until then, so a worker that starts first does not fail.
    assert await secrets.values_for_keys("mallory", ["LEGACY"]) == {"LEGACY": VALUE}
    assert await secrets.encrypt_plaintext() == 1
    (row,) = await db.fetch("SELECT * FROM secrets WHERE name = 'LEGACY'")
    assert row["key_id"] == secrets.cipher.key_id
    assert VALUE.encode() not in repr(row).encode()
    found = await secrets.values_for_job("mallory", ["LEGACY"], queue="default", job_id=3)
    assert found == {"LEGACY": VALUE}
    assert await secrets.encrypt_plaintext() == 0


async def test_a_generic_job_gets_the_secrets_of_its_namespace(
    db: Database, secrets: Secrets, tmp_path: Path
) -> None:
    await everywhere(secrets)
    queue = executor_queues(settings_for(tmp_path), secrets)["default"]
    store = SqlQueueStore(db, jobs.spec("default"))
    payload = {
        "repositoryName": "demo",
        "dockerSteps": [{"key": "step.0", "image": "", "commands": ["true"], "dir": ""}],
        "secrets": ["TOKEN"],
    }
    job_id = await store.enqueue({"payload": payload, "namespace": "acme", "submitted_by": "o"})
    (record,) = await store.dequeue("executor-1")
    job = await queue.transform(record, db)
    assert job.docker_steps[0].env == ["TOKEN=acme-value"]
    assert job.redacted_values == {"acme-value": "${{ secrets.TOKEN }}"}
    (used,) = await secrets.accesses("acme", "TOKEN")
    assert (used.job_id, used.job_queue, used.job_namespace) == (job_id, "default", "acme")


def test_a_key_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    check_key_settings(settings)
    assert not (tmp_path / "data").exists(), "checking the settings made something"
    first = Cipher.from_settings(settings)
    path = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Cipher.from_settings(settings).key_id == first.key_id
    assert os.listdir(tmp_path / "data") == [KEY_FILE]


def test_a_malformed_key_is_named_without_being_shown(tmp_path: Path) -> None:
    bad = "not-a-key-" + "3f9a" * 8
    cases: list[tuple[dict[str, object], str]] = [
        ({"encryption_key": SecretStr(bad)}, "OFFLOAD_ENCRYPTION_KEY"),
        (
            {
                "encryption_key": SecretStr(new_key().decode()),
                "encryption_old_keys": SecretStr(bad),
            },
            "OFFLOAD_ENCRYPTION_OLD_KEYS",
        ),
        ({"encryption_key_file": tmp_path / "missing.key"}, "OFFLOAD_ENCRYPTION_KEY_FILE"),
        (
            {
                "encryption_key": SecretStr(new_key().decode()),
                "encryption_key_file": tmp_path / "k",
            },
            "not both",
        ),
    ]
    for keys, named in cases:
        settings = settings_for(tmp_path, **keys)
        for attempt in (check_key_settings, Cipher.from_settings):
            with pytest.raises(KeySettingError, match=named) as failed:
                attempt(settings)
            assert bad not in str(failed.value)
    written = tmp_path / "written.key"
    written.write_text(bad + "\n")
    with pytest.raises(KeySettingError, match=r"OFFLOAD_ENCRYPTION_KEY_FILE .*line 1"):
        Cipher.from_settings(settings_for(tmp_path, encryption_key_file=written))


def test_a_server_with_a_malformed_key_does_not_start(tmp_path: Path) -> None:
    bad = "not-a-key-" + "8c2d" * 8
    env = {k: v for k, v in os.environ.items() if not k.startswith("OFFLOAD_")}
    env.update(OFFLOAD_DATA_DIR=str(tmp_path / "data"), OFFLOAD_ENCRYPTION_KEY=bad)
    done = subprocess.run(
        [sys.executable, "-m", "offload", "server", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "OFFLOAD_ENCRYPTION_KEY" in line and bad not in line
    assert not (tmp_path / "data").exists()


async def test_rotate_key_replaces_offloads_own_key_file(db: Database, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    before = Cipher.from_settings(settings)
    await everywhere(Secrets(db, before))
    done = await rotate_key(db, settings)
    assert (done.rows, done.key_file) == (4, tmp_path / "data" / KEY_FILE)
    assert done.key_id != before.key_id
    # The file holds the new key alone, and nothing in the data dir holds the old one.
    for path in (tmp_path / "data").iterdir():
        assert before.keys[0] not in path.read_bytes(), path
    assert stat.S_IMODE((tmp_path / "data" / KEY_FILE).stat().st_mode) == 0o600
    after = Cipher.from_settings(settings)
    assert after.key_ids() == [done.key_id]
    found = await Secrets(db, after).values_for_job("olive", ["TOKEN"], queue="q", job_id=1)
    assert found == {"TOKEN": "olive-value"}


async def test_rotate_key_moves_rows_to_the_key_of_the_settings(
    db: Database, tmp_path: Path
) -> None:
    old, new = new_key(), new_key()
    await everywhere(Secrets(db, Cipher(old)))
    settings = settings_for(
        tmp_path,
        encryption_key=SecretStr(new.decode()),
        encryption_old_keys=SecretStr(old.decode()),
    )
    done = await rotate_key(db, settings)
    assert (done.rows, done.key_id, done.key_file) == (4, Cipher(new).key_id, None)
    assert not (tmp_path / "data").exists()
    found = await Secrets(db, Cipher(new)).values_for_keys("acme", ["TOKEN"])
    assert found == {"TOKEN": "acme-value"}


# The HTTP routes against the real app, on a real server.


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        member = await Users(db).create("milo")
        await Orgs(db).set_member("acme", "milo", "member")
        running.tokens["member"] = (await AccessTokens(db).create(member.id, ["user:all"]))[1]
        yield running


async def test_who_may_list_change_and_audit_secrets(site: Site) -> None:
    async def status(who: str, method: str, path: str) -> int:
        body = {"json": {"value": VALUE}} if method == "PUT" else {}
        return (await site.call(who, method, path, **body)).status_code

    expected = {
        # namespace: (list, set, accesses) for (other, member, owner, admin)
        "olive": ((404, 404, 200, 200), (404, 404, 204, 204), (404, 404, 200, 200)),
        "acme": ((404, 200, 200, 200), (404, 403, 204, 204), (404, 403, 200, 200)),
        "global": ((200, 200, 200, 200), (403, 403, 403, 204), (403, 403, 403, 200)),
        "nobody": ((404, 404, 404, 404), (404, 404, 404, 404), (404, 404, 404, 404)),
    }
    callers = ("other", "member", "owner", "admin")
    for namespace, (listing, setting, auditing) in expected.items():
        path = f"/api/secrets/{namespace}"
        got_set = tuple([await status(who, "PUT", f"{path}/API_KEY") for who in callers])
        got_list = tuple([await status(who, "GET", path) for who in callers])
        got_audit = tuple([await status(w, "GET", f"{path}/API_KEY/accesses") for w in callers])
        assert (got_list, got_set, got_audit) == (listing, setting, auditing), namespace
    assert await status("anonymous", "GET", "/api/secrets/global") == 401

    listed = await site.call("member", "GET", "/api/secrets/acme")
    assert [s["name"] for s in listed.json()] == ["API_KEY"]
    assert VALUE not in listed.text
    assert await status("member", "DELETE", "/api/secrets/acme/API_KEY") == 403
    assert await status("owner", "DELETE", "/api/secrets/acme/API_KEY") == 204
    assert await status("owner", "DELETE", "/api/secrets/acme/API_KEY") == 404
    bad = await site.call("owner", "PUT", "/api/secrets/olive/NOT-A-NAME", json={"value": "v"})
    assert bad.status_code == 400 and "letters" in bad.json()["detail"]
    assert (await site.call("owner", "PUT", "/api/secrets/olive/X", json={})).status_code == 422
    huge = {"value": "x" * (VALUE_MAX + 1)}
    assert (await site.call("owner", "PUT", "/api/secrets/olive/X", json=huge)).status_code == 422

    audit = await site.db.fetch(
        "SELECT actor, action, target FROM audit_log WHERE action LIKE 'secret.%' ORDER BY id"
    )
    assert ("root", "secret.set", "global/API_KEY") in [
        (r["actor"], r["action"], r["target"]) for r in audit
    ]
    assert ("olive", "secret.delete", "acme/API_KEY") in [
        (r["actor"], r["action"], r["target"]) for r in audit
    ]
    assert VALUE not in repr(await site.db.fetch("SELECT * FROM audit_log"))


async def test_global_cannot_name_a_user_or_an_organization(db: Database) -> None:
    with pytest.raises(BadName, match="reserved"):
        await Users(db).create("global")
    with pytest.raises(BadName, match="reserved"):
        await Orgs(db).create("Global")
