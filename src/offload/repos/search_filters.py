"""The filters of a search query: the fields offload knows, their values and predicates.

`Filters` checks each filter as the parser meets it and keeps the settings a query gives once
(count:, type:, case:, ...). QueryError, raised by every part of the parser, is defined here.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from offload.repos.languages import UnknownLanguage, language
from offload.repos.search_tree import Where

PatternType: TypeAlias = Literal["keyword", "standard", "literal", "regexp"]
PATTERN_TYPES: tuple[PatternType, ...] = ("keyword", "standard", "literal", "regexp")

SUPPORTED_FILTERS = (
    "repo: (r:)",
    "-repo:",
    "repo:has.path()",
    "repo:has.content()",
    "repo:has.file(path:... content:...)",
    "file: (f:, path:)",
    "-file:",
    "file:has.content()",
    "lang: (l:)",
    "-lang:",
    "content:",
    "-content:",
    "count:",
    "type:",
    "patterntype:",
    "case:",
    "select:",
    "fork:",
    "archived:",
    "context:",
)
FIELD = re.compile(r"(-?)([A-Za-z]+):")
# A predicate's name after repo: or file:, up to its opening parenthesis.
PREDICATE = re.compile(r"([A-Za-z]+(?:\.[A-Za-z]+)*)\(")
OPERATORS = ("and", "or", "not")

_SUPPORTED = frozenset(
    {"repo", "file", "lang", "content", "count", "type", "patterntype", "case", "select"}
    | {"fork", "archived", "context"}
)
_NEGATABLE = frozenset({"repo", "file", "lang", "content"})
_SCALAR = frozenset({"count", "type", "patterntype", "case", "select", "fork", "archived"})
# Sourcegraph filters offload does not evaluate: named so that they fail loudly instead of
# being searched for as text.
_UNSUPPORTED = frozenset(
    {"rev", "repohasfile", "repohascommitafter", "timeout", "visibility", "after", "before"}
    | {"author", "committer", "message", "index", "stable", "repogroup"}
)
_ALIASES = {
    "r": "repo",
    "f": "file",
    "path": "file",
    "l": "lang",
    "language": "lang",
    "revision": "rev",
    "m": "message",
    "msg": "message",
    "since": "after",
    "until": "before",
}
_EXAMPLES = {
    "repo": r"repo:^github\.com/org/",
    "file": r"file:\.py$",
    "lang": "lang:python",
    "content": 'content:"some text"',
    "count": "count:all",
    "type": "type:file",
    "patterntype": "patterntype:keyword",
    "case": "case:yes",
    "select": "select:repo",
    "fork": "fork:yes",
    "archived": "archived:yes",
    "context": "context:global",
}
# What each predicate tests ("path", "content", "file" = path: and content:), by field.
_PREDICATES = {
    "repo": {
        "has.path": "path",
        "contains.path": "path",
        "has.content": "content",
        "contains.content": "content",
        "has.file": "file",
        "contains.file": "file",
        "contains": "contains",  # Sourcegraph's older repo:contains(file:... content:...)
    },
    "file": {"has.content": "content", "contains.content": "content", "contains": "content"},
}
_NO_DATES = "it searches each repository's head and keeps no commit dates"
_NO_METADATA = "its repositories carry no tags or metadata"
_PREDICATES_UNSUPPORTED = {
    "repo": {
        "has.commit.after": _NO_DATES,
        "contains.commit.after": _NO_DATES,
        "has.description": "its repositories carry no description",
        "has.topic": "its repositories carry no topics",
        "has.tag": _NO_METADATA,
        "has.meta": _NO_METADATA,
        "has.key": _NO_METADATA,
        "has": _NO_METADATA,
    },
    "file": {
        "has.owner": "it knows no code owners",
        "has.contributor": "it keeps no history to find contributors in",
    },
}
_PREDICATE_LIST = "repo:has.path(), repo:has.content(), repo:has.file(path:... content:...), "
_PREDICATE_LIST += "file:has.content()"


class QueryError(ValueError):
    """A search query offload cannot evaluate, with the 1-based column at fault."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message, column)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return f"search query, column {self.column}: {self.message}"


@dataclass
class Filter:
    """A field:value filter as written; `args` holds a predicate's path:/content: values."""

    name: str
    written: str
    value: str
    negated: bool
    column: int
    value_column: int
    exact: bool  # whether the value's characters are the query's (unquoted)
    start: int
    predicate: str | None = None  # a predicate as written: "repo:has.path()"
    args: dict[str, tuple[str, int, bool]] = field(default_factory=dict)


def field_name(match: re.Match[str]) -> str | None:
    """The canonical name of the field FIELD matched, None when offload knows no such field."""
    name = _ALIASES.get(match.group(2).lower(), match.group(2).lower())
    return name if name in _SUPPORTED or name in _UNSUPPORTED else None


def has_predicates(name: str) -> bool:
    """Whether values of this field may be predicates (repo:has.path(...))."""
    return name in _PREDICATES


def is_predicate(field_name: str, name: str, column: int) -> bool:
    """Whether `name(` after repo: or file: is a predicate; a misspelt has./contains. fails."""
    lowered = name.lower()
    if lowered in _PREDICATES[field_name] or lowered in _PREDICATES_UNSUPPORTED[field_name]:
        return True
    if lowered.split(".")[0] in ("has", "contains"):
        raise QueryError(
            f"unknown predicate {field_name}:{name}(); supported: {_PREDICATE_LIST}", column
        )
    return False


class Filters:
    """The filters of one query as the parser meets them: each checked, settings kept."""

    def __init__(self, pattern_type: PatternType) -> None:
        self.pattern_type = pattern_type
        self.count: int | None = None
        self.where: Where = "any"
        self.case_sensitive = False
        self.select_repo = False
        self.seen: dict[str, int] = {}

    def refuse_unsupported(self, name: str, written: str, column: int) -> None:
        """A Sourcegraph filter offload does not evaluate is an error, never searched text."""
        if name in _UNSUPPORTED:
            raise QueryError(
                f"the {written} filter is not supported by offload's search; supported: "
                + ", ".join(SUPPORTED_FILTERS),
                column,
            )

    def take(self, item: Filter, by_not: bool) -> Filter | None:
        """The filter, checked; None for a setting (count:, case:, ...), which is kept."""
        if not item.value:
            raise QueryError(
                f"{item.written} needs a value, e.g. {_EXAMPLES[item.name]}", item.column
            )
        if item.negated and item.name not in _NEGATABLE:
            raise QueryError(
                f"{item.name}: cannot be negated: remove the {'NOT' if by_not else '-'}",
                item.column,
            )
        if item.name in _SCALAR:
            if item.name in self.seen:
                raise QueryError(
                    f"{item.name}: is given twice (columns {self.seen[item.name]} and "
                    f"{item.column}): keep one",
                    item.column,
                )
            self.seen[item.name] = item.column
        handled: Filter | None = getattr(self, f"_on_{item.name}")(item)
        return handled

    def predicate(self, item: Filter, name: str, args: str, column: int) -> None:
        """Check repo:NAME(ARGS) or file:NAME(ARGS), ARGS starting at `column`, into `item`."""
        written = f"{item.name}:{name}()"
        unsupported = _PREDICATES_UNSUPPORTED[item.name].get(name.lower())
        if unsupported is not None:
            raise QueryError(
                f"{written} is not supported by offload's search: {unsupported}; supported "
                f"predicates: {_PREDICATE_LIST}",
                item.column,
            )
        tests = _PREDICATES[item.name][name.lower()]
        if item.name == "file" and item.negated:
            raise QueryError(f"{written} cannot be negated: remove the -", item.column)
        item.value = args
        if tests in ("path", "content"):
            if not args:
                raise QueryError(f"{written} needs a regular expression inside", column)
            item.predicate, item.args = written, {tests: (args, column, True)}
        else:
            keys = ("path", "content") if tests == "file" else ("file", "content")
            item.predicate, item.args = written, _predicate_args(args, column, keys, written)
            if "file" in item.args:
                item.args["path"] = item.args.pop("file")
        for key, (value, at, exact) in item.args.items():
            compile_regex(value, 0, at, exact, f"the {key} of {written}")

    def _on_repo(self, item: Filter) -> Filter:
        if "@" in item.value:
            raise QueryError(
                "revisions (repo:NAME@REV) are not supported: offload searches each "
                "repository's default branch; remove the @ and what follows",
                item.value_column + item.value.index("@"),
            )
        compile_regex(item.value, 0, item.value_column, item.exact, "the repo: filter")
        return item

    def _on_file(self, item: Filter) -> Filter:
        compile_regex(item.value, 0, item.value_column, item.exact, "the file: filter")
        return item

    def _on_lang(self, item: Filter) -> Filter:
        try:
            language(item.value)
        except UnknownLanguage as exc:
            hint = f" (did you mean {', '.join(exc.suggestions)}?)" if exc.suggestions else ""
            raise QueryError(
                f"unknown language {item.value!r} in lang:{hint}; lang: takes a language name "
                "or alias as Pygments knows it (e.g. go, python, hcl, dockerfile, shell)",
                item.value_column,
            ) from None
        return item

    def _on_content(self, item: Filter) -> Filter:
        if self.pattern_type == "regexp":
            compile_regex(item.value, 0, item.value_column, item.exact, "the content: filter")
        return item

    def _on_count(self, item: Filter) -> None:
        if item.value.lower() == "all":
            return
        if not item.value.isdigit() or int(item.value) == 0:
            raise QueryError(
                f"count:{item.value} must be all or a positive number", item.value_column
            )
        self.count = int(item.value)

    def _on_type(self, item: Filter) -> None:
        value = item.value.lower()
        if value not in ("file", "path"):
            raise QueryError(
                f"type:{item.value} is not supported: use type:file or type:path", item.value_column
            )
        self.where = "content" if value == "file" else "path"

    def _on_patterntype(self, item: Filter) -> None:
        if item.value.lower() not in PATTERN_TYPES:
            choices = ", ".join(PATTERN_TYPES)
            raise QueryError(f"patterntype:{item.value} is not one of {choices}", item.value_column)

    def _on_case(self, item: Filter) -> None:
        value = item.value.lower()
        if value not in ("yes", "no", "true", "false"):
            raise QueryError(
                f"case:{item.value} must be case:yes or case:no (or true, false)", item.value_column
            )
        self.case_sensitive = value in ("yes", "true")

    def _on_select(self, item: Filter) -> None:
        if item.value.lower() not in ("repo", "file"):
            raise QueryError(
                f"select:{item.value} is not supported: use select:repo or select:file",
                item.value_column,
            )
        self.select_repo = item.value.lower() == "repo"

    def _on_fork(self, item: Filter) -> None:
        self._no_op(item, "forks")

    def _on_archived(self, item: Filter) -> None:
        self._no_op(item, "archived")

    def _no_op(self, item: Filter, what: str) -> None:
        # offload's repositories are plain mirrors: none is a fork or archived.
        if item.value.lower() not in ("yes", "no", "true", "false"):
            raise QueryError(
                f"{item.name}:{item.value} is not supported: offload's repositories are never "
                f"{what}; use {item.name}:yes or {item.name}:no",
                item.value_column,
            )

    def _on_context(self, item: Filter) -> None:
        if item.value != "global":
            raise QueryError(
                f"context:{item.value} is not supported: only context:global", item.value_column
            )


def closing_paren(text: str, opening: int) -> int | None:
    """The index of the ) that closes the ( at `opening` (backslash escapes one character)."""
    depth, i = 0, opening
    while i < len(text):
        if text[i] == "\\":
            i += 1
        elif text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def scan_quoted(text: str, start: int, offset: int = 0) -> tuple[str, int]:
    """The quoted string at `start` and the index after it; errors at `offset` + index + 1.

    \\" (or \\') and \\\\ stand for themselves, \\n, \\t and \\r for a newline, tab and carriage
    return; other escapes stay as written (`"\\."` is backslash, dot).
    """
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            escaped = {"n": "\n", "t": "\t", "r": "\r"}.get(nxt, char + nxt)
            out.append(nxt if nxt in (quote, "\\") else escaped)
            i += 2
        elif char == quote:
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise QueryError(f"unbalanced quote: close it with {quote}", offset + start + 1)


def compile_regex(pattern: str, flags: int, column: int, exact: bool, what: str) -> re.Pattern[str]:
    """`pattern` compiled; QueryError at the character at fault when `exact` (unquoted)."""
    try:
        with warnings.catch_warnings():
            # "Possible nested set" ([[:alpha:]]) warns of a change Python may make one day;
            # the pattern means today what it meant when it was checked.
            warnings.simplefilter("ignore", FutureWarning)
            return re.compile(pattern, flags)
    except re.error as exc:
        at = column + (exc.pos or 0) if exact else column
        raise QueryError(
            f"invalid regular expression {pattern!r} in {what}: {exc.msg} "
            "(patterns use Python's re syntax)",
            at,
        ) from None


def _predicate_args(
    text: str, column: int, keys: tuple[str, ...], written: str
) -> dict[str, tuple[str, int, bool]]:
    """The key:value arguments of repo:has.file(path:... content:...), with their columns."""
    found: dict[str, tuple[str, int, bool]] = {}
    words: list[tuple[str, int]] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        match = FIELD.match(text, i)
        if match is None or match.group(2).lower() not in keys:
            end = _word_end(text, i)
            if match is not None:
                raise QueryError(
                    f"{written} takes {' and '.join(k + ':' for k in keys)} only, not "
                    f"{match.group(0)}",
                    column + i,
                )
            words.append((text[i:end], column + i))
            i = end
            continue
        key = match.group(2).lower()
        if match.group(1):
            raise QueryError(f"{written} cannot negate its {key}: remove the -", column + i)
        if key in found:
            raise QueryError(f"{written} is given {key}: twice: keep one", column + i)
        at = match.end()
        if at < len(text) and text[at] in "\"'":
            value, end = scan_quoted(text, at, column - 1)
            found[key] = (value, column + at + 1, False)
        else:
            end = _word_end(text, at)
            found[key] = (text[at:end], column + at, True)
        if not found[key][0]:
            raise QueryError(f"{written}: {key}: needs a value", column + i)
        i = end
    if words and not found and len(words) == 1:
        return {"path": (words[0][0], words[0][1], True)}  # Sourcegraph's older has.file(x)
    if words:
        word, at = words[0]
        extra = ""
        if word.lower() in OPERATORS:
            extra = f"; {written} has no {word.upper()}: use one predicate per condition"
        raise QueryError(
            f"{written} takes {' and '.join(k + ':' for k in keys)}: write {keys[0]}:{word} "
            f"or content:{word}{extra}",
            at,
        )
    if not found:
        raise QueryError(f"{written} needs {' or '.join(k + ':' for k in keys)}", column)
    return found


def _word_end(text: str, i: int) -> int:
    while i < len(text) and not text[i].isspace():
        i += 1
    return i


__all__ = [
    "FIELD",
    "OPERATORS",
    "PATTERN_TYPES",
    "PREDICATE",
    "SUPPORTED_FILTERS",
    "Filter",
    "Filters",
    "PatternType",
    "QueryError",
    "closing_paren",
    "compile_regex",
    "field_name",
    "has_predicates",
    "is_predicate",
    "scan_quoted",
]
