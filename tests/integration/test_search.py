"""Search queries evaluated over real git mirrors: repo, file and lang filters, patterns, count."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from offload.db.base import Database
from offload.repos.mirror import Mirrors
from offload.repos.registry import RepoRegistry
from offload.repos.search import QueryError, RepoTarget, parse_query, search
from offload.repos.syncer import Syncer

FILES: dict[str, dict[str, str | bytes]] = {
    "acme/api": {
        "src/server.py": "from flask import Flask\napp = Flask(__name__)\n# TODO: retry\n",
        "src/client.go": "package client\n\n// TODO: timeout\nfunc Get() {}\n",
        "README.md": "# API\nHello World from the api\n",
        "docs/setup.md": "Run make, then make install\n",
        # Binary (a NUL early on), though it holds the words the tests look for.
        "logo.png": b"\x89PNG\r\n\x1a\n\0\0\0 TODO Flask hello world",
    },
    "acme/web": {
        "README.md": "# Web\nhello world\n",
        "notes.txt": "world first, then hello\n",
        "i18n/fr.txt": "bon été\n",
        "app/index.ts": "export const greeting = 'hello';\n",
    },
    "other/tools": {
        "README.md": "# Tools\n",
        "scripts/build.sh": "#!/bin/sh\necho TODO\n",
    },
}


def git(cwd: Path, *args: str) -> None:
    """Run git as a user with no configuration of their own would."""
    env = {
        **os.environ,
        "HOME": str(cwd.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"


def make_repo(path: Path, files: dict[str, str | bytes]) -> None:
    """A repository whose main branch holds `files` in one commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (path / name).write_bytes(content)
        else:
            (path / name).write_text(content, encoding="utf-8")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "files")


class Corpus:
    """The mirrored repositories of FILES, and a way to search them."""

    def __init__(self, mirrors: Mirrors, targets: list[RepoTarget]) -> None:
        self.mirrors = mirrors
        self.targets = targets

    async def find(self, text: str) -> list[tuple[str, tuple[str, ...]]]:
        """(repository, paths) of each match of the query `text`, in the order search gives."""
        matches = await search(parse_query(text), self.targets, self.mirrors)
        commits = {t.name: t.commit for t in self.targets}
        assert all(m.commit == commits[m.name] for m in matches)
        return [(m.name, m.paths) for m in matches]


@pytest.fixture
async def corpus(db: Database, tmp_path: Path) -> Corpus:
    """FILES registered and mirrored, each searched at its default branch's head."""
    hosting = Syncer(RepoRegistry(db), Mirrors.in_data_dir(tmp_path / "data"))
    for name, files in FILES.items():
        make_repo(tmp_path / "sources" / name, files)
        await hosting.add(str(tmp_path / "sources" / name), name=name)
    targets = []
    for repo in reversed(await hosting.registry.list()):  # search sorts them itself
        assert repo.head_commit is not None
        targets.append(RepoTarget(repo.name, repo.head_commit))
    return Corpus(hosting.mirrors, targets)


async def test_repo_filters_select_repositories_and_return_no_paths(corpus: Corpus) -> None:
    assert await corpus.find("repo:^acme/") == [("acme/api", ()), ("acme/web", ())]
    assert await corpus.find("repo:acme -repo:web$") == [("acme/api", ())]
    assert await corpus.find("r:TOOLS") == [("other/tools", ())]  # names ignore case
    assert await corpus.find("repo:^acme/ count:1") == [("acme/api", ())]
    assert await corpus.find("repo:nothing") == []
    assert await corpus.find("repo:. fork:no archived:no context:global") == [
        ("acme/api", ()),
        ("acme/web", ()),
        ("other/tools", ()),
    ]


async def test_file_and_lang_filters_match_paths(corpus: Corpus) -> None:
    assert await corpus.find("file:README.md count:all") == [
        ("acme/api", ("README.md",)),
        ("acme/web", ("README.md",)),
        ("other/tools", ("README.md",)),
    ]
    assert await corpus.find(r"f:^src/ -file:\.go$") == [("acme/api", ("src/server.py",))]
    assert await corpus.find("lang:go") == [("acme/api", ("src/client.go",))]
    assert await corpus.find("lang:Markdown -f:^docs/ repo:api") == [("acme/api", ("README.md",))]
    assert await corpus.find("lang:typescript") == [("acme/web", ("app/index.ts",))]
    assert await corpus.find("-lang:markdown repo:tools") == [
        ("other/tools", ("scripts/build.sh",))
    ]
    assert await corpus.find(r"file:\.png$") == [("acme/api", ("logo.png",))]  # paths of binaries
    assert await corpus.find("lang:rust") == []  # a repository with no matching file is left out


async def test_literal_terms_are_anded_and_ignore_binary_files(corpus: Corpus) -> None:
    assert await corpus.find("todo") == [
        ("acme/api", ("src/client.go", "src/server.py")),
        ("other/tools", ("scripts/build.sh",)),
    ]
    assert await corpus.find("TODO retry") == [("acme/api", ("src/server.py",))]
    assert await corpus.find("Flask") == [("acme/api", ("src/server.py",))]  # not logo.png
    assert await corpus.find("/Fla.k/") == [("acme/api", ("src/server.py",))]
    assert await corpus.find("hello world") == [
        ("acme/api", ("README.md",)),
        ("acme/web", ("README.md", "notes.txt")),
    ]
    assert await corpus.find("hello world lang:typescript") == []
    assert await corpus.find("hello lang:markdown") == [
        ("acme/api", ("README.md",)),
        ("acme/web", ("README.md",)),
    ]
    assert await corpus.find("ÉTÉ") == [("acme/web", ("i18n/fr.txt",))]  # folds beyond ASCII


async def test_quoted_literals_regexes_and_case(corpus: Corpus) -> None:
    assert await corpus.find('"hello world"') == [
        ("acme/api", ("README.md",)),
        ("acme/web", ("README.md",)),
    ]
    assert await corpus.find('case:yes "Hello World"') == [("acme/api", ("README.md",))]
    assert await corpus.find(r"/func \w+\(\)/") == [("acme/api", ("src/client.go",))]
    # ^ and $ anchor at lines, as Sourcegraph's do.
    assert await corpus.find("/^# (API|Web)$/") == [
        ("acme/api", ("README.md",)),
        ("acme/web", ("README.md",)),
    ]
    assert await corpus.find("/^make/") == []
    assert await corpus.find("patterntype:standard hello world") == [
        ("acme/api", ("README.md",)),
        ("acme/web", ("README.md",)),
    ]
    assert await corpus.find("patterntype:regexp ^#.Web hel+o") == []  # one line, in order
    assert await corpus.find("patterntype:regexp then hel+o") == [("acme/web", ("notes.txt",))]


async def test_paths_count_content_and_select(corpus: Corpus) -> None:
    # A pattern matches a file's path or its content, unless type: says which.
    assert await corpus.find("setup") == [("acme/api", ("docs/setup.md",))]
    assert await corpus.find("type:file setup") == []
    assert await corpus.find("type:path flask") == []
    assert await corpus.find("content:setup") == []
    assert await corpus.find("lang:markdown -content:hello repo:acme") == [
        ("acme/api", ("docs/setup.md",))
    ]
    assert await corpus.find("todo count:1") == [("acme/api", ("src/client.go",))]
    assert await corpus.find("todo count:2") == [("acme/api", ("src/client.go", "src/server.py"))]
    assert await corpus.find("todo count:3") == await corpus.find("todo")
    assert await corpus.find("todo select:repo") == [("acme/api", ()), ("other/tools", ())]
    assert await corpus.find("todo select:repo count:1") == [("acme/api", ())]


def test_a_target_needs_a_full_commit_id() -> None:
    with pytest.raises(ValueError, match="give a full commit id"):
        RepoTarget("acme/api", "main")


@pytest.mark.parametrize(
    ("query", "column", "fragment"),
    [
        ("", 1, "the query is empty"),
        ("   ", 1, "the query is empty"),
        ("repo:x rev:main", 8, "the rev: filter is not supported by offload's search; supported:"),
        ("author:ada todo", 1, "author: filter is not supported"),
        ("lang:cobolt", 6, "unknown language 'cobolt' in lang: (did you mean cobol"),
        ('foo "bar baz', 5, 'unbalanced quote: close it with "'),
        ("repo:'x", 6, "unbalanced quote"),
        ("/foo(bar", 1, "unterminated /regex/"),
        ("x /a(b/", 5, "invalid regular expression 'a(b' in /regex/: missing ), unterminated"),
        ("file:a[b", 7, "invalid regular expression 'a[b' in the file: filter"),
        ("foo OR", 5, "OR at column 5 has nothing on its right"),
        ("not", 1, "NOT has nothing after it"),
        ("(foo OR bar", 1, "the ( at column 1 is never closed"),
        ("repo: foo", 1, "repo: needs a value, e.g. repo:"),
        ("lang:", 1, "lang: needs a value"),
        ("count:0", 7, "count:0 must be all or a positive number"),
        ("count:1 count:all", 9, "count: is given twice (columns 1 and 9)"),
        ("-count:5", 1, "count: cannot be negated"),
        ("type:diff", 6, "type:diff is not supported"),
        ("repo:acme@main", 10, "revisions (repo:NAME@REV) are not supported"),
        ("patterntype:fuzzy", 13, "patterntype:fuzzy is not one of keyword, standard"),
        ('"quoted"next', 9, "a quoted string must end at a space"),
        ('""', 1, "empty quoted pattern"),
        ("select:symbol", 8, "select:symbol is not supported"),
        ("fork:only", 6, "offload's repositories are never forks"),
    ],
)
def test_invalid_queries_say_what_and_where(query: str, column: int, fragment: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(query)
    assert caught.value.column == column
    assert fragment in caught.value.message
    assert str(caught.value).startswith(f"search query, column {column}: ")
