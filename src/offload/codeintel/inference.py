"""Which index jobs a commit gets: explicit configuration, else sourcegraph.yaml, else inference."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from offload.codeintel.config import (
    CONFIG_FILE,
    MAX_CONFIG_BYTES,
    ConfigErrors,
    IndexJob,
    Step,
    parse_config,
)
from offload.codeintel.tree import Tree

# Inferred jobs kept for one repository (deepest roots are dropped first); a setting may lower it.
MAX_INFERRED_JOBS = 20
# Directories never searched for projects: tests and examples are not what people navigate,
# and vendored or installed dependencies are indexed in their own repositories.
EXCLUDED_DIRS = frozenset(
    {"test", "tests", "testdata", "example", "examples", "integration", "vendor", "node_modules"}
)
# The image each language's jobs run in; settings override them (IMAGES | overrides).
IMAGES: Mapping[str, str] = {
    "go": "sourcegraph/scip-go",
    "typescript": "sourcegraph/scip-typescript",
    "python": "sourcegraph/scip-python",
    "rust": "sourcegraph/scip-rust",
    "java": "sourcegraph/scip-java",
    "ruby": "sourcegraph/scip-ruby",
    "dotnet": "sourcegraph/scip-dotnet",
}
GO_ENV = ("GOPRIVATE", "GOPROXY", "GONOPROXY", "GOSUMDB", "GONOSUMDB", "NETRC_DATA")
# Credentials for private modules, from the global secret NETRC_DATA (as Sourcegraph's jobs
# read it). Written to the step's own /tmp, never the repository's directory.
NETRC = (
    'if [ -n "${NETRC_DATA:-}" ]; then umask 077; printf \'%s\\n\' "$NETRC_DATA" > /tmp/.netrc; '
    "export NETRC=/tmp/.netrc; fi"
)
# A project that pins its Node version (.nvmrc, .node-version, .n-node-version, engines.node)
# gets it from `n` when the image has it; `n` reads the pin itself, so no text of the
# repository becomes part of the command.
NODE_PIN_FILES = (".nvmrc", ".node-version", ".n-node-version")
N_AUTO = (
    "if command -v n >/dev/null 2>&1; then "
    "N_NODE_MIRROR=https://unofficial-builds.nodejs.org/download/release n --arch x64-musl auto; fi"
)
NODE_ENV = ("NPM_TOKEN",)
# A project name or version taken from a repository's files becomes an indexer argument only
# when it looks like one.
_PACKAGE_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,99}$")


@dataclass(frozen=True)
class Inputs:
    """What a recognizer sees: the commit's paths outside EXCLUDED_DIRS, the tree, its image."""

    paths: tuple[str, ...]
    tree: Tree
    image: str


Recognizer = Callable[[Inputs], Awaitable[list[IndexJob]]]


@dataclass(frozen=True)
class Selection:
    """The jobs chosen for a commit, where they came from, and what went wrong or was dropped."""

    source: Literal["explicit", "sourcegraph.yaml", "inference"]
    jobs: tuple[IndexJob, ...]
    errors: ConfigErrors | None = None
    notes: tuple[str, ...] = ()


async def select_jobs(
    explicit: str | None,
    tree: Tree,
    *,
    images: Mapping[str, str] = IMAGES,
    max_jobs: int = MAX_INFERRED_JOBS,
) -> Selection:
    """Explicit configuration wins over sourcegraph.yaml in the root, which wins over inference."""
    if explicit is not None:
        try:
            return Selection("explicit", parse_config(explicit, source="configuration"))
        except ConfigErrors as errors:
            return Selection("explicit", (), errors)
    # One byte over the limit, so that parse_config reports the size.
    text = await tree.read(CONFIG_FILE, MAX_CONFIG_BYTES + 1)
    if text is not None:
        # A repository that has the file means it: an invalid one indexes nothing (its errors
        # go on the repository's status) rather than something the owner did not ask for.
        try:
            return Selection("sourcegraph.yaml", parse_config(text))
        except ConfigErrors as errors:
            return Selection("sourcegraph.yaml", (), errors)
    jobs, notes = await infer_jobs(tree, images=images, max_jobs=max_jobs)
    return Selection("inference", jobs, notes=notes)


async def infer_jobs(
    tree: Tree, *, images: Mapping[str, str] = IMAGES, max_jobs: int = MAX_INFERRED_JOBS
) -> tuple[tuple[IndexJob, ...], tuple[str, ...]]:
    """The jobs every recognizer finds in the tree, capped at max_jobs; and notes on drops."""
    missing = sorted(set(RECOGNIZERS) - set(images))
    if missing:
        raise ValueError(f"no indexer image for {', '.join(missing)}; set one for each language")
    paths = tuple(p for p in await tree.paths() if not _excluded(p))
    found: list[tuple[int, str, int, IndexJob]] = []
    for order, (language, recognize) in enumerate(RECOGNIZERS.items()):
        for job in await recognize(Inputs(paths, tree, images[language])):
            found.append((_depth(job.root), job.root, order, job))
    found.sort(key=lambda entry: entry[:3])
    jobs = tuple(entry[3] for entry in found)
    if len(jobs) <= max_jobs:
        return jobs, ()
    dropped = jobs[max_jobs:]
    shown = ", ".join(f"{_name(j.indexer)} in {j.root or '/'}" for j in dropped[:10])
    more = f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""
    note = (
        f"{len(jobs)} index jobs were inferred; the limit is {max_jobs} per repository, so "
        f"{len(dropped)} were dropped: {shown}{more}. Configure the jobs in sourcegraph.yaml "
        "to choose them."
    )
    return jobs[:max_jobs], (note,)


async def go_jobs(inputs: Inputs) -> list[IndexJob]:
    """A job per go.mod (modules download first); one GOPATH-mode job for loose .go files.

    The download runs in the indexer's own step (local_steps), not a pre-index step of its
    own: each step starts with a fresh /tmp and home, so a module cache filled in one step
    would be gone when scip-go reads it in the next.
    """
    jobs = []
    for mod in _named(inputs.paths, "go.mod"):
        root = _dir(mod)
        jobs.append(
            IndexJob(
                indexer=inputs.image,
                root=root,
                local_steps=(NETRC, "go mod download"),
                indexer_args=("scip-go", "--no-animation"),
                requested_env_vars=GO_ENV,
                why=f"Go module {mod}",
            )
        )
    if not jobs:
        loose = [p for p in inputs.paths if p.endswith(".go")]
        if loose:
            why = f"Go files without a go.mod ({loose[0]}{_and_more(loose)})"
            args = ("GO111MODULE=off", "scip-go", "--no-animation")
            jobs.append(IndexJob(indexer=inputs.image, indexer_args=args, why=why))
    return jobs


async def typescript_jobs(inputs: Inputs) -> list[IndexJob]:
    """A job per tsconfig.json; else one inferring it from a package.json at the root."""
    present = set(inputs.paths)
    jobs = []
    for config in _named(inputs.paths, "tsconfig.json"):
        root = _dir(config)
        args: tuple[str, ...] = ("scip-typescript", "index")
        jobs.append(await _node_job(inputs, present, root, args, f"TypeScript project {config}"))
    if not jobs and "package.json" in present:
        args = ("scip-typescript", "index", "--infer-tsconfig")
        why = "JavaScript package package.json (no tsconfig.json: one is inferred)"
        jobs.append(await _node_job(inputs, present, "", args, why, infer=True))
    return jobs


async def _node_job(
    inputs: Inputs,
    present: set[str],
    root: str,
    args: tuple[str, ...],
    why: str,
    *,
    infer: bool = False,
) -> IndexJob:
    """A scip-typescript job in `root`: installs from the top down, the pinned Node first."""
    pin = await _node_pin(inputs, present, root)
    steps = await _node_installs(inputs, present, root, infer=infer, pinned=bool(pin))
    return IndexJob(
        indexer=inputs.image,
        root=root,
        steps=steps,
        local_steps=(N_AUTO,) if pin else (),
        indexer_args=args,
        requested_env_vars=NODE_ENV,
        why=why + (f"; Node version pinned by {pin}" if pin else ""),
    )


async def _node_pin(inputs: Inputs, present: set[str], root: str) -> str:
    """The file that pins the Node version for `root` (nearest first), or ""."""
    for directory in reversed(_ancestors(root)):
        for name in NODE_PIN_FILES:
            if _join(directory, name) in present:
                return _join(directory, name)
        manifest = _join(directory, "package.json")
        if manifest in present and await _engines_node(inputs.tree, manifest):
            return f"{manifest} (engines.node)"
    return ""


async def _engines_node(tree: Tree, manifest: str) -> bool:
    """Whether package.json at `manifest` names a Node version in `engines`."""
    text = await tree.read(manifest)
    if text is None:
        return False
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    engines = data.get("engines") if isinstance(data, dict) else None
    return isinstance(engines, dict) and isinstance(engines.get("node"), str)


async def _node_installs(
    inputs: Inputs, present: set[str], root: str, *, infer: bool, pinned: bool = False
) -> tuple[Step, ...]:
    """An install step for every directory from the top down to `root` that has package.json."""
    steps = []
    for directory in _ancestors(root):
        if _join(directory, "package.json") not in present:
            continue
        if _join(directory, "yarn.lock") in present or await _lerna_yarn(inputs, directory):
            command = "yarn"
        elif _join(directory, "pnpm-lock.yaml") in present:
            command = "pnpm install"
        else:
            command = "npm install"
        # Inferred JavaScript was never built by its owners with us: its install scripts
        # are not run.
        if infer:
            command += " --ignore-scripts"
        steps.append(Step(directory, inputs.image, (N_AUTO, command) if pinned else (command,)))
    return tuple(steps)


async def _lerna_yarn(inputs: Inputs, directory: str) -> bool:
    """Whether lerna.json in `directory` says the packages are installed with yarn."""
    text = await inputs.tree.read(_join(directory, "lerna.json"))
    if text is None:
        return False
    try:
        lerna = json.loads(text)
    except ValueError:
        return False
    return isinstance(lerna, dict) and lerna.get("npmClient") == "yarn"


_PYTHON_FILES = ("pyproject.toml", "setup.py", "requirements.txt", "PKG-INFO")


async def python_jobs(inputs: Inputs) -> list[IndexJob]:
    """A scip-python job per directory with packaging files, named and versioned when known."""
    roots: dict[str, list[str]] = {}
    for path in inputs.paths:
        name = _base(path)
        if name not in _PYTHON_FILES:
            continue
        root = _dir(path)
        if name == "PKG-INFO" and _base(root).endswith(".egg-info"):
            root = _dir(root)
        roots.setdefault(root, []).append(path)
    jobs = []
    for root, files in sorted(roots.items()):
        names = {_base(f) for f in files}
        project, version = await _python_project(inputs.tree, files)
        args: tuple[str, ...] = ("scip-python", "index")
        if project:
            args += (".", "--project-name", project)
            if version:
                args += ("--project-version", version)
        local: tuple[str, ...] = ()
        if names & {"pyproject.toml", "setup.py"}:
            local += ("pip install . || true",)
        if "requirements.txt" in names:
            local += ("pip install -r requirements.txt || true",)
        why = f"Python project {', '.join(sorted(files))}"
        if project:
            why += f" (project {project}" + (f" {version})" if version else ")")
        jobs.append(
            IndexJob(indexer=inputs.image, root=root, local_steps=local, indexer_args=args, why=why)
        )
    return jobs


async def _python_project(tree: Tree, files: list[str]) -> tuple[str, str]:
    """The project's name and version from PKG-INFO, else pyproject.toml; "" where unknown."""
    for path in sorted(files, key=lambda p: _base(p) != "PKG-INFO"):
        text = await tree.read(path)
        if text is None:
            continue
        if _base(path) == "PKG-INFO":
            name, version = _pkg_info(text.decode("utf-8", "replace"))
        elif _base(path) == "pyproject.toml":
            name, version = _pyproject(text.decode("utf-8", "replace"))
        else:
            continue
        if _PACKAGE_WORD.match(name):
            return name, version if _PACKAGE_WORD.match(version) else ""
    return "", ""


def _pkg_info(text: str) -> tuple[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the headers end at the first blank line; the description follows
        key, sep, value = line.partition(":")
        if sep and key in ("Name", "Version"):
            fields.setdefault(key, value.strip())
    return fields.get("Name", ""), fields.get("Version", "")


def _pyproject(text: str) -> tuple[str, str]:
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        return "", ""
    for table in (data.get("project"), data.get("tool", {}).get("poetry")):
        if isinstance(table, dict) and isinstance(table.get("name"), str):
            version = table.get("version")
            return table["name"], version if isinstance(version, str) else ""
    return "", ""


async def rust_jobs(inputs: Inputs) -> list[IndexJob]:
    """One job at the root when any Cargo.toml exists (the workspace is found from there)."""
    manifests = _named(inputs.paths, "Cargo.toml")
    if not manifests:
        return []
    why = f"Rust crate {manifests[0]}{_and_more(manifests)}"
    return [IndexJob(indexer=inputs.image, indexer_args=("scip-rust", "index"), why=why)]


_JVM_BUILD_FILES = frozenset(
    {
        "build.gradle",
        "build.gradle.kts",
        "gradlew",
        "settings.gradle",
        "settings.gradle.kts",
        "pom.xml",
        "build.sbt",
        "build.sc",
        "lsif-java.json",
    }
)
_JVM_SOURCES = (".java", ".kt", ".scala")


async def java_jobs(inputs: Inputs) -> list[IndexJob]:
    """A job per outermost Gradle, Maven or sbt root that has Java, Kotlin or Scala sources."""
    builds: dict[str, str] = {}
    for path in inputs.paths:
        if _base(path) in _JVM_BUILD_FILES:
            builds.setdefault(_dir(path), path)
    sources = [p for p in inputs.paths if p.endswith(_JVM_SOURCES)]
    jobs: list[IndexJob] = []
    for root in sorted(builds, key=lambda r: (_depth(r), r)):
        if any(_within(root, job.root) for job in jobs):
            continue  # the outer build already covers this project
        if not any(_within(source, root) for source in sources):
            continue
        args = ("scip-java", "index", "--build-tool=auto")
        why = f"JVM build {builds[root]}"
        jobs.append(IndexJob(indexer=inputs.image, root=root, indexer_args=args, why=why))
    return jobs


_RUBY_FILES = frozenset({"rubygems-metadata.yml", "Gemfile", "Gemfile.lock"})


async def ruby_jobs(inputs: Inputs) -> list[IndexJob]:
    """A job per directory with a gemspec, Gemfile or rubygems metadata."""
    roots: dict[str, str] = {}
    for path in inputs.paths:
        if _base(path) in _RUBY_FILES or path.endswith(".gemspec"):
            roots.setdefault(_dir(path), path)
    return [
        IndexJob(
            indexer=inputs.image,
            root=root,
            indexer_args=("scip-ruby-autoindex",),
            why=f"Ruby project {first}",
        )
        for root, first in sorted(roots.items())
    ]


async def dotnet_jobs(inputs: Inputs) -> list[IndexJob]:
    """A job per solution file; without any, a job per C# or Visual Basic project file."""
    files = [p for p in inputs.paths if p.endswith(".sln")]
    if not files:
        files = [p for p in inputs.paths if p.endswith((".csproj", ".vbproj"))]
    return [
        IndexJob(
            indexer=inputs.image,
            root=_dir(path),
            local_steps=("export DOTNET_EnableWriteXorExecute=0",),
            indexer_args=("scip-dotnet", "index", _base(path), "--output", "index.scip"),
            why=f".NET {'solution' if path.endswith('.sln') else 'project'} {path}",
        )
        for path in sorted(files)
    ]


# Languages in the order their jobs are listed for the same root.
RECOGNIZERS: Mapping[str, Recognizer] = {
    "go": go_jobs,
    "typescript": typescript_jobs,
    "python": python_jobs,
    "rust": rust_jobs,
    "java": java_jobs,
    "ruby": ruby_jobs,
    "dotnet": dotnet_jobs,
}


def _excluded(path: str) -> bool:
    return any(segment in EXCLUDED_DIRS for segment in path.split("/")[:-1])


def _named(paths: Iterable[str], name: str) -> list[str]:
    return sorted(p for p in paths if _base(p) == name)


def _dir(path: str) -> str:
    return path.rpartition("/")[0]


def _base(path: str) -> str:
    return path.rpartition("/")[2]


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _depth(root: str) -> int:
    return root.count("/") + 1 if root else 0


def _within(path: str, root: str) -> bool:
    return not root or path == root or path.startswith(root + "/")


def _ancestors(root: str) -> list[str]:
    """The root of the repository, then each directory down to `root`."""
    parts = root.split("/") if root else []
    return [""] + ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _and_more(paths: list[str]) -> str:
    return f" and {len(paths) - 1} more" if len(paths) > 1 else ""


def _name(indexer: str) -> str:
    """An indexer image as people name it: no sourcegraph/ prefix, no digest."""
    return indexer.removeprefix("sourcegraph/").split("@sha256:")[0]
