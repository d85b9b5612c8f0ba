"""Search queries: the part of Sourcegraph's query language that offload evaluates itself.

`parse_query` reads a query (search_syntax.py: the grammar; search_filters.py: the filters)
and builds the expression it stands for (search_tree.py), which search.py runs over the
mirrors. Parsing is bounded by MAX_QUERY_CHARS, MAX_QUERY_DEPTH and MAX_QUERY_PATTERNS, and
every error names the column at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from offload.repos.languages import language
from offload.repos.search_filters import (
    PATTERN_TYPES,
    SUPPORTED_FILTERS,
    Filter,
    PatternType,
    QueryError,
    compile_regex,
)
from offload.repos.search_syntax import MAX_QUERY_DEPTH, Op, Parser, Pattern, Raw
from offload.repos.search_tree import (
    EVERYTHING,
    And,
    Node,
    Or,
    PathFilter,
    RepoHas,
    RepoName,
    Term,
    Where,
    names_only,
)

# A query is parsed in a spec worker and then run over every mirror: a real one is a line or
# two, nests a few parentheses deep (MAX_QUERY_DEPTH) and names a handful of patterns.
MAX_QUERY_CHARS = 10_000
MAX_QUERY_PATTERNS = 100  # patterns and repo:has.*() predicates: each reads every repository

_SNIFF = re.compile(r"(?:^|[\s(])patterntype:[\"']?(\w+)", re.IGNORECASE)


@dataclass(frozen=True)
class Query:
    """A parsed query: the expression repositories and files must satisfy, and its settings."""

    text: str
    expr: Node = EVERYTHING
    count: int | None = None
    case_sensitive: bool = False
    pattern_type: PatternType = "keyword"
    select_repo: bool = False

    @property
    def repo_only(self) -> bool:
        """Whether only repository names are tested, so no file needs to match."""
        return names_only(self.expr)


def parse_query(text: str) -> Query:
    """Parse `text`; QueryError saying what is wrong, at which column, and what to write."""
    if not text.strip():
        raise QueryError("the query is empty: give repo:, file:, lang: or a pattern", 1)
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(
            f"the query is {len(text):,} characters; the limit is {MAX_QUERY_CHARS:,} "
            "(MAX_QUERY_CHARS): split it into several repositoriesMatchingQuery entries",
            MAX_QUERY_CHARS + 1,
        )
    # The pattern type decides how quotes and slashes read, so it is found first.
    sniffed = _SNIFF.search(text)
    kind = sniffed.group(1).lower() if sniffed else "keyword"
    if sniffed and kind == "structural":
        raise QueryError(
            "patterntype:structural is a structural (comby) search, which offload cannot run: "
            "write the pattern as a regular expression with patterntype:regexp (a hole such as "
            ":[x] becomes .*? or [^,)]+) and keep comby in the steps to make the change",
            sniffed.start(1) + 1,
        )
    pattern_type: PatternType = next((t for t in PATTERN_TYPES if t == kind), "keyword")
    parser = Parser(text, pattern_type)
    raw = parser.parse()
    settings = parser.filters
    flags = re.MULTILINE | (0 if settings.case_sensitive else re.IGNORECASE)
    expr = _Builder(pattern_type, settings.where, flags).node(raw)
    return Query(
        text=text,
        expr=EVERYTHING if expr is None else expr,
        count=settings.count,
        case_sensitive=settings.case_sensitive,
        pattern_type=pattern_type,
        select_repo=settings.select_repo,
    )


class _Builder:
    """Turns the parsed tree into the expression, once case: and type: are known."""

    def __init__(self, pattern_type: PatternType, where: Where, flags: int) -> None:
        self.pattern_type = pattern_type
        self.where = where
        self.flags = flags
        self.patterns = 0

    def node(self, raw: Raw) -> Node | None:
        """The expression of `raw`; None when it holds only settings (count:, case:, ...)."""
        if isinstance(raw, Op):
            operands = [self.node(operand) or EVERYTHING for operand in raw.operands]
            return _join(And if raw.kind == "and" else Or, operands)
        parts: list[Node] = []
        run: list[Pattern] = []
        for item in raw.items:
            if isinstance(item, Pattern) and not item.negated:
                run.append(item)  # filters between patterns do not break a run
            elif isinstance(item, Filter):
                parts.append(self._filter(item))
            else:
                parts += self._run(run)
                run = []
                if isinstance(item, Pattern):
                    parts.append(self._negated(item))
                elif (group := self.node(item)) is not None:
                    parts.append(group)
        parts += self._run(run)
        return _join(And, parts) if parts else None

    def _counted(self, column: int) -> None:
        self.patterns += 1
        if self.patterns > MAX_QUERY_PATTERNS:
            raise QueryError(
                f"the query has more than {MAX_QUERY_PATTERNS} patterns and predicates; the "
                f"limit is {MAX_QUERY_PATTERNS} (MAX_QUERY_PATTERNS), as each one reads every "
                "repository: combine them into one regular expression",
                column,
            )

    def _filter(self, item: Filter) -> Node:
        if item.name == "repo" and item.predicate is None:
            # Repository names match case-insensitively whatever case: says, as in Sourcegraph.
            regex = compile_regex(item.value, re.IGNORECASE, item.value_column, item.exact, "repo:")
            return RepoName(regex, item.negated)
        if item.name == "repo":
            self._counted(item.column)
            path, content = (
                None if key not in item.args else compile_regex(*self._arg(item, key))
                for key in ("path", "content")
            )
            return RepoHas(path, content, item.negated)
        if item.name == "file" and item.predicate is not None:
            self._counted(item.column)
            regex = compile_regex(*self._arg(item, "content"))
            return Term(item.args["content"][0], True, "content", False, regex)
        if item.name == "file":
            regex = compile_regex(item.value, self.flags, item.value_column, item.exact, "file:")
            return PathFilter(regex, item.negated)
        if item.name == "lang":
            return PathFilter(language(item.value).path_regex(), item.negated)
        self._counted(item.column)  # content:
        regex_type = self.pattern_type == "regexp"
        source = item.value if regex_type else re.escape(item.value)
        pattern = compile_regex(source, self.flags, item.value_column, item.exact, "content:")
        return Term(item.value, regex_type, "content", item.negated, pattern)

    def _arg(self, item: Filter, key: str) -> tuple[str, int, int, bool, str]:
        value, column, exact = item.args[key]
        return value, self.flags, column, exact, f"the {key} of {item.predicate}"

    def _negated(self, item: Pattern) -> Term:
        self._counted(item.column)
        if item.kind == "regex" or (item.kind == "word" and self.pattern_type == "regexp"):
            regex = compile_regex(item.text, self.flags, item.column, True, "NOT")
            return Term(item.text, True, self.where, True, regex)
        regex = re.compile(re.escape(item.text), self.flags)
        return Term(item.text, False, self.where, True, regex)

    def _run(self, run: list[Pattern]) -> list[Node]:
        """Patterns side by side, joined as Sourcegraph joins them for the pattern type."""
        if not run:
            return []
        terms = self._terms(run)
        for _ in terms:
            self._counted(run[0].column)
        return list(terms)

    def _terms(self, chunks: list[Pattern]) -> list[Term]:
        flags = self.flags

        def literal(text: str) -> Term:
            return Term(text, False, self.where, False, re.compile(re.escape(text), flags))

        def regex(chunk: Pattern) -> Term:
            pattern = compile_regex(chunk.text, flags, chunk.column, True, "/regex/")
            return Term(chunk.text, True, self.where, False, pattern)

        if self.pattern_type == "keyword":
            return [regex(c) if c.kind == "regex" else literal(c.text) for c in chunks]
        if self.pattern_type == "literal":
            return [literal(" ".join(c.text for c in chunks))]
        if self.pattern_type == "standard":
            terms: list[Term] = []
            words: list[str] = []
            for chunk in chunks:
                if chunk.kind == "regex":
                    if words:
                        terms.append(literal(" ".join(words)))
                        words = []
                    terms.append(regex(chunk))
                else:
                    words.append(chunk.text)
            return [*terms, literal(" ".join(words))] if words else terms
        # regexp: adjacent patterns match in order on one line, as Sourcegraph's `.*?` join.
        parts = []
        for chunk in chunks:
            if chunk.kind == "quoted":
                parts.append(re.escape(chunk.text))
            else:
                parts.append(regex(chunk).regex.pattern)
        joined = parts[0] if len(parts) == 1 else "(?:" + ").*?(?:".join(parts) + ")"
        text = " ".join(c.text for c in chunks)
        pattern = compile_regex(joined, flags, chunks[0].column, False, "the joined patterns")
        return [Term(text, True, self.where, False, pattern)]


def _join(kind: type[And] | type[Or], parts: list[Node]) -> Node:
    flat: list[Node] = []
    for part in parts:
        flat += part.operands if isinstance(part, kind) else [part]
    return flat[0] if len(flat) == 1 else kind(tuple(flat))


__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_QUERY_DEPTH",
    "MAX_QUERY_PATTERNS",
    "PATTERN_TYPES",
    "SUPPORTED_FILTERS",
    "PatternType",
    "Query",
    "QueryError",
    "Term",
    "Where",
    "parse_query",
]
