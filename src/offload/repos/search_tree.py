"""The expression a search query stands for: tests of repositories and files, joined by AND/OR.

A test is about a repository as a whole (its name, or whether some file of it has a path or
content) or about one file (its path or content). Evaluated over one repository, a test gives
either "the repository matches" or the set of its files that match; AND and OR combine both
kinds (search.py does that over the mirrors).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

Where: TypeAlias = Literal["any", "content", "path"]

# A regular expression with no operator in it: git grep -F can look for its text.
_PLAIN = re.compile(r"(?:[^\\.^$*+?()\[\]{}|\n]|\\[^A-Za-z0-9\n])+")


@dataclass(frozen=True)
class RepoName:
    """`repo:REGEX`: the repository's name matches (or, negated, does not)."""

    regex: re.Pattern[str]
    negated: bool = False

    def matches(self, name: str) -> bool:
        """Whether the repository called `name` passes."""
        return (self.regex.search(name) is not None) != self.negated


@dataclass(frozen=True)
class RepoHas:
    """`repo:has.path()`, `has.content()`, `has.file()`: some file has this path and content."""

    path: re.Pattern[str] | None
    content: re.Pattern[str] | None
    negated: bool = False

    @property
    def content_text(self) -> str | None:
        """The content as fixed text, when the regular expression is just that."""
        if self.content is None:
            return None
        return literal_text(self.content.pattern)


@dataclass(frozen=True)
class PathFilter:
    """`file:REGEX`, `lang:NAME`: the file's path matches (or, negated, does not)."""

    regex: re.Pattern[str]
    negated: bool = False

    def matches(self, path: str) -> bool:
        """Whether a file at `path` passes."""
        return (self.regex.search(path) is not None) != self.negated


@dataclass(frozen=True)
class Term:
    """One pattern a file must match, in its path or content (or, negated, must not contain)."""

    pattern: str
    is_regex: bool
    where: Where
    negated: bool
    regex: re.Pattern[str]

    def matches(self, path: str, text: str | None) -> bool:
        """Whether a file with this path and text (None: binary or unread) satisfies the term."""
        if self.negated:
            if self.where == "path":
                return self.regex.search(path) is None
            return text is not None and self.regex.search(text) is None
        if self.where != "content" and self.regex.search(path):
            return True
        return self.where != "path" and text is not None and self.regex.search(text) is not None


@dataclass(frozen=True)
class And:
    """Every operand holds (for a file: the repository-wide ones, and the file's own)."""

    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """At least one operand holds."""

    operands: tuple[Node, ...]


Node: TypeAlias = RepoName | RepoHas | PathFilter | Term | And | Or
EVERYTHING = And(())
"""The expression of a query with no test at all: every repository matches."""


def tests(node: Node) -> Iterator[RepoName | RepoHas | PathFilter | Term]:
    """Every test in the expression, left to right."""
    if isinstance(node, And | Or):
        for operand in node.operands:
            yield from tests(operand)
    else:
        yield node


def names_only(node: Node) -> bool:
    """Whether the expression tests repository names and nothing else (no git needed)."""
    return all(isinstance(test, RepoName) for test in tests(node))


def name_verdict(node: Node, name: str) -> bool | None:
    """What the repository's name alone decides: False (no match), True, or None (unknown)."""
    if isinstance(node, RepoName):
        return node.matches(name)
    if isinstance(node, And):
        verdicts = [name_verdict(operand, name) for operand in node.operands]
        if False in verdicts:
            return False
        return True if all(verdicts) else None
    if isinstance(node, Or):
        verdicts = [name_verdict(operand, name) for operand in node.operands]
        if True in verdicts:
            return True
        return False if all(v is False for v in verdicts) else None
    return None


def cost(node: Node) -> int:
    """How much work a test takes, to run cheap ones first and narrow the files for the rest."""
    if isinstance(node, RepoName):
        return 0
    if isinstance(node, PathFilter) or (isinstance(node, Term) and node.where == "path"):
        return 1
    if isinstance(node, Term):
        return 2
    if isinstance(node, RepoHas):
        return 3
    return max((cost(operand) for operand in node.operands), default=0)


def literal_text(pattern: str) -> str | None:
    """The text a regular expression matches when it has no operator (`a\\.b` is `a.b`)."""
    if not _PLAIN.fullmatch(pattern):
        return None
    return re.sub(r"\\(.)", r"\1", pattern)


__all__ = [
    "EVERYTHING",
    "And",
    "Node",
    "Or",
    "PathFilter",
    "RepoHas",
    "RepoName",
    "Term",
    "Where",
    "cost",
    "literal_text",
    "name_verdict",
    "names_only",
    "tests",
]
