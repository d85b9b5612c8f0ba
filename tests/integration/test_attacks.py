"""The attacks an anonymous caller or another user could make before offload knew who called,
each reproduced against a served offload on both databases: every one is refused now."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from access_site import Site, served
from batchspecs import minimal

from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.db.values import parse_time
from offload.queue.states import State


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


async def test_an_anonymous_caller_submits_nothing_and_reads_no_secret(site: Site) -> None:
    await site.as_owner("PUT", "/api/secrets/olive/API_KEY", json={"value": "hunter2-secret"})
    body = {
        "repo": "demo",
        "command": ["sh", "-c", "echo $API_KEY | base64"],
        "secrets": ["API_KEY"],
    }
    refused = await site.call("anonymous", "POST", "/api/jobs", json=body)
    assert refused.status_code == 401
    assert "sign in" in refused.json()["detail"]
    # Another user cannot reach the owner's secret from their own namespace...
    theirs = await site.call("other", "POST", "/api/jobs", json=body)
    assert theirs.status_code == 400 and "API_KEY" in theirs.json()["detail"]
    # ...nor submit in the owner's namespace to get it.
    borrowed = await site.call("other", "POST", "/api/jobs", json={**body, "namespace": "olive"})
    assert borrowed.status_code == 403
    assert (await site.db.fetch("SELECT count(*) AS n FROM jobs"))[0]["n"] == 0


async def test_a_local_specs_jobs_are_dequeued_only_by_who_submitted_it(site: Site) -> None:
    rand_id = await site.spec(local=True)
    for who, status in (("anonymous", 401), ("other", 404), ("admin", 403)):
        answer = await site.call(
            who,
            "POST",
            f"/api/batches/specs/{rand_id}/dequeue",
            json={"executorName": "thief", "wait": 0},
        )
        assert answer.status_code == status, (who, answer.text)
        assert "dockerSteps" not in answer.text


async def test_nobody_applies_or_closes_another_users_batch_change(site: Site) -> None:
    name = await site.batch_change()
    rand_id = await site.spec()
    # The owner used to be whatever the body said: a body naming someone is refused now.
    forged = await site.call(
        "other", "POST", "/api/batches/specs", json={"spec": "name: x\n", "user": "olive"}
    )
    assert forged.status_code == 422
    assert (
        await site.call("other", "POST", f"/api/batches/specs/{rand_id}/apply")
    ).status_code == 404
    closing = await site.call("other", "POST", f"/api/batches/changes/olive/{name}/close")
    assert closing.status_code == 404
    rows = await site.db.fetch("SELECT closed_at FROM batch_changes WHERE name = :n", {"n": name})
    assert rows[0]["closed_at"] is None
    # Through their own namespace, with the owner's spec id: still not found.
    sideways = await site.call(
        "other", "GET", f"/api/batches/changes/mallory/{name}/logs", params={"spec": rand_id}
    )
    assert sideways.status_code == 404


async def test_nobody_merges_or_closes_a_pull_request_they_did_not_open(site: Site) -> None:
    number = await site.pull_request()
    for verb in ("merge", "close"):
        answer = await site.call("other", "POST", f"/api/pulls/demo/{number}/{verb}")
        assert answer.status_code == 403, answer.text
        assert "only site admins and olive" in answer.json()["detail"]
    shown = await site.call("other", "GET", f"/api/pulls/demo/{number}")
    assert shown.json()["state"] == "open"
    merged = await site.call("owner", "POST", f"/api/pulls/demo/{number}/merge")
    assert merged.status_code == 200 and merged.json()["state"] == "merged"
    audit = await site.call("admin", "GET", "/api/audit", params={"action": "pull.merge"})
    assert [(e["actor"], e["target"]) for e in audit.json()] == [("olive", f"demo#{number}")]


async def test_nobody_cancels_another_users_job(site: Site) -> None:
    job_id = await site.job()
    for who in ("anonymous", "other"):
        answer = await site.call(who, "POST", f"/api/jobs/{job_id}/cancel")
        assert answer.status_code in (401, 404)
    rows = await site.db.fetch("SELECT state, cancel FROM jobs WHERE id = :i", {"i": job_id})
    assert (rows[0]["state"], bool(rows[0]["cancel"])) == (State.QUEUED.value, False)


async def test_network_access_needs_its_own_grant(site: Site) -> None:
    body = {"repo": "demo", "command": ["true"], "allowNetwork": True}
    refused = await site.call("owner", "POST", "/api/jobs", json=body)
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert "olive may not give jobs network access on the default queue" in detail
    assert "offload queues grant default --user olive --network" in detail
    granted = await site.call(
        "admin",
        "POST",
        "/api/queues/default/grants",
        json={"namespace": "olive", "permission": "network"},
    )
    assert granted.status_code == 201
    assert (await site.call("owner", "POST", "/api/jobs", json=body)).status_code == 201


async def test_a_local_heartbeat_keeps_no_one_elses_jobs_alive(site: Site) -> None:
    # The owner's local spec holds a job; mallory runs a local spec of her own and sends its
    # heartbeat with the owner's executor name and job id.
    victim = await site.spec(local=True)
    await site.db.fetch(
        "INSERT INTO batch_workspaces (batch_spec_id, repo_name, branch, base_rev, file_matches)"
        " SELECT id, 'demo', 'main', :rev, '[]' FROM batch_specs WHERE rand_id = :r",
        {"rev": "a" * 40, "r": victim},
    )
    rows = await site.db.fetch(
        "SELECT s.id AS spec, w.id AS workspace FROM batch_specs s JOIN batch_workspaces w"
        " ON w.batch_spec_id = s.id WHERE s.rand_id = :r",
        {"r": victim},
    )
    stale = datetime(2001, 1, 1, tzinfo=UTC)
    job = await site.db.fetch(
        "INSERT INTO batch_workspace_jobs (state, queued_at, started_at, last_heartbeat_at,"
        " worker_hostname, batch_spec_id, workspace_id, user_name, fair_key)"
        " VALUES ('processing', :t, :t, :t, 'olive-laptop', :s, :w, 'olive', 1) RETURNING id",
        {"t": stale, "s": rows[0]["spec"], "w": rows[0]["workspace"]},
    )
    job_id = int(job[0]["id"])
    mine = await site.call(
        "other",
        "POST",
        "/api/batches/specs",
        json={"spec": minimal("mine"), "local": True},
    )
    assert mine.status_code == 201, mine.text
    beat = await site.call(
        "other",
        "POST",
        f"/api/batches/specs/{mine.json()['id']}/heartbeat",
        json={"executorName": "olive-laptop", "jobIds": [f"{job_id}-batches"]},
    )
    assert beat.status_code == 200 and beat.json()["knownIds"] == []
    after = await site.db.fetch(
        "SELECT last_heartbeat_at FROM batch_workspace_jobs WHERE id = :i", {"i": job_id}
    )
    assert parse_time(after[0]["last_heartbeat_at"]) == stale


async def test_a_forged_forwarded_address_neither_hides_nor_dodges_the_sign_in_limit(
    site: Site,
) -> None:
    # Five wrong passwords for five usernames, each "from" another address: the address the
    # server sees is the connection's, so the sixth attempt is refused whatever it claims.
    for n in range(5):
        wrong = await site.call(
            "anonymous",
            "POST",
            "/api/session",
            json={"username": f"guess{n}", "password": "wrong password!"},
            headers={"X-Forwarded-For": f"203.0.113.{n}"},
        )
        assert wrong.status_code == 401
    sixth = await site.call(
        "anonymous",
        "POST",
        "/api/session",
        json={"username": "olive", "password": "correct horse battery"},
        headers={"X-Forwarded-For": "198.51.100.7"},
    )
    assert sixth.status_code == 429
    audit = await site.call("admin", "GET", "/api/audit", params={"action": "sign-in.failed"})
    assert {e["address"] for e in audit.json()} == {"127.0.0.1"}
