"""The syntax of a search query: Sourcegraph's grammar, read into a tree of what was written.

OR binds loosest, then AND, then terms side by side (also ANDed); parentheses group, unless
they hold no operator or filter (`foo(a, b)` and `(a|b)` are patterns, Sourcegraph's
heuristic); NOT, or a - before a filter, excludes one pattern or filter. Without parentheses,
filters at the start and end of an OR scope all of it (`a OR b lang:go` is
`lang:go (a OR b)`), as Sourcegraph's hoisting does. search_query.py builds the expression.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Literal, TypeAlias

from offload.repos.search_filters import (
    FIELD,
    OPERATORS,
    PREDICATE,
    Filter,
    Filters,
    PatternType,
    QueryError,
    closing_paren,
    field_name,
    has_predicates,
    is_predicate,
    scan_quoted,
)

# Groups nest no deeper: each level may scan the rest of the query once more.
MAX_QUERY_DEPTH = 32


@dataclass
class Pattern:
    """A pattern as written: a word, a "quoted" string or a /regex/."""

    text: str
    kind: Literal["word", "quoted", "regex"]
    column: int  # of the pattern's first character (inside its quotes or slashes)
    start: int  # offset where the item starts
    negated: bool = False


@dataclass
class Seq:
    """Items side by side: filters, patterns and parenthesized groups."""

    items: list[Item]


@dataclass
class Op:
    """Operands joined by AND or OR."""

    kind: Literal["and", "or"]
    operands: list[Seq | Op]


Raw: TypeAlias = Seq | Op
Item: TypeAlias = Pattern | Filter | Seq | Op


class Parser:
    """One pass over the query text into the tree of what it says (`parse`)."""

    def __init__(self, text: str, pattern_type: PatternType) -> None:
        self.text = text
        self.end = len(text)
        self.pos = 0
        self.depth = 0
        self.grouped = False
        self.pattern_type = pattern_type
        self.filters = Filters(pattern_type)
        self.closing: dict[int, int] = {}
        self.operands_at: list[int] = []
        self._pair_parentheses()

    def parse(self) -> Raw:
        """The tree the whole text describes; its settings are in `filters`."""
        raw = self._or(None)
        if self.pos < self.end:
            raise QueryError(
                'this ) closes no (: remove it, or quote the pattern (")") to search for it',
                self.pos + 1,
            )
        return self._hoist(raw)

    # -- expressions ------------------------------------------------------------------------

    def _or(self, after: tuple[str, int] | None) -> Raw:
        operands = [self._and(after)]
        while self._at_operator("or"):
            operator = ("OR", self.pos + 1)
            self.pos += 2
            operands.append(self._and(operator))
        return operands[0] if len(operands) == 1 else Op("or", operands)

    def _and(self, after: tuple[str, int] | None) -> Raw:
        operands: list[Raw] = [self._seq(after)]
        while self._at_operator("and"):
            operator = ("AND", self.pos + 1)
            self.pos += 3
            operands.append(self._seq(operator))
        return operands[0] if len(operands) == 1 else Op("and", operands)

    def _seq(self, after: tuple[str, int] | None) -> Seq:
        items: list[Item] = []
        read = False
        while True:
            self._skip_spaces()
            if self.pos >= self.end or self.text[self.pos] == ")":
                break
            if self._at_operator("and") or self._at_operator("or"):
                if not read:
                    word = self.text[self.pos : self.pos + 3].strip().upper()
                    self._no_operand(after, (word, self.pos + 1))
                break
            read = True
            if self._at_operator("not"):
                negation = self._negation()
                if negation is not None:
                    items.append(negation)
            elif self.text[self.pos] == "(":
                items.append(self._parenthesized())
            elif (found := self._field()) is not None:
                item = self._filter(*found, by_not=False, start=self.pos)
                if item is not None:
                    items.append(item)
            else:
                items.append(self._pattern())
        if not read:
            self._no_operand(after, None)
        return Seq(items)

    def _no_operand(self, after: tuple[str, int] | None, before: tuple[str, int] | None) -> None:
        if after is not None:
            word, column = after
            side = "on its right"
        elif before is not None:
            word, column = before
            side = "on its left"
        elif self.pos < self.end and self.text[self.pos] == ")":
            raise QueryError(
                "empty parentheses or a ) that closes no (: remove it, or quote the pattern "
                '(")") to search for it',
                self.pos + 1,
            )
        else:
            raise QueryError("nothing to search for here: give a pattern or filter", self.pos + 1)
        raise QueryError(
            f"{word} at column {column} has nothing {side}: give a pattern or filter there "
            f'(to search for the word itself, write content:"{word.lower()}")',
            column,
        )

    def _at_operator(self, word: str) -> bool:
        """Whether AND, OR or NOT (any case) stands alone at pos, as Sourcegraph reads them."""
        end = self.pos + len(word)
        if self.text[self.pos : end].lower() != word:
            return False
        before = (
            self.pos == 0 or self.text[self.pos - 1].isspace() or self.text[self.pos - 1] == "("
        )
        after = end == self.end or self.text[end].isspace() or self.text[end] == ")"
        return before and after

    def _negation(self) -> Pattern | Filter | None:
        start = self.pos
        self.pos += 3
        self._skip_spaces()
        if (
            self.pos >= self.end
            or self.text[self.pos] == ")"
            or any(self._at_operator(word) for word in OPERATORS)
        ):
            raise QueryError(
                "NOT has nothing after it: give the pattern or filter to exclude (to search for "
                'the word itself, write content:"not")',
                start + 1,
            )
        if self.text[self.pos] == "(":
            raise QueryError(
                "NOT applies to one pattern or filter, not to a group in parentheses: negate "
                "each part instead (NOT (a OR b) is NOT a AND NOT b)",
                start + 1,
            )
        found = self._field()
        if found is None:
            pattern = self._pattern()
            pattern.negated, pattern.start = True, start
            return pattern
        match, name = found
        if match.group(1):
            raise QueryError(
                f"NOT before {match.group(0)} negates it twice: remove NOT or the -", start + 1
            )
        return self._filter(match, name, by_not=True, start=start)

    def _parenthesized(self) -> Pattern | Raw:
        """A group, or a pattern that merely has parentheses (`foo(bar)`, `(a|b)`, `()`)."""
        start = self.pos
        end = self._balanced_end(start)
        if end is not None:
            self.pos = end
            return self._word_pattern(start, end)
        if self.depth >= MAX_QUERY_DEPTH:
            raise QueryError(
                f"parentheses nest more than {MAX_QUERY_DEPTH} deep here; the limit is "
                f"{MAX_QUERY_DEPTH} (MAX_QUERY_DEPTH)",
                start + 1,
            )
        self.pos += 1
        self.depth += 1
        self.grouped = True
        inner = self._or(None)
        self._skip_spaces()
        if self.pos >= self.end:
            raise QueryError(
                f"the ( at column {start + 1} is never closed: add a ), or quote the pattern "
                '("(") to search for it',
                start + 1,
            )
        self.pos += 1
        self.depth -= 1
        return inner

    def _hoist(self, raw: Raw) -> Raw:
        """`repo:x a OR b lang:go` is `repo:x lang:go (a OR b)` when nothing is parenthesized."""
        if self.grouped or not isinstance(raw, Op):
            return raw
        first, *middle, last = raw.operands
        if not (isinstance(first, Seq) and isinstance(last, Seq)):
            return raw
        if any(_has_filter(operand) for operand in middle):
            return raw
        lead = [i for i in first.items if isinstance(i, Filter)]
        trail = [i for i in last.items if isinstance(i, Filter)]
        lead_patterns: list[Item] = [i for i in first.items if not isinstance(i, Filter)]
        trail_patterns: list[Item] = [i for i in last.items if not isinstance(i, Filter)]
        if not lead_patterns or not trail_patterns:
            return raw
        if lead and max(f.start for f in lead) > min(_start(p) for p in lead_patterns):
            return raw
        if trail and min(f.start for f in trail) < max(_start(p) for p in trail_patterns):
            return raw
        inner = Op(raw.kind, [Seq(lead_patterns), *middle, Seq(trail_patterns)])
        return Seq([*lead, *trail, inner])

    # -- words ------------------------------------------------------------------------------

    def _skip_spaces(self) -> None:
        while self.pos < self.end and self.text[self.pos].isspace():
            self.pos += 1

    def _field(self) -> tuple[re.Match[str], str] | None:
        match = FIELD.match(self.text, self.pos)
        name = field_name(match) if match is not None else None
        return None if match is None or name is None else (match, name)

    def _filter_or_operator_at(self, i: int) -> bool:
        """Whether a filter or an operator starts at i: then parentheses before it group."""
        match = FIELD.match(self.text, i)
        if match is not None and field_name(match) is not None:
            return True
        return self.text[i : i + 4].lower().startswith(("and ", "or ", "not "))

    def _balanced_end(self, start: int) -> int | None:
        """Where a pattern that starts at `start` ends, letting spaces sit inside parentheses.

        None when its parentheses do not balance or hold a filter or an operator: then they
        group (Sourcegraph's heuristic). A ) that closes an enclosing group ends the pattern.
        """
        i = start
        while i < self.end:
            char = self.text[i]
            if char.isspace():
                break
            if char == "(":
                # Jump to the matching ): scanning inside at every ( would be quadratic.
                closing = self.closing.get(i)
                if closing is None:
                    return None
                first = bisect.bisect_right(self.operands_at, i)
                if first < len(self.operands_at) and self.operands_at[first] < closing:
                    return None
                i = closing
            elif char == ")" and self.depth > 0:
                break
            elif char == "\\":
                i += 1
            i += 1
        return min(i, self.end)

    def _pair_parentheses(self) -> None:
        """Which ) closes each (, and where filters and operators start after a space or (."""
        opened: list[int] = []
        i = 0
        while i < self.end:
            char = self.text[i]
            if char == "\\":
                i += 2
                continue
            if char == "(":
                opened.append(i)
            elif char == ")" and opened:
                self.closing[opened.pop()] = i
            if (char.isspace() or char == "(") and self._filter_or_operator_at(i + 1):
                self.operands_at.append(i + 1)
            i += 1

    def _word_end(self, start: int) -> int:
        end = self._balanced_end(start)
        if end is None:
            end = start
            while end < self.end and not self.text[end].isspace():
                end += 1
        return end

    def _ends_token(self, i: int) -> bool:
        """Whether a quoted string or /regex/ may end just before i."""
        if i >= self.end or self.text[i].isspace():
            return True
        return self.text[i] == ")" and self.depth > 0

    def _pattern(self) -> Pattern:
        start = self.pos
        char = self.text[start]
        if char in "\"'" and self.pattern_type in ("keyword", "regexp"):
            quoted = self._quoted_pattern(start)
            if quoted is not None:
                return quoted
        elif char == "/" and self.pattern_type != "literal":
            return self._regex(start)
        end = self._word_end(start)
        self.pos = end
        return self._word_pattern(start, end)

    def _word_pattern(self, start: int, end: int) -> Pattern:
        return Pattern(self.text[start:end], "word", start + 1, start)

    def _quoted_pattern(self, start: int) -> Pattern | None:
        """A "quoted" or 'quoted' literal; None in regexp mode where quotes are regex text."""
        lenient = self.pattern_type == "regexp"
        try:
            value, end = scan_quoted(self.text, start, 0)
        except QueryError:
            if lenient:  # `"bootstrap": ".?4` is a regexp with quotes in it
                return None
            raise
        if not self._ends_token(end):
            if lenient:
                return None
            raise QueryError(
                "a quoted string must end at a space: separate it from what follows", end + 1
            )
        if not value:
            raise QueryError("empty quoted pattern: put the text to find in it", start + 1)
        self.pos = end
        return Pattern(value, "quoted", start + 2, start)

    def _regex(self, start: int) -> Pattern:
        """The /regex/ at start; it ends at the first unescaped / followed by a space or the end."""
        i = start + 1
        while i < self.end:
            if self.text[i] == "\\":
                i += 2
            elif self.text[i] == "/" and self._ends_token(i + 1):
                self.pos = i + 1
                if i == start + 1:
                    raise QueryError('empty /regex/: quote it ("//") to search for //', start + 1)
                return Pattern(self.text[start + 1 : i], "regex", start + 2, start)
            else:
                i += 1
        raise QueryError(
            "unterminated /regex/: end it with a / followed by a space, or quote the pattern "
            '("/...") to search for text that starts with /',
            start + 1,
        )

    # -- filters -----------------------------------------------------------------------------

    def _filter(
        self, match: re.Match[str], name: str, *, by_not: bool, start: int
    ) -> Filter | None:
        """The filter at pos, checked (None for settings such as count:, which are kept)."""
        written = match.group(0)
        self.pos = match.end()
        self.filters.refuse_unsupported(name, written, start + 1)
        negated = bool(match.group(1)) or by_not
        item = Filter(name, written, "", negated, start + 1, self.pos + 1, True, start)
        predicate = PREDICATE.match(self.text, self.pos) if has_predicates(name) else None
        if self.pos < self.end and self.text[self.pos] in "\"'":
            item.value, self.pos = scan_quoted(self.text, self.pos)
            if not self._ends_token(self.pos):
                raise QueryError(
                    "a quoted value must end at a space: separate it from what follows",
                    self.pos + 1,
                )
            item.value_column, item.exact = item.value_column + 1, False
        elif predicate is not None and is_predicate(name, predicate.group(1), self.pos + 1):
            self._predicate(item, predicate)
            return item
        else:
            self.pos = self._word_end(self.pos)
            item.value = self.text[item.value_column - 1 : self.pos]
        return self.filters.take(item, by_not)

    def _predicate(self, item: Filter, match: re.Match[str]) -> None:
        """repo:has.path(...) and friends: the name, then everything up to the matching )."""
        opening = match.end() - 1
        closing = closing_paren(self.text, opening)
        written = f"{item.name}:{match.group(1)}()"
        if closing is None:
            raise QueryError(
                f"the ( of {written} at column {opening + 1} is never closed: add a )",
                opening + 1,
            )
        self.pos = closing + 1
        if not self._ends_token(self.pos):
            raise QueryError(
                f"{written} must end at a space: separate it from what follows", self.pos + 1
            )
        self.filters.predicate(item, match.group(1), self.text[opening + 1 : closing], opening + 2)


def _has_filter(raw: Raw) -> bool:
    if isinstance(raw, Op):
        return any(_has_filter(operand) for operand in raw.operands)
    return any(
        isinstance(item, Filter) or (isinstance(item, Seq | Op) and _has_filter(item))
        for item in raw.items
    )


def _start(item: Item) -> int:
    return item.start if isinstance(item, Pattern | Filter) else 0


__all__ = ["MAX_QUERY_DEPTH", "Item", "Op", "Parser", "Pattern", "Raw", "Seq"]
