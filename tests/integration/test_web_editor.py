"""Creating a batch change from the web interface, as a browser without JavaScript (and htmx's
requests) see it: the template gallery, each template's form asking only for its fields, the
spec it makes, the editor's checks worded as `offload batch validate` words them, and running a
spec with the API's checks (namespace, queue grant, secrets, mounts, CSRF)."""

from __future__ import annotations

import asyncio
import html
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from access_site import Site, served
from web_client import csrf_of, signed_in

from offload.batches import gallery
from offload.batches.spec.limits import MAX_SPEC_CHARS
from offload.batches.store import BatchSpecRow, BatchStore
from offload.db.base import Database
from offload.db.url import DatabaseURL

HTMX = {"HX-Request": "true"}
VALID = """\
name: {name}
on:
  - repository: demo
steps:
  - run: echo hello > hello.txt
    container: busybox
changesetTemplate:
  title: Say hello
  branch: batch/hello
  commit:
    message: Say hello
"""
# Broken specs, each with what `offload batch validate` says of it.
BROKEN = {
    "unknown-field": VALID.format(name="x").replace("    container:", "    contaner:"),
    "yaml": "name: x\non: [\n  - repository: demo\nsteps:\n",
    "template": VALID.format(name="x").replace("title: Say hello", "title: ${{ nope( }}"),
    "query": VALID.format(name="x").replace(
        "repository: demo", 'repositoriesMatchingQuery: "repo:("'
    ),
    "tabs": VALID.format(name="x").replace("  - run:", "\t- run:"),
    "several": "name: two words\nsteps:\n  - run: 1\ndescription: [1]\n",
}


@pytest.fixture
async def site(db: Database, db_url: DatabaseURL, tmp_path: Path) -> AsyncIterator[Site]:
    async with served(db, db_url, tmp_path) as running:
        yield running


def form_fields(page: str, action: str) -> set[str]:
    """The names of the fields of the page's form that posts to `action`."""
    start = page.index(f'action="{action}"')
    form = page[start : page.index("</form>", start)]
    return set(re.findall(r'<(?:input|select|textarea|button)[^>]*\bname="([^"]+)"', form))


def editor_text(page: str) -> str:
    """The text of the page's spec editor, as the browser shows it."""
    found = re.search(r'<textarea id="spec"[^>]*>\n(.*?)</textarea>', page, re.DOTALL)
    assert found, "no spec editor on the page"
    return html.unescape(found.group(1))


def problems(partial: str) -> list[str]:
    """The problems a check lists, as the page's text reads."""
    items = re.findall(r"<li>(.*?)</li>", partial, re.DOTALL)
    return [html.unescape(re.sub(r"<[^>]+>", "", item)).strip() for item in items]


def cli_problems(spec: str, tmp_path: Path) -> list[str]:
    """What `offload batch validate` prints of `spec`, each line as the page words it."""
    path = tmp_path / "spec.yaml"
    path.write_text(spec)
    done = subprocess.run(
        [sys.executable, "-m", "offload", "batch", "validate", "-f", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "1000", "NO_COLOR": "1"},
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = []
    for line in done.stderr.splitlines():
        found = re.fullmatch(re.escape(str(path)) + r":(\d+):(\d+): (.*)", line)
        if found:
            lines.append(f"line {found[1]}, column {found[2]}: {found[3]}")
    assert lines, done.stderr
    return lines


async def specs_of(site: Site) -> list[BatchSpecRow]:
    rows = await site.db.fetch("SELECT * FROM batch_specs ORDER BY id")
    return [BatchSpecRow.from_row(r) for r in rows]


async def stored(site: Site, answer: httpx.Response) -> BatchSpecRow:
    """The spec a run of the editor made, by the address it sent the browser to."""
    assert answer.status_code == 303, answer.text
    found = re.fullmatch(r"/batch-specs/(\w+)", answer.headers["location"])
    assert found, answer.headers["location"]
    row = await BatchStore(site.db).spec_by_rand_id(found[1])
    assert row is not None
    return row


async def test_the_gallery_lists_the_templates_and_each_form_asks_only_for_its_fields(
    site: Site,
) -> None:
    async with signed_in(site, "olive") as olive:
        page = await olive.get("/batch-changes/new")
        assert page.status_code == 200
        for key, t in gallery.templates().items():
            assert f'href="/batch-changes/new?template={key}"' in page.text
            assert html.escape(t.title) in page.text
        for title in ("Replace text with sed", "Add or update a file", "Bump a dependency"):
            assert title in page.text
        assert "name: hello-world" in editor_text(page.text)
        assert form_fields(page.text, "/batch-changes/new") == {"csrf", "namespace", "spec"}

        for key, t in gallery.templates().items():
            form = await olive.get(f"/batch-changes/new?template={key}")
            assert form.status_code == 200, key
            own = {f.name for f in t.fields}
            assert form_fields(form.text, "/batch-changes/new/template") == {
                "csrf",
                "template",
                "namespace",
                "name",
                "on",
                "do",
                *own,
            }, key
            assert f'value="{html.escape(t.name)}"' in form.text
            assert html.escape(t.on) in form.text
            options = re.findall(r"<option[^>]*>([^<]+)</option>", form.text)
            assert {"olive", "acme"} <= set(options) and "mallory" not in options
        # Only the sed template's fields: none of another's.
        sed = (await olive.get("/batch-changes/new?template=sed")).text
        assert 'name="dependency"' not in sed and 'name="content"' not in sed
        acme = await olive.get("/batch-changes/new?template=sed&namespace=acme")
        assert re.search(r"<option selected>acme</option>", acme.text)

        missing = await olive.get("/batch-changes/new?template=nope")
        assert missing.status_code == 404 and "the gallery has sed" in missing.text


async def test_a_template_makes_its_spec_to_read_and_edit(site: Site) -> None:
    values = {
        "name": "spelling",
        "find": 'it\'s "$(rm -rf /)" ${{ x }} # /&\\',
        "replace": "{{ y }} 'done'",
        "files": "*.md",
        "on": "repo:^demo$",
    }
    async with signed_in(site, "olive") as olive:
        form = await olive.get("/batch-changes/new?template=sed")
        answer = await olive.post(
            "/batch-changes/new/template",
            data={"csrf": csrf_of(form.text), "template": "sed", "namespace": "acme", "do": "edit",
                  **values},
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert editor_text(answer.text) == gallery.render("sed", values)
        assert "Made from the template" in answer.text
        assert "Valid:" in answer.text and "<code>repo:^demo$</code>" in answer.text
        assert re.search(r"<option selected>acme</option>", answer.text)
    assert await specs_of(site) == [], "editing a template's spec runs nothing"


async def test_a_template_form_says_which_values_it_cannot_use(site: Site) -> None:
    async with signed_in(site, "olive") as olive:
        form = await olive.get("/batch-changes/new?template=sed")
        answer = await olive.post(
            "/batch-changes/new/template",
            data={"csrf": csrf_of(form.text), "template": "sed", "do": "run", "name": "n",
                  "find": "two\nlines", "replace": "kept & shown", "files": "", "on": "repo:."},
        )  # fmt: skip
        assert answer.status_code == 400
        assert "Text to find must be one line" in answer.text
        assert "Files is required" in answer.text
        assert 'aria-invalid="true"' in answer.text
        assert 'value="kept &amp; shown"' in answer.text
        forged = await olive.post(
            "/batch-changes/new/template",
            data={"csrf": "forged", "template": "sed", "do": "run"},
        )
        assert forged.status_code == 403
    assert await specs_of(site) == []


@pytest.mark.parametrize("namespace", ["olive", "acme"])
async def test_running_a_template_submits_the_spec_it_makes(site: Site, namespace: str) -> None:
    values = {"name": "bump-it", "manifest": "package.json", "dependency": "@types/node",
              "version": "^20.1.0", "on": "repo:^demo$"}  # fmt: skip
    async with signed_in(site, "olive") as olive:
        form = await olive.get("/batch-changes/new?template=bump")
        answer = await olive.post(
            "/batch-changes/new/template",
            data={"csrf": csrf_of(form.text), "template": "bump", "do": "run",
                  "namespace": namespace, **values},
        )  # fmt: skip
    row = await stored(site, answer)
    assert row.raw_spec == gallery.render("bump", values)
    assert (row.user_name, row.name, row.created_by) == (namespace, "bump-it", "olive")


@pytest.mark.parametrize("case", list(BROKEN))
async def test_the_checker_words_each_problem_as_the_cli_does(
    site: Site, case: str, tmp_path: Path
) -> None:
    spec = BROKEN[case]
    async with signed_in(site, "olive") as olive:
        token = csrf_of((await olive.get("/batch-changes/new")).text)
        answer = await olive.post(
            "/batch-changes/new/validate", data={"csrf": token, "spec": spec}, headers=HTMX
        )
    assert answer.status_code == 200
    found = problems(answer.text)
    assert found == cli_problems(spec, tmp_path)
    for line, column in re.findall(r"line (\d+), column (\d+):", " ".join(found)):
        assert f'data-line="{line}" data-column="{column}"' in answer.text


async def test_the_checker_summarizes_a_valid_spec_and_refuses_one_too_large(site: Site) -> None:
    async with signed_in(site, "olive") as olive:
        token = csrf_of((await olive.get("/batch-changes/new")).text)
        valid = await olive.post(
            "/batch-changes/new/validate",
            data={"csrf": token, "spec": VALID.format(name="hi").replace("\n", "\r\n")},
            headers=HTMX,
        )
        assert valid.status_code == 200
        text = re.sub(r"<[^>]+>", "", valid.text)
        assert "Valid: batch change hi, 1 step, on demo." in text
        huge = "name: x\n" + "#" * MAX_SPEC_CHARS
        over = await olive.post(
            "/batch-changes/new/validate", data={"csrf": token, "spec": huge}, headers=HTMX
        )
        assert over.status_code == 200
        assert f"the limit is {MAX_SPEC_CHARS:,} (MAX_SPEC_CHARS" in over.text
        forged = await olive.post(
            "/batch-changes/new/validate", data={"csrf": "forged", "spec": "name: x"}
        )
        assert forged.status_code == 403
    async with httpx.AsyncClient(base_url=site.url, headers=HTMX) as anonymous:
        ended = await anonymous.post("/batch-changes/new/validate", data={"spec": "name: x"})
        assert ended.status_code == 200 and "sign in again" in ended.text


async def test_a_users_checks_run_one_at_a_time_and_overtaken_ones_are_dropped(
    site: Site,
) -> None:
    # About two seconds of parsing: the longest lists a spec may have.
    on = "".join(f"  - repository: github.com/acme/repo-{i}\n" for i in range(10_000))
    steps = "".join(f"  - run: echo {i}\n    container: busybox\n" for i in range(100))
    template = "changesetTemplate:\n  title: t\n  branch: b\n  commit:\n    message: m\n"
    # Named afresh: a spec parsed before is remembered, and not parsed again.
    name = f"slow-{time.time_ns()}"
    slow = f"name: {name}\non:\n" + on + "steps:\n" + steps + template
    async with signed_in(site, "olive") as olive:
        token = csrf_of((await olive.get("/batch-changes/new")).text)
        finished: dict[str, float] = {}

        async def check(label: str, spec: str, delay: float) -> httpx.Response:
            await asyncio.sleep(delay)
            answer = await olive.post(
                "/batch-changes/new/validate", data={"csrf": token, "spec": spec}, headers=HTMX
            )
            finished[label] = time.monotonic()
            return answer

        first, overtaken, newest = await asyncio.gather(
            check("first", slow, 0),
            check("overtaken", VALID.format(name="b"), 0.3),
            check("newest", VALID.format(name="c"), 0.6),
        )
    assert first.status_code == 200 and f"batch change <code>{name}</code>, 100 steps" in first.text
    assert overtaken.status_code == 204 and overtaken.text == ""
    assert newest.status_code == 200 and "<code>c</code>" in newest.text
    assert finished["newest"] >= finished["first"], "two checks of one user ran at once"


async def test_running_a_spec_from_the_editor(site: Site) -> None:
    spec = VALID.format(name="hello")
    async with signed_in(site, "olive") as olive:
        token = csrf_of((await olive.get("/batch-changes/new")).text)
        for forged in ({"spec": spec}, {"spec": spec, "csrf": "forged"}):
            answer = await olive.post("/batch-changes/new", data=forged)
            assert answer.status_code == 403 and "CSRF" in answer.text
        assert await specs_of(site) == []

        broken = BROKEN["unknown-field"].replace("\n", "\r\n")
        answer = await olive.post("/batch-changes/new", data={"csrf": token, "spec": broken})
        assert answer.status_code == 400
        assert "The batch spec has problems" in answer.text
        assert "line 6, column 5: steps[0]" in re.sub(r"<[^>]+>", "", answer.text)
        assert editor_text(answer.text) == BROKEN["unknown-field"], "the text was not kept"
        assert await specs_of(site) == []

        answer = await olive.post(
            "/batch-changes/new", data={"csrf": token, "spec": spec.replace("\n", "\r\n")}
        )
        row = await stored(site, answer)
        assert (row.raw_spec, row.user_name, row.created_by) == (spec, "olive", "olive")
        # The spec is the API's: it reads the same there.
        progress = await site.as_owner("GET", f"/api/batches/specs/{row.rand_id}")
        assert progress["name"] == "hello" and progress["user"] == "olive"


async def test_a_spec_goes_only_where_the_api_would_take_it(site: Site) -> None:
    spec = VALID.format(name="elsewhere")
    async with signed_in(site, "mallory") as mallory:
        token = csrf_of((await mallory.get("/batch-changes/new")).text)
        for namespace in ("acme", "olive"):
            answer = await mallory.post(
                "/batch-changes/new", data={"csrf": token, "spec": spec, "namespace": namespace}
            )
            assert answer.status_code == 403
            assert f"You may not submit batch specs in {namespace}" in answer.text
            assert editor_text(answer.text) == spec
        mount = "    mount:\n      - path: ./fix.sh\n        mountpoint: /fix.sh\n"
        mounted = spec.replace("    container: busybox\n", "    container: busybox\n" + mount)
        answer = await mallory.post("/batch-changes/new", data={"csrf": token, "spec": mounted})
        assert answer.status_code == 400
        assert "steps[0].mount[0]: ./fix.sh" in answer.text
        assert "offload batch preview -f SPEC" in answer.text
        secret = spec.replace(
            "    container: busybox\n", "    container: busybox\n    env:\n      - NPM_TOKEN\n"
        )
        answer = await mallory.post("/batch-changes/new", data={"csrf": token, "spec": secret})
        assert answer.status_code == 400 and "NPM_TOKEN" in answer.text
        assert editor_text(answer.text) == secret
    assert await specs_of(site) == []


async def test_a_namespace_without_the_batches_queue_is_refused(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    async with (
        served(db, db_url, tmp_path, open_queues=["default"]) as site,
        signed_in(site, "olive") as olive,
    ):
        token = csrf_of((await olive.get("/batch-changes/new")).text)
        spec = VALID.format(name="ungranted")
        answer = await olive.post("/batch-changes/new", data={"csrf": token, "spec": spec})
        assert answer.status_code == 403
        assert "olive may not use the batches queue" in answer.text
        assert "offload queues grant batches" in answer.text
        assert editor_text(answer.text) == spec
        assert await specs_of(site) == []
