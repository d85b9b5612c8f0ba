"""Limits on the batch specs users send: how much work one spec may make offload do.

Every real spec fits well inside them; a spec over one is refused with a message that names
the limit, its value and (where there is one) the line and column. The YAML is measured while
it is composed, before anything walks it: ruamel.yaml keeps an alias as a reference to its
anchor, so a few hundred bytes of anchors ("billion laughs") expand only when the tree is
walked (the schema check, JSON), and that walk is what the node count stops.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml.composer import Composer
from ruamel.yaml.error import StreamMark
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scanner import RoundTripScanner

from offload.batches.spec.model import SpecError, SpecErrors

# Search queries (on[].repositoriesMatchingQuery): checked where the spec is parsed, by the
# parser the resolver runs too, which keeps its limits (repos/ cannot import batches/).
from offload.repos.search_query import MAX_QUERY_CHARS as MAX_QUERY_CHARS
from offload.repos.search_query import MAX_QUERY_DEPTH as MAX_QUERY_DEPTH
from offload.repos.search_query import MAX_QUERY_PATTERNS as MAX_QUERY_PATTERNS

MiB = 1024 * 1024

# The spec's YAML, in characters.
MAX_SPEC_CHARS = 1 * MiB
# Nesting of mappings and lists (real specs nest about 6 deep), aliases included.
MAX_DEPTH = 64
# YAML nodes (scalars, lists, mappings) once every alias is expanded.
MAX_NODES = 100_000
# Digits of an integer: Python reads an integer in time quadratic in its digits.
MAX_INTEGER_DIGITS = 100
# Entries of the lists that drive the resolver's and the executors' work.
MAX_ON = 10_000
MAX_ON_QUERIES = 100  # each query is run over every mirrored repository
MAX_STEPS = 100  # each step runs in every workspace
MAX_WORKSPACE_RULES = 100  # `workspaces:` entries; each is matched against every repository
MAX_IMPORTED_CHANGESETS = 10_000  # external IDs over all `importChangesets` entries
# Problems listed in one answer; the rest are counted.
MAX_ERRORS = 100

# What a submission (POST /api/batches/specs) may carry besides the spec.
MAX_FILES = 10_000
MAX_FILES_BYTES = 16 * MiB  # the mounted files, decoded
# The whole request body: the spec (JSON-escaped) and the files (base64) with room to spare.
MAX_SUBMISSION_BYTES = 32 * MiB

# Parsing runs in worker processes (spec/workers.py): how many, how long one parse may take,
# and the address space of each, so a parse that explodes fails there and not on the server.
PARSE_WORKERS = 2
PARSE_DEADLINE = 10.0
PARSE_MEMORY = 1024 * MiB
# Submissions (running or waiting for a worker) beyond these are answered 503 (retry later).
MAX_WAITING_PARSES = 8

# Resolution (the worker's `batches.resolver`): workspaces one spec may produce, and how long
# it may take. The batch-scale target is 45,000 workspaces for one spec.
MAX_WORKSPACES = 100_000
RESOLUTION_DEADLINE = 10 * 60.0

# C0 controls but tab, newline and carriage return; DEL and C1 controls but NEL; surrogates
# (a JSON "\ud800" gives one, and no database stores it); the two non-characters YAML forbids.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff\ufffe\uffff]")

_LISTS = {
    ("on",): ("on", MAX_ON, "MAX_ON"),
    ("steps",): ("steps", MAX_STEPS, "MAX_STEPS"),
    ("workspaces",): ("workspaces", MAX_WORKSPACE_RULES, "MAX_WORKSPACE_RULES"),
}
_INT_TAG = "tag:yaml.org,2002:int"


class SpecLimitExceeded(SpecErrors):
    """A spec over one of the limits above; `status` is the HTTP answer (413 for size)."""

    def __init__(self, error: SpecError, status: int = 422) -> None:
        self.status = status
        super().__init__([error])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors[0], self.status))


def over(
    message: str, *, source: str, status: int = 422, mark: StreamMark | None = None, path: str = ""
) -> SpecLimitExceeded:
    """The error for a limit passed at `mark` (a ruamel.yaml position), if known."""
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    error = SpecError(message, path=path, line=line, column=column, source=source)
    return SpecLimitExceeded(error, status)


def forbidden_character(text: str) -> str | None:
    """The first character of `text` that no spec or name may hold, if any."""
    found = _FORBIDDEN.search(text)
    return found[0] if found is not None else None


def check_text(text: str, source: str) -> None:
    """Refuse a spec that is too long or holds control characters, before any parsing."""
    if len(text) > MAX_SPEC_CHARS:
        raise over(
            f"the batch spec is {len(text):,} characters; the limit is {MAX_SPEC_CHARS:,} "
            f"(MAX_SPEC_CHARS, {MAX_SPEC_CHARS // MiB} MiB)",
            source=source,
            status=413,
        )
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        kind = "control character" if ord(bad[0]) < 0xA0 else "character"
        error = SpecError(
            f"{kind} U+{ord(bad[0]):04X} is not allowed in a batch spec (of the control "
            "characters, only tab, newline and carriage return are); is this a binary file?",
            line=line,
            column=column,
            source=source,
        )
        raise SpecLimitExceeded(error, 422)


def check_counts(data: Mapping[str, Any], source: str) -> None:
    """Refuse a spec whose lists are longer than their limits (aliases included)."""
    for (key,), (_, limit, constant) in _LISTS.items():
        value = data.get(key)
        if isinstance(value, list) and len(value) > limit:
            message = _too_many("entries", len(value), limit, constant)
            raise over(message, source=source, path=key)
    entries = data.get("on")
    if isinstance(entries, list):
        queries = sum(isinstance(e, dict) and "repositoriesMatchingQuery" in e for e in entries)
        if queries > MAX_ON_QUERIES:
            message = _too_many(
                "repositoriesMatchingQuery entries", queries, MAX_ON_QUERIES, "MAX_ON_QUERIES"
            )
            raise over(message + "; combine queries with OR", source=source, path="on")
    imports = data.get("importChangesets")
    if isinstance(imports, list):
        ids = sum(
            len(c["externalIDs"])
            for c in imports
            if isinstance(c, dict) and isinstance(c.get("externalIDs"), list)
        )
        if ids > MAX_IMPORTED_CHANGESETS:
            limit, constant = MAX_IMPORTED_CHANGESETS, "MAX_IMPORTED_CHANGESETS"
            message = _too_many("externalIDs", ids, limit, constant)
            raise over(message, source=source, path="importChangesets")


def _too_many(name: str, count: int, limit: int, constant: str) -> str:
    return f"{count:,} {name}; the limit is {limit:,} ({constant})"


def _source(loader: Any) -> str:
    """The spec's name for errors: the reader sets it on the ruamel.yaml YAML object."""
    return str(getattr(loader, "spec_source", "<spec>"))


class LimitedScanner(RoundTripScanner):
    """ruamel.yaml's scanner, refusing flow collections ([ and {) nested past MAX_DEPTH.

    The composer's depth check comes too late for them: the scanner looks ahead over every
    open bracket that may start a key, in time quadratic in their number.
    """

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:
        """One more [ or {; refused past the limit."""
        if self.flow_level >= MAX_DEPTH:
            message = f"brackets nest more than {MAX_DEPTH} levels deep here; the limit is "
            message += f"{MAX_DEPTH} (MAX_DEPTH)"
            raise over(message, source=_source(self.loader), mark=self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


class LimitedComposer(Composer):
    """ruamel.yaml's composer, counting what the tree will be once aliases are expanded."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.source = _source(loader)
        self._nodes = 0
        # Size (expanded nodes) and height of every anchored node once it is complete.
        self._measured: dict[int, tuple[int, int]] = {}
        # Per open node: its path element and the height of its tallest child so far.
        self._open: list[list[Any]] = []

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, refusing it when it passes a limit."""
        event = self.parser.peek_event()
        step = self._step(parent, index, event.start_mark)
        if isinstance(event, AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._alias(event.anchor, target, event.start_mark)
            return super().compose_node(parent, index)
        self._count(1, event.start_mark)
        self._open.append([step, 0])
        if len(self._open) > MAX_DEPTH:
            self._too_deep(len(self._open), event.start_mark)
        start = self._nodes
        node = super().compose_node(parent, index)
        _, tallest = self._open.pop()
        self._grow(tallest + 1)
        if isinstance(node, ScalarNode) and node.tag == _INT_TAG:
            self._check_integer(node)
        if node.anchor is not None:
            self._measured[id(node)] = (self._nodes - start, tallest + 1)
        return node

    def _step(self, parent: Any, index: Any, mark: StreamMark) -> Any:
        """The path element of the node about to be composed; refuse a list past its limit."""
        if isinstance(parent, SequenceNode):
            path = tuple(step for step, _ in self._open[1:])  # below the document's root
            counted = _LISTS.get(path)
            if counted is not None and index >= counted[1]:
                name, limit, constant = counted
                message = f"more than {limit:,} entries; the limit is {limit:,} ({constant})"
                raise over(message, source=self.source, mark=mark, path=name)
            return index
        if isinstance(parent, MappingNode) and isinstance(index, ScalarNode):
            return str(index.value)
        return None

    def _alias(self, anchor: str, target: Node, mark: StreamMark) -> None:
        measured = self._measured.get(id(target))
        if measured is None:
            raise over(
                f"alias *{anchor} refers to a node that contains it; a batch spec cannot be "
                "recursive",
                source=self.source,
                mark=mark,
            )
        size, height = measured
        self._count(size, mark)
        if len(self._open) + height > MAX_DEPTH:
            self._too_deep(len(self._open) + height, mark)
        self._grow(height)

    def _grow(self, height: int) -> None:
        if self._open and height > self._open[-1][1]:
            self._open[-1][1] = height

    def _count(self, nodes: int, mark: StreamMark) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise over(
                f"the batch spec has more than {MAX_NODES:,} values once its aliases are "
                f"expanded; the limit is {MAX_NODES:,} (MAX_NODES)",
                source=self.source,
                mark=mark,
            )

    def _too_deep(self, depth: int, mark: StreamMark) -> None:
        raise over(
            f"the batch spec nests {depth} levels deep here; the limit is {MAX_DEPTH} (MAX_DEPTH)",
            source=self.source,
            mark=mark,
        )

    def _check_integer(self, node: ScalarNode) -> None:
        digits = len(str(node.value))
        if digits > MAX_INTEGER_DIGITS:
            raise over(
                f"an integer of {digits:,} digits; the limit is {MAX_INTEGER_DIGITS} "
                "(MAX_INTEGER_DIGITS); put it in quotes to make it a string",
                source=self.source,
                mark=node.start_mark,
            )
