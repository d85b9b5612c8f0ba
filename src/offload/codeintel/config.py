"""Index job configuration: `IndexJob`, and reading Sourcegraph's `sourcegraph.yaml` format."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.scanner import RoundTripScanner

KiB = 1024
# The configuration file, in bytes: real ones are a few hundred.
MAX_CONFIG_BYTES = 256 * KiB
MAX_JOBS = 100
MAX_STEPS = 20  # `steps` of one job
MAX_COMMANDS = 100  # `commands` of one step, `local_steps`, `indexer_args`, `requestedEnvVars`
MAX_STRING_CHARS = 8 * KiB
# YAML nesting and node count: the format nests 5 deep; these bound what hostile text costs.
MAX_DEPTH = 16
MAX_NODES = 20_000
MAX_ERRORS = 50

DEFAULT_OUTFILE = "index.scip"
CONFIG_FILE = "sourcegraph.yaml"

_JOB_FIELDS = (
    "steps",
    "local_steps",
    "root",
    "indexer",
    "indexer_args",
    "outfile",
    "requestedEnvVars",
)
_STEP_FIELDS = ("root", "image", "commands")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# C0 controls but tab, newline and carriage return, and DEL: a binary file, not a configuration.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Step:
    """A pre-index command list run in its own container (`image`) in `root`."""

    root: str
    image: str
    commands: tuple[str, ...]


@dataclass(frozen=True)
class IndexJob:
    """One index job: pre-index steps, then the `indexer` image run with its args in `root`."""

    indexer: str
    root: str = ""
    steps: tuple[Step, ...] = ()
    local_steps: tuple[str, ...] = ()
    indexer_args: tuple[str, ...] = ()
    outfile: str = DEFAULT_OUTFILE
    requested_env_vars: tuple[str, ...] = ()
    # For people (`offload codeintel infer`), not part of the job: which file made this job.
    why: str = field(default="", compare=False)

    def payload(self) -> dict[str, Any]:
        """The job in Sourcegraph's configuration shape (what executors are given)."""
        return {
            "steps": [
                {"root": s.root, "image": s.image, "commands": list(s.commands)} for s in self.steps
            ],
            "local_steps": list(self.local_steps),
            "root": self.root,
            "indexer": self.indexer,
            "indexer_args": list(self.indexer_args),
            "outfile": self.outfile,
            "requestedEnvVars": list(self.requested_env_vars),
        }


@dataclass(frozen=True)
class ConfigError:
    """One problem in a configuration file, at a line and column (1-based) and a field path."""

    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.line}:{self.column}: "
        return where + (f"{self.path}: {self.message}" if self.path else self.message)


class ConfigErrors(ValueError):
    """Every problem found in a configuration file, in file order."""

    def __init__(self, errors: list[ConfigError], source: str = CONFIG_FILE) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line, e.column))
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{self.source}:{e}" for e in self.errors)


def parse_config(data: str | bytes, *, source: str = CONFIG_FILE) -> tuple[IndexJob, ...]:
    """The index jobs of a `sourcegraph.yaml` (YAML or JSON); ConfigErrors listing every problem."""
    text = _text(data, source)
    root = _load(text, source)
    checker = _Checker()
    jobs = checker.config(root)
    if checker.errors:
        raise ConfigErrors(checker.errors[:MAX_ERRORS], source)
    return jobs


def _fail(message: str, source: str, line: int = 1, column: int = 1) -> ConfigErrors:
    return ConfigErrors([ConfigError(line, column, "", message)], source)


def _text(data: str | bytes, source: str) -> str:
    size = len(data.encode("utf-8", "replace") if isinstance(data, str) else data)
    if size > MAX_CONFIG_BYTES:
        limit = f"{MAX_CONFIG_BYTES:,} bytes (MAX_CONFIG_BYTES)"
        raise _fail(f"the file is {size:,} bytes; the limit is {limit}", source)
    if isinstance(data, bytes):
        raw = data
        try:
            data = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            raise _fail("not UTF-8 text; is this a binary file?", source, line, column) from None
    bad = _CONTROL.search(data)
    if bad is not None:
        line = data.count("\n", 0, bad.start()) + 1
        column = bad.start() - (data.rfind("\n", 0, bad.start()) + 1) + 1
        message = f"control character U+{ord(bad[0]):04X}; is this a binary file?"
        raise _fail(message, source, line, column)
    return data


class _Scanner(RoundTripScanner):
    """Refuses brackets nested past MAX_DEPTH before the scanner's quadratic look-ahead."""

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        """One more [ or {; refused past the limit."""
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(f"brackets nest deeper than {MAX_DEPTH} (MAX_DEPTH)", self.reader)
        super().fetch_flow_collection_start(TokenClass, to_push)


class _Composer(Composer):
    """Refuses aliases (the format needs none; they multiply work), deep or huge trees."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, counting it."""
        event = self.parser.peek_event()
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            message = f"alias *{event.anchor}: anchors and aliases are not supported here; "
            raise _Refused(message + "write the values out", mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} values (MAX_NODES)", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} (MAX_DEPTH)", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Refused(Exception):
    """A limit passed while reading the YAML, where it was passed."""

    def __init__(self, message: str, where: Any) -> None:
        mark = where.get_mark() if hasattr(where, "get_mark") else where
        self.line = mark.line + 1 if mark is not None else 1
        self.column = mark.column + 1 if mark is not None else 1
        super().__init__(message)


def _load(text: str, source: str) -> Any:
    yaml = YAML(typ="rt")
    yaml.Scanner = _Scanner
    yaml.Composer = _Composer
    try:
        root = yaml.load(text)
    except _Refused as exc:
        raise _fail(str(exc), source, exc.line, exc.column) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or "invalid YAML"
        if "duplicate key" in problem:
            problem = problem.split(" with value")[0] + "; a field may appear only once"
        raise _fail(f"invalid YAML: {problem}", source, line, column) from None
    except RecursionError:
        raise _fail(f"nested deeper than {MAX_DEPTH} (MAX_DEPTH)", source) from None
    except Exception as exc:
        # The YAML library over untrusted text raises more kinds than it documents (a date
        # out of range, an unhashable key); every one is this file's problem, not offload's.
        raise _fail(f"invalid YAML: {exc}", source) from None
    if root is None:
        raise _fail("the file is empty; it needs index_jobs: [...]", source)
    return root


class _Checker:
    """Walks the loaded tree, building IndexJobs and collecting errors with their places."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def error(self, at: tuple[int, int], path: str, message: str) -> None:
        """Record one problem."""
        self.errors.append(ConfigError(at[0], at[1], path, message))

    def config(self, root: Any) -> tuple[IndexJob, ...]:
        """The jobs of the whole file."""
        if not isinstance(root, Mapping):
            found = _kind(root)
            self.error((1, 1), "", f"expected a mapping with index_jobs: [...], found {found}")
            return ()
        fields = self.fields(root, (1, 1), "", ("index_jobs",))
        if "index_jobs" not in fields:
            self.error((1, 1), "", "index_jobs is missing; add index_jobs: [...]")
            return ()
        entries = self.items(root, "index_jobs", "index_jobs", MAX_JOBS, "MAX_JOBS")
        jobs = (self.job(job, at, f"index_jobs[{i}]") for i, (job, at) in enumerate(entries))
        return tuple(job for job in jobs if job is not None)

    def job(self, node: Any, at: tuple[int, int], path: str) -> IndexJob | None:
        """One entry of index_jobs."""
        if not isinstance(node, Mapping):
            self.error(
                at, path, f"expected a mapping (indexer: ..., root: ...), found {_kind(node)}"
            )
            return None
        self.fields(node, at, path, _JOB_FIELDS)
        indexer = self.string(node, "indexer", path, at, required=True)
        steps = []
        for i, (step, step_at) in enumerate(
            self.items(node, "steps", f"{path}.steps", MAX_STEPS, "MAX_STEPS")
        ):
            built = self.step(step, step_at, f"{path}.steps[{i}]")
            if built is not None:
                steps.append(built)
        requested = self.strings(node, "requestedEnvVars", path)
        for name in requested:
            if not _ENV_NAME.match(name):
                where = _value_at(node, "requestedEnvVars", at)
                message = f"{name!r} is not an environment variable name (letters, digits, _)"
                self.error(where, f"{path}.requestedEnvVars", message)
        outfile = self.string(node, "outfile", path, at) or DEFAULT_OUTFILE
        return IndexJob(
            indexer=indexer,
            root=self.root(node, path, at),
            steps=tuple(steps),
            local_steps=self.strings(node, "local_steps", path),
            indexer_args=self.strings(node, "indexer_args", path),
            outfile=self.relative(outfile, _value_at(node, "outfile", at), f"{path}.outfile"),
            requested_env_vars=requested,
        )

    def step(self, node: Any, at: tuple[int, int], path: str) -> Step | None:
        """One entry of a job's steps."""
        if not isinstance(node, Mapping):
            found = _kind(node)
            self.error(at, path, f"expected a mapping (root, image, commands), found {found}")
            return None
        self.fields(node, at, path, _STEP_FIELDS)
        return Step(
            root=self.root(node, path, at),
            image=self.string(node, "image", path, at, required=True),
            commands=self.strings(node, "commands", path),
        )

    def fields(
        self, node: Mapping[Any, Any], at: tuple[int, int], path: str, known: tuple[str, ...]
    ) -> set[str]:
        """The keys of a mapping; unknown ones are errors naming the known ones."""
        keys = set()
        for key in node:
            if isinstance(key, str) and key in known:
                keys.add(key)
                continue
            where = _key_at(node, key, at)
            shown = key if isinstance(key, str) else _kind(key)
            self.error(where, path, f"unknown field {shown!r}; the fields are {', '.join(known)}")
        return keys

    def items(
        self, node: Mapping[Any, Any], key: str, path: str, limit: int, constant: str
    ) -> list[tuple[Any, tuple[int, int]]]:
        """The entries of a list field with their places; an error when it is not a list."""
        if key not in node or node[key] is None:
            return []
        value = node[key]
        if not isinstance(value, list):
            self.error(_value_at(node, key, (1, 1)), path, f"expected a list, found {_kind(value)}")
            return []
        if len(value) > limit:
            where = _value_at(node, key, (1, 1))
            self.error(where, path, f"{len(value):,} entries; the limit is {limit} ({constant})")
            return []
        places = getattr(value, "lc", None)
        parent = _value_at(node, key, (1, 1))
        return [(v, _place(places, "item", i, parent)) for i, v in enumerate(value)]

    def string(
        self,
        node: Mapping[Any, Any],
        key: str,
        path: str,
        at: tuple[int, int],
        required: bool = False,
    ) -> str:
        """A string field; "" when absent (an error if required)."""
        if key not in node or node[key] is None:
            if required:
                self.error(at, path, f"{key} is missing; it names an image, e.g. {key}: my/image")
            return ""
        return self.checked(node[key], _value_at(node, key, at), f"{path}.{key}") or ""

    def strings(self, node: Mapping[Any, Any], key: str, path: str) -> tuple[str, ...]:
        """A list-of-strings field."""
        found = []
        for i, (value, at) in enumerate(
            self.items(node, key, f"{path}.{key}", MAX_COMMANDS, "MAX_COMMANDS")
        ):
            text = self.checked(value, at, f"{path}.{key}[{i}]")
            if text is not None:
                found.append(text)
        return tuple(found)

    def checked(self, value: Any, at: tuple[int, int], path: str) -> str | None:
        """`value` if it is a string within MAX_STRING_CHARS, else None and an error."""
        if not isinstance(value, str):
            hint = "; put it in quotes" if isinstance(value, int | float | bool) else ""
            self.error(at, path, f"expected a string, found {_kind(value)}{hint}")
            return None
        if len(value) > MAX_STRING_CHARS:
            limit = f"{MAX_STRING_CHARS:,} (MAX_STRING_CHARS)"
            self.error(at, path, f"{len(value):,} characters; the limit is {limit}")
            return None
        return str(value)

    def root(self, node: Mapping[Any, Any], path: str, at: tuple[int, int]) -> str:
        """A `root` field: a directory of the repository, "" for its top."""
        text = self.string(node, "root", path, at)
        return self.relative(text, _value_at(node, "root", at), f"{path}.root")

    def relative(self, text: str, at: tuple[int, int], path: str) -> str:
        """`text` as a clean relative path; an error if it leaves the repository."""
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if text.startswith("/") or ".." in parts:
            self.error(at, path, f"{text!r} must be a path inside the repository (no / or ..)")
        return "/".join(parts)


def _place(places: Any, kind: str, key: Any, default: tuple[int, int]) -> tuple[int, int]:
    """The 1-based line and column ruamel.yaml recorded for a key, value or item."""
    try:
        line, column = getattr(places, kind)(key)
        return (int(line) + 1, int(column) + 1)
    except Exception:
        # Flow mappings written on one line may lack some positions: the parent's is close.
        return default


def _key_at(node: Any, key: Any, default: tuple[int, int]) -> tuple[int, int]:
    return _place(getattr(node, "lc", None), "key", key, default)


def _value_at(node: Any, key: Any, default: tuple[int, int]) -> tuple[int, int]:
    return _place(getattr(node, "lc", None), "value", key, default)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool) or type(value).__name__ == "ScalarBoolean":
        return f"a boolean ({value})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"
