"""Index job selection over real git repositories: the inference table, precedence, the tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fleet import git

from offload.codeintel.inference import IMAGES, N_AUTO, NETRC, infer_jobs, select_jobs
from offload.codeintel.tree import GitTree

GO, TS, PY = IMAGES["go"], IMAGES["typescript"], IMAGES["python"]
RUST, JAVA, RUBY, DOTNET = IMAGES["rust"], IMAGES["java"], IMAGES["ruby"], IMAGES["dotnet"]
GO_ENV = ["GOPRIVATE", "GOPROXY", "GONOPROXY", "GOSUMDB", "GONOSUMDB", "NETRC_DATA"]


def repository(path: Path, files: dict[str, str | bytes], *, bare: bool = False) -> GitTree:
    """A git repository with one commit of `files`, as a GitTree (of a bare clone if `bare`)."""
    work = path / "work"
    work.mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=work)
    for name, content in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        (work / name).write_bytes(data)
    git("add", "-A", ".", cwd=work)
    git("commit", "-q", "--allow-empty", "-m", "initial", cwd=work)
    commit = git("rev-parse", "HEAD", cwd=work)
    if not bare:
        return GitTree(work, commit)
    git("clone", "-q", "--bare", str(work), str(path / "bare.git"), cwd=path)
    return GitTree(path / "bare.git", commit)


def job(
    indexer: str,
    args: list[str],
    root: str = "",
    steps: list[dict[str, Any]] | None = None,
    local: list[str] | None = None,
    env: list[str] | None = None,
) -> dict[str, Any]:
    """An expected job payload."""
    return {
        "steps": steps or [],
        "local_steps": local or [],
        "root": root,
        "indexer": indexer,
        "indexer_args": args,
        "outfile": "index.scip",
        "requestedEnvVars": env or [],
    }


def go(root: str = "") -> dict[str, Any]:
    """The job of a Go module at `root`."""
    local = [NETRC, "go mod download"]
    return job(GO, ["scip-go", "--no-animation"], root, local=local, env=GO_ENV)


def ts(
    root: str = "",
    installs: list[tuple[str, str]] = (),  # type: ignore[assignment]
    *,
    pinned: bool = False,
) -> dict[str, Any]:
    """The job of a tsconfig.json at `root`, with (directory, command) install steps; a
    pinned Node version is switched to first (by `n`, which reads the pin itself)."""
    first = [N_AUTO] if pinned else []
    steps = [{"root": d, "image": TS, "commands": [*first, c]} for d, c in installs]
    return job(TS, ["scip-typescript", "index"], root, steps, local=first, env=["NPM_TOKEN"])


def py(root: str = "", name: str = "", version: str = "", local: list[str] | None = None):  # type: ignore[no-untyped-def]
    """The job of a Python project at `root`."""
    args = ["scip-python", "index"]
    if name:
        args += [".", "--project-name", name] + (["--project-version", version] if version else [])
    return job(PY, args, root, local=local)


PIP = ["pip install . || true"]
PIP_REQ = ["pip install -r requirements.txt || true"]
JAVA_ARGS = ["scip-java", "index", "--build-tool=auto"]
PYPROJECT = '[project]\nname = "{}"\nversion = "{}"\n'

# (name, files, expected jobs in order). Each is made into a real repository.
TABLE: list[tuple[str, dict[str, str], list[dict[str, Any]]]] = [
    ("empty", {"README.md": "hi\n"}, []),
    ("go module", {"go.mod": "module x\n", "main.go": "package main\n"}, [go()]),
    (
        "go modules nested",
        {"go.mod": "module x\n", "tools/go.mod": "module t\n", "tools/t.go": "package t\n"},
        [go(), go("tools")],
    ),
    (
        "go without module",
        {"main.go": "package main\n", "lib/lib.go": "package lib\n"},
        [job(GO, ["GO111MODULE=off", "scip-go", "--no-animation"])],
    ),
    ("go vendor skipped", {"go.mod": "m\n", "vendor/dep/go.mod": "m\n"}, [go()]),
    (
        "typescript npm",
        {"package.json": "{}", "tsconfig.json": "{}"},
        [ts("", [("", "npm install")])],
    ),
    (
        "typescript with .nvmrc",
        {"package.json": "{}", ".nvmrc": "18\n", "tsconfig.json": "{}"},
        [ts("", [("", "npm install")], pinned=True)],
    ),
    (
        "typescript with engines.node in a nested package",
        {
            "package.json": "{}",
            "web/package.json": '{"engines": {"node": ">=20"}}',
            "web/tsconfig.json": "{}",
        },
        [ts("web", [("", "npm install"), ("web", "npm install")], pinned=True)],
    ),
    (
        "typescript yarn",
        {"package.json": "{}", "yarn.lock": "", "tsconfig.json": "{}"},
        [ts("", [("", "yarn")])],
    ),
    (
        "typescript pnpm",
        {"package.json": "{}", "pnpm-lock.yaml": "", "tsconfig.json": "{}"},
        [ts("", [("", "pnpm install")])],
    ),
    (
        "typescript lerna with yarn",
        {"package.json": "{}", "lerna.json": '{"npmClient": "yarn"}', "tsconfig.json": "{}"},
        [ts("", [("", "yarn")])],
    ),
    (
        "typescript workspace: every ancestor package.json installs",
        {
            "package.json": "{}",
            "yarn.lock": "",
            "packages/a/package.json": "{}",
            "packages/a/tsconfig.json": "{}",
            "packages/b/tsconfig.json": "{}",
        },
        [
            ts("packages/a", [("", "yarn"), ("packages/a", "npm install")]),
            ts("packages/b", [("", "yarn")]),
        ],
    ),
    (
        "javascript without tsconfig",
        {"package.json": "{}", "index.js": "1\n"},
        [
            job(
                TS,
                ["scip-typescript", "index", "--infer-tsconfig"],
                steps=[{"root": "", "image": TS, "commands": ["npm install --ignore-scripts"]}],
                env=["NPM_TOKEN"],
            )
        ],
    ),
    (
        "javascript with yarn without tsconfig",
        {"package.json": "{}", "yarn.lock": ""},
        [
            job(
                TS,
                ["scip-typescript", "index", "--infer-tsconfig"],
                steps=[{"root": "", "image": TS, "commands": ["yarn --ignore-scripts"]}],
                env=["NPM_TOKEN"],
            )
        ],
    ),
    ("node_modules skipped", {"tsconfig.json": "{}", "node_modules/x/tsconfig.json": "{}"}, [ts()]),
    (
        "python pyproject with name and version",
        {"pyproject.toml": PYPROJECT.format("mypkg", "1.2.0"), "mypkg/__init__.py": ""},
        [py("", "mypkg", "1.2.0", PIP)],
    ),
    (
        "python poetry",
        {"pyproject.toml": '[tool.poetry]\nname = "poet"\nversion = "0.3"\n'},
        [py("", "poet", "0.3", PIP)],
    ),
    ("python setup.py", {"setup.py": "from setuptools import setup\n"}, [py("", local=PIP)]),
    ("python requirements", {"requirements.txt": "requests\n"}, [py("", local=PIP_REQ)]),
    (
        "python egg-info PKG-INFO names the project",
        {
            "setup.py": "",
            "requirements.txt": "",
            "src/lib.egg-info/PKG-INFO": "Name: lib\nVersion: 4.5\n\nName: x\n",
        },
        [py("", local=PIP + PIP_REQ), py("src", "lib", "4.5")],
    ),
    (
        "python sdist PKG-INFO wins over pyproject",
        {"PKG-INFO": "Name: sd\nVersion: 9\n", "pyproject.toml": PYPROJECT.format("other", "1")},
        [py("", "sd", "9", PIP)],
    ),
    (
        "python hostile name is not an argument",
        {"pyproject.toml": PYPROJECT.format("x; rm -rf /", "1")},
        [py("", local=PIP)],
    ),
    (
        "rust workspace: one job at the root",
        {"Cargo.toml": "[workspace]\n", "a/Cargo.toml": "", "b/Cargo.toml": ""},
        [job(RUST, ["scip-rust", "index"])],
    ),
    ("rust nested crate only", {"crates/a/Cargo.toml": ""}, [job(RUST, ["scip-rust", "index"])]),
    (
        "gradle root suppresses nested builds",
        {
            "build.gradle": "",
            "settings.gradle": "",
            "app/build.gradle": "",
            "app/src/main/java/A.java": "class A {}\n",
        },
        [job(JAVA, JAVA_ARGS)],
    ),
    (
        "maven and sbt roots side by side, kotlin and scala",
        {
            "svc/pom.xml": "",
            "svc/src/Main.kt": "",
            "tool/build.sbt": "",
            "tool/src/T.scala": "",
            "docs/pom.xml": "",
        },
        [job(JAVA, JAVA_ARGS, "svc"), job(JAVA, JAVA_ARGS, "tool")],
    ),
    ("java build without sources", {"pom.xml": "", "README.md": ""}, []),
    (
        "ruby gemspec and Gemfile",
        {"mygem.gemspec": "", "Gemfile": "", "site/Gemfile.lock": ""},
        [job(RUBY, ["scip-ruby-autoindex"]), job(RUBY, ["scip-ruby-autoindex"], "site")],
    ),
    (
        "dotnet solution wins over projects",
        {"App.sln": "", "src/App/App.csproj": ""},
        [
            job(
                DOTNET,
                ["scip-dotnet", "index", "App.sln", "--output", "index.scip"],
                local=["export DOTNET_EnableWriteXorExecute=0"],
            )
        ],
    ),
    (
        "dotnet projects without a solution",
        {"src/A/A.csproj": "", "src/B/B.vbproj": ""},
        [
            job(
                DOTNET,
                ["scip-dotnet", "index", name, "--output", "index.scip"],
                root,
                local=["export DOTNET_EnableWriteXorExecute=0"],
            )
            for root, name in (("src/A", "A.csproj"), ("src/B", "B.vbproj"))
        ],
    ),
    (
        "excluded directories",
        {
            f"{d}/x/{f}": ""
            for d in ("test", "tests", "testdata", "example", "examples", "integration")
            for f in ("go.mod", "setup.py", "tsconfig.json", "Gemfile")
        }
        | {"src/testing/setup.py": ""},
        [py("src/testing", local=PIP)],
    ),
    (
        "monorepo: two Python projects and one TypeScript project",
        {
            "services/api/pyproject.toml": PYPROJECT.format("api", "0.1.0"),
            "services/api/api/__init__.py": "",
            "services/worker/setup.py": "",
            "services/worker/requirements.txt": "",
            "web/package.json": "{}",
            "web/pnpm-lock.yaml": "",
            "web/tsconfig.json": "{}",
        },
        [
            ts("web", [("web", "pnpm install")]),
            py("services/api", "api", "0.1.0", PIP),
            py("services/worker", local=PIP + PIP_REQ),
        ],
    ),
    (
        "several languages: shallow roots first, then by language",
        {"go.mod": "", "tsconfig.json": "{}", "requirements.txt": "", "b/Gemfile": ""},
        [go(), ts(), py("", local=PIP_REQ), job(RUBY, ["scip-ruby-autoindex"], "b")],
    ),
]


@pytest.mark.parametrize(("files", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
async def test_inferred_jobs(tmp_path: Path, files: dict[str, str], expected: list[Any]) -> None:
    """Each tree shape gets exactly its jobs, each saying which file made it."""
    tree = repository(tmp_path, dict(files))
    selection = await select_jobs(None, tree)
    assert selection.source == "inference"
    assert [j.payload() for j in selection.jobs] == expected
    assert selection.errors is None and selection.notes == ()
    for inferred in selection.jobs:
        assert inferred.why


async def test_the_cap_keeps_shallow_roots_and_says_what_it_dropped(tmp_path: Path) -> None:
    """Past max_jobs, the deepest roots are dropped and a note names them."""
    files = {f"m{i:02}/go.mod": "" for i in range(5)} | {"go.mod": "", "deep/er/x/go.mod": ""}
    tree = repository(tmp_path, dict(files))
    selection = await select_jobs(None, tree, max_jobs=4)
    assert [j.root for j in selection.jobs] == ["", "m00", "m01", "m02"]
    assert selection.notes == (
        "7 index jobs were inferred; the limit is 4 per repository, so 3 were dropped: "
        "scip-go in m03, scip-go in m04, scip-go in deep/er/x. Configure the jobs in "
        "sourcegraph.yaml to choose them.",
    )


async def test_why_names_the_file(tmp_path: Path) -> None:
    """`why` tells a person which file made each job."""
    files = {"svc/go.mod": "", "pyproject.toml": PYPROJECT.format("p", "2")}
    jobs, _ = await infer_jobs(repository(tmp_path, dict(files)))
    assert [j.why for j in jobs] == [
        "Python project pyproject.toml (project p 2)",
        "Go module svc/go.mod",
    ]


async def test_images_come_from_the_table_given(tmp_path: Path) -> None:
    """Overridden images are used for the indexer and its steps; a missing one is refused."""
    tree = repository(tmp_path, {"package.json": "{}", "tsconfig.json": "{}"})
    images = dict(IMAGES) | {"typescript": "registry.local/scip-typescript:1"}
    jobs, _ = await infer_jobs(tree, images=images)
    assert jobs[0].indexer == "registry.local/scip-typescript:1"
    assert jobs[0].steps[0].image == "registry.local/scip-typescript:1"
    with pytest.raises(ValueError, match="no indexer image for typescript"):
        await infer_jobs(tree, images={k: v for k, v in IMAGES.items() if k != "typescript"})


CONFIG = """\
index_jobs:
  - indexer: my/indexer
    root: app
    indexer_args: [index, --all]
"""


async def test_explicit_beats_sourcegraph_yaml_beats_inference(tmp_path: Path) -> None:
    """The precedence: explicit configuration, then the file in the root, then inference."""
    tree = repository(tmp_path, {"sourcegraph.yaml": CONFIG, "go.mod": ""})
    explicit = "index_jobs: [{indexer: other/indexer}]"
    chosen = await select_jobs(explicit, tree)
    assert chosen.source == "explicit"
    assert [(j.indexer, j.root) for j in chosen.jobs] == [("other/indexer", "")]
    from_file = await select_jobs(None, tree)
    assert from_file.source == "sourcegraph.yaml"
    assert [(j.indexer, j.root, j.indexer_args) for j in from_file.jobs] == [
        ("my/indexer", "app", ("index", "--all"))
    ]


async def test_sourcegraph_yaml_elsewhere_is_not_configuration(tmp_path: Path) -> None:
    """Only the file at the repository's root configures it."""
    tree = repository(tmp_path, {"sub/sourcegraph.yaml": CONFIG, "go.mod": ""})
    selection = await select_jobs(None, tree)
    assert selection.source == "inference"
    assert [j.indexer for j in selection.jobs] == [GO]


async def test_invalid_sourcegraph_yaml_gives_its_errors_and_no_jobs(tmp_path: Path) -> None:
    """An invalid file is reported with line:column; nothing is inferred in its place."""
    text = "index_jobs:\n  - root: app\n    indexer: 3\n"
    tree = repository(tmp_path, {"sourcegraph.yaml": text, "go.mod": ""})
    selection = await select_jobs(None, tree)
    assert selection.source == "sourcegraph.yaml" and selection.jobs == ()
    assert str(selection.errors) == (
        "sourcegraph.yaml:3:14: index_jobs[0].indexer: expected a string, found an integer (3); "
        "put it in quotes"
    )


async def test_binary_and_huge_sourcegraph_yaml(tmp_path: Path) -> None:
    """A binary or oversized file is an error on the status, not a crash."""
    binary = repository(tmp_path / "a", {"sourcegraph.yaml": b"\x00\x01\xff" * 10})
    selection = await select_jobs(None, binary)
    assert str(selection.errors) == "sourcegraph.yaml:1:3: not UTF-8 text; is this a binary file?"
    huge = repository(tmp_path / "b", {"sourcegraph.yaml": "#" * 300_000})
    selection = await select_jobs(None, huge)
    assert str(selection.errors) == (
        "sourcegraph.yaml:1:1: the file is 262,145 bytes; the limit is 262,144 bytes "
        "(MAX_CONFIG_BYTES)"
    )


async def test_git_tree_of_a_bare_repository(tmp_path: Path) -> None:
    """Paths and bounded reads come from git at the commit; nothing outside it is read."""
    outside = tmp_path / "secret.txt"
    outside.write_text("secret\n")
    tree = repository(tmp_path / "r", {"a/b.txt": "0123456789", "c": "x"}, bare=True)
    assert await tree.paths() == ("a/b.txt", "c")
    assert await tree.read("a/b.txt") == b"0123456789"
    assert await tree.read("a/b.txt", limit=4) == b"0123"
    assert await tree.read("../../secret.txt") is None
    assert await tree.read("HEAD:c") is None
    assert await tree.read("missing") is None


async def test_git_tree_refuses_what_is_not_a_commit_id(tmp_path: Path) -> None:
    """A commit must be a full id, so nothing reaches git as an option or a revision expression."""
    with pytest.raises(ValueError, match="not a full commit id"):
        GitTree(tmp_path, "--output=/tmp/x")
