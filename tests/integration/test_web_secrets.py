"""The secrets pages over a served offload, as a browser without JavaScript sees them: setting,
listing and deleting a secret with the pages' forms (CSRF required), what the API then reports,
no value ever in a page or a URL, the API's rules for organizations and the global namespace,
and each secret's access log (the jobs that read it, newest first, by keyset pages)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from access_site import Site, served
from web_client import csrf_of, signed_in

from offload.db.base import Database
from offload.db.url import DatabaseURL
from offload.identity.orgs import Orgs
from offload.jobs.service import JobRequest
from offload.web.secrets import ACCESSES_PER_PAGE

VALUE = "v4lue-that-must-never-show-9f3c"


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


class Seen:
    """Every answer a test got, to look for a value in any of them."""

    def __init__(self) -> None:
        self.answers: list[httpx.Response] = []

    def __call__(self, answer: httpx.Response) -> httpx.Response:
        self.answers.append(answer)
        return answer

    def show(self, text: str) -> bool:
        """Whether `text` appears in any page, header or URL seen."""
        return any(
            text in a.text or text in str(a.url) or text in str(a.headers) for a in self.answers
        )


async def names(site: Site, namespace: str) -> list[str]:
    """The secrets the API lists in `namespace`, as a site admin asks."""
    listed = await site.call("admin", "GET", f"/api/secrets/{namespace}")
    assert listed.status_code == 200, listed.text
    return [s["name"] for s in listed.json()]


def secret_rows(page: str) -> list[str]:
    """The names in a secrets page's table."""
    return re.findall(r'<th scope="row"><code>(\w+)</code></th>', page)


async def test_a_secret_is_set_listed_and_deleted_and_its_value_never_shows(site: Site) -> None:
    seen = Seen()
    async with signed_in(site, "olive") as olive:
        page = seen(await olive.get("/secrets"))
        assert page.status_code == 200 and "No secrets in namespace olive." in page.text
        assert re.findall(r"<option[^>]*>(\w+)</option>", page.text) == ["olive", "acme", "global"]
        assert "<option selected>olive</option>" in page.text
        assert 'type="password"' in page.text
        csrf = csrf_of(page.text)

        for forged in ({}, {"csrf": "forged"}):
            fields = {**forged, "namespace": "olive", "name": "DEPLOY_KEY", "value": VALUE}
            answer = seen(await olive.post("/secrets", data=fields))
            assert answer.status_code == 403 and "CSRF" in answer.text
        assert await names(site, "olive") == []

        fields = {"csrf": csrf, "namespace": "olive", "name": "DEPLOY_KEY", "value": VALUE}
        answer = seen(await olive.post("/secrets", data=fields))
        assert answer.status_code == 303
        assert answer.headers["location"] == "/secrets?namespace=olive&did=set&secret=DEPLOY_KEY"
        page = seen(await olive.get(answer.headers["location"]))
        assert "Secret DEPLOY_KEY is set in namespace olive." in page.text
        assert secret_rows(page.text) == ["DEPLOY_KEY"]
        assert await names(site, "olive") == ["DEPLOY_KEY"]
        jobs_read = await site.app.state.secrets.values_for_keys("olive", ["DEPLOY_KEY"])
        assert jobs_read == {"DEPLOY_KEY": VALUE}

        # Setting it again replaces the value; a bad name or an empty value says why, and
        # the form it answers with does not hold the value typed.
        fields["value"] = VALUE + "-2"
        answer = seen(await olive.post("/secrets", data=fields))
        assert answer.status_code == 303
        jobs_read = await site.app.state.secrets.values_for_keys("olive", ["DEPLOY_KEY"])
        assert jobs_read == {"DEPLOY_KEY": VALUE + "-2"}
        bad = seen(await olive.post("/secrets", data={**fields, "name": "1-BAD"}))
        assert bad.status_code == 400
        assert "must be letters, digits and underscores, not starting with a digit" in bad.text
        assert 'value="1-BAD"' in bad.text
        empty = seen(await olive.post("/secrets", data={**fields, "name": "EMPTY", "value": ""}))
        assert empty.status_code == 400 and "would be empty; give it a value" in empty.text
        assert await names(site, "olive") == ["DEPLOY_KEY"]

        delete = "/secrets/olive/DEPLOY_KEY/delete"
        assert f'action="{delete}" data-confirm="Delete secret DEPLOY_KEY' in page.text
        answer = seen(await olive.post(delete, data={"csrf": "forged"}))
        assert answer.status_code == 403 and await names(site, "olive") == ["DEPLOY_KEY"]
        answer = seen(await olive.post(delete, data={"csrf": csrf}))
        assert answer.status_code == 303
        page = seen(await olive.get(answer.headers["location"]))
        assert "Secret DEPLOY_KEY is deleted from namespace olive." in page.text
        assert secret_rows(page.text) == [] and await names(site, "olive") == []
        again = seen(await olive.post(delete, data={"csrf": csrf}))
        assert again.status_code == 404 and "No secret DEPLOY_KEY in namespace olive." in again.text
        # A made-up message in the URL is not said: the secret is not set.
        made_up = seen(await olive.get("/secrets?namespace=olive&did=set&secret=DEPLOY_KEY"))
        assert "is set in" not in made_up.text

    assert not seen.show(VALUE), "a secret's value reached a page, a header or a URL"
    audited = await site.db.fetch(
        "SELECT actor, action, target FROM audit_log WHERE action LIKE 'secret.%' ORDER BY id"
    )
    assert [(r["actor"], r["action"], r["target"]) for r in audited] == [
        ("olive", "secret.set", "olive/DEPLOY_KEY"),
        ("olive", "secret.set", "olive/DEPLOY_KEY"),
        ("olive", "secret.delete", "olive/DEPLOY_KEY"),
    ]


async def test_organization_and_global_secrets_follow_the_apis_rules(site: Site) -> None:
    await Orgs(site.db).set_member("acme", "mallory", "member")
    await site.app.state.secrets.set("olive", "OLIVES", "x")
    async with signed_in(site, "olive") as olive:
        csrf = csrf_of((await olive.get("/secrets?namespace=acme")).text)
        fields = {"csrf": csrf, "namespace": "acme", "name": "ACME_TOKEN", "value": VALUE}
        assert (await olive.post("/secrets", data=fields)).status_code == 303
        glob = await olive.get("/secrets?namespace=global")
        assert glob.status_code == 200 and "Only site admins set and delete global secrets." in (
            glob.text
        )
        assert 'method="post" action="/secrets"' not in glob.text
        refused = await olive.post("/secrets", data={**fields, "namespace": "global"})
        assert refused.status_code == 403 and "Only site admins" in refused.text
        assert await names(site, "global") == []

    async with signed_in(site, "mallory") as mallory:
        # A member of acme sees the names of its secrets, but only its admins change them.
        page = await mallory.get("/secrets?namespace=acme")
        assert page.status_code == 200 and secret_rows(page.text) == ["ACME_TOKEN"]
        assert "Only admins of organization acme set, delete and audit its secrets." in page.text
        assert 'method="post" action="/secrets"' not in page.text and "/delete" not in page.text
        csrf = csrf_of(page.text)
        answer = await mallory.post("/secrets", data={**fields, "csrf": csrf})
        assert answer.status_code == 403
        answer = await mallory.post("/secrets/acme/ACME_TOKEN/delete", data={"csrf": csrf})
        assert answer.status_code == 403 and await names(site, "acme") == ["ACME_TOKEN"]
        assert (await mallory.get("/secrets/acme/ACME_TOKEN")).status_code == 403
        # Another user's namespace, and one that does not exist, are not found alike.
        for other in ("olive", "nobody"):
            answer = await mallory.get(f"/secrets?namespace={other}")
            assert answer.status_code == 404 and "Not found" in answer.text
            assert "OLIVES" not in answer.text
        answer = await mallory.post("/secrets/olive/OLIVES/delete", data={"csrf": csrf})
        assert answer.status_code == 404 and await names(site, "olive") == ["OLIVES"]

    async with signed_in(site, "root") as root:
        page = await root.get("/secrets?namespace=olive")
        assert page.status_code == 200 and secret_rows(page.text) == ["OLIVES"]
        assert "<option selected>olive</option>" in page.text
        assert (await root.get("/secrets?namespace=nobody")).status_code == 404
        csrf = csrf_of(page.text)
        fields = {"csrf": csrf, "namespace": "global", "name": "SITE_TOKEN", "value": VALUE}
        answer = await root.post("/secrets", data=fields)
        assert answer.status_code == 303
        page = await root.get(answer.headers["location"])
        assert "Secret SITE_TOKEN is set in the global namespace." in page.text
        assert await names(site, "global") == ["SITE_TOKEN"]
        assert VALUE not in page.text


async def test_the_access_log_lists_the_jobs_that_read_a_secret_by_keyset_pages(
    site: Site,
) -> None:
    await site.app.state.secrets.set("olive", "READ_ME", VALUE)
    jobs, dispatcher = site.app.state.jobs, site.app.state.dispatcher
    read_by: list[int] = []
    for _ in range(ACCESSES_PER_PAGE + 2):
        request = JobRequest(
            repo="demo",
            command=["sh", "-c", "echo $READ_ME"],
            secrets=["READ_ME"],
            namespace="olive",
            submitted_by="olive",
        )
        job_id = int(await jobs.create(request))
        # Leasing the job to an executor is what hands it the value, and logs the read.
        leased = await dispatcher.dequeue("exec-test", ["default"])
        assert leased is not None and leased.record.id == job_id
        read_by.append(job_id)
    newest_first = read_by[::-1]

    async with signed_in(site, "olive") as olive:
        listing = await olive.get("/secrets?namespace=olive")
        assert 'href="/secrets/olive/READ_ME">Access log' in listing.text
        page = await olive.get("/secrets/olive/READ_ME")
        assert page.status_code == 200 and "Secret <code>READ_ME</code>" in page.text
        shown = [int(i) for i in re.findall(r'<a href="/jobs/(\d+)">job \d+</a>', page.text)]
        assert shown == newest_first[:ACCESSES_PER_PAGE]
        assert page.text.count("<td>olive</td>") == ACCESSES_PER_PAGE
        older = re.search(r'href="(/secrets/olive/READ_ME\?before=\d+)">Older reads', page.text)
        assert older, "no link to the older reads"
        rest = await olive.get(older.group(1))
        shown = [int(i) for i in re.findall(r'<a href="/jobs/(\d+)">job \d+</a>', rest.text)]
        assert shown == newest_first[ACCESSES_PER_PAGE:]
        assert "Older reads" not in rest.text and "Newest reads" in rest.text
        assert VALUE not in page.text + rest.text
    async with signed_in(site, "mallory") as mallory:
        answer = await mallory.get("/secrets/olive/READ_ME")
        assert answer.status_code == 404 and "/jobs/" not in answer.text
