"""The template gallery's specs run for real: each template, filled with hostile values (quotes,
`$(...)`, `${{ }}`, `#`, sed's delimiter and specials), runs unchanged in a sandbox executor's
busybox image, and its preview holds exactly the diff git writes for the literal change."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from batchfleet import Batches, bare, register
from busybox import BusyboxMissing, build_rootfs, build_tarball
from ci import unavailable
from fleet import Fleet, git, make_repo

from offload.batches import gallery
from offload.db.url import DatabaseURL

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="executors need Linux namespaces")

FIND = 'it\'s "$(touch pwned)" ${{ repository.name }} # a/b&c\\d .* [x] ^$'
REPLACE = "{{ y }} 'done' & \\1 /"
PACKAGE = '{\n  "dependencies": {\n    "lodash": "^4.0.0",\n    "lodash-es": "1.0.0"\n  }\n}\n'
FILES = {
    "README.md": f"one {FIND} two {FIND}\nno match\n",
    "notes.txt": f"{FIND}\n",
    "web/package.json": PACKAGE,
    "requirements.txt": "requests>=2.0\n",
    "scripts/update.sh": 'printf "%s\\n" "$@" > arguments.txt\n',
}
NEW_FILE = "docs/it's $(touch pwned) #1.md"
CONTENT = "${{ repository.name }}\n'\"$(touch pwned)\"'\n# not a comment\n  indented\n"
ARGUMENTS = "'two words' \"$(touch pwned)\" '${{ x }}' \\#"
# Each template's values, and the files it should leave (None: deleted).
RUNS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "sed": (
        {"find": FIND, "replace": REPLACE, "files": "*.md"},
        {"README.md": FILES["README.md"].replace(FIND, REPLACE)},
    ),
    "file": ({"path": NEW_FILE, "content": CONTENT}, {NEW_FILE: CONTENT}),
    "bump": (
        {"manifest": "package.json", "dependency": "lodash", "version": "^4.17.21"},
        {"web/package.json": PACKAGE.replace("^4.0.0", "^4.17.21")},
    ),
    "script": (
        {"arguments": ARGUMENTS},
        {"arguments.txt": "two words\n$(touch pwned)\n${{ x }}\n#\n"},
    ),
}


def expected_diff(tmp: Path, key: str, changed: dict[str, str]) -> str:
    """The diff git itself writes for the change, as offload's preview shows it."""
    work = tmp / "expected" / key
    make_repo(work, FILES)
    for path, content in changed.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(content)
    git("add", "-A", cwd=work)
    return subprocess.run(
        ["git", "diff", "--cached", "--no-prefix", "--binary"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def batches(db_url: DatabaseURL, tmp_path: Path) -> Iterator[Batches]:
    fleet = Fleet(db_url, tmp_path / "data")
    asyncio.run(register(db_url, fleet.data_dir, {"site": bare(tmp_path / "site.git", FILES)}))
    try:
        tarball = build_tarball(build_rootfs(tmp_path / "rootfs"), tmp_path / "busybox.tar")
    except BusyboxMissing as exc:
        unavailable(str(exc))
    # Under the name the gallery's specs use: they run unchanged.
    imported = subprocess.run(
        [sys.executable, "-m", "offload", "executor", "images", "import", "busybox", str(tarball)],
        env={**fleet.env, "EXECUTOR_DATA_DIR": str(fleet.data_dir / "executor-exec-g"),
             "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    fleet.start_server()
    setup = Batches(fleet, tmp_path)
    setup.start_worker()
    fleet.start_executor("exec-g", slots=4, EXECUTOR_QUEUE_NAME="batches")
    yield setup
    setup.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_each_templates_spec_makes_exactly_the_literal_change(batches: Batches) -> None:
    for key, (values, changed) in RUNS.items():
        text = gallery.render(key, {**values, "name": f"gallery-{key}", "on": "repo:^site$"})
        view = batches.preview(text)
        assert view["states"] == {"completed": 1}, (key, view)
        (op,) = view["operations"]
        assert op["repo"] == "site", key
        assert op["diff"] == expected_diff(batches.tmp, key, changed), (key, op["diff"])
        # Nothing ran that the values hold: a file `pwned` would be in the diff.
        if key == "sed":
            assert op["title"] == f'Replace "{FIND}" with "{REPLACE}"'
