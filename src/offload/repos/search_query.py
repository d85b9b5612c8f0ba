"""Search queries: the subset of Sourcegraph's query language that offload evaluates itself."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, TypeAlias

PatternType: TypeAlias = Literal["keyword", "standard", "literal", "regexp"]
Where: TypeAlias = Literal["any", "content", "path"]

LANGUAGES: dict[str, tuple[str, ...]] = {
    "c": ("c", "h"),
    "c++": ("cc", "cpp", "cxx", "c++", "hh", "hpp", "hxx", "h++", "h"),
    "csharp": ("cs", "csx"),
    "css": ("css",),
    "go": ("go",),
    "html": ("html", "htm"),
    "java": ("java",),
    "javascript": ("js", "jsx", "mjs", "cjs"),
    "json": ("json",),
    "kotlin": ("kt", "kts"),
    "markdown": ("md", "markdown"),
    "php": ("php",),
    "python": ("py", "pyi"),
    "ruby": ("rb", "rake", "gemspec"),
    "rust": ("rs",),
    "scala": ("scala", "sc"),
    "shell": ("sh", "bash", "zsh"),
    "swift": ("swift",),
    "typescript": ("ts", "tsx", "mts", "cts"),
    "yaml": ("yaml", "yml"),
}
"""The languages `lang:` knows, each with the file extensions it stands for."""
LANGUAGE_ALIASES = {"cpp": "c++", "c#": "csharp", "bash": "shell", "sh": "shell", "yml": "yaml"}
PATTERN_TYPES: tuple[PatternType, ...] = ("keyword", "standard", "literal", "regexp")

SUPPORTED_FILTERS = (
    "repo: (r:)",
    "-repo:",
    "file: (f:)",
    "-file:",
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
_FIELD = re.compile(r"(-?)([A-Za-z]+):")
_PREDICATE = re.compile(r"^(?:has|contains)(?:\.\w+)+\(")
_SNIFF = re.compile(r"(?:^|\s)patterntype:[\"']?(\w+)", re.IGNORECASE)
_OPERATORS = frozenset(("and", "or", "not"))


class QueryError(ValueError):
    """A search query offload cannot evaluate, with the 1-based column at fault."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message, column)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return f"search query, column {self.column}: {self.message}"


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
            return text is not None and self.regex.search(text) is None
        if self.where != "content" and self.regex.search(path):
            return True
        return self.where != "path" and text is not None and self.regex.search(text) is not None


@dataclass(frozen=True)
class Query:
    """A parsed query: which repositories, which files in them, and what those files contain."""

    text: str
    repos: tuple[re.Pattern[str], ...] = ()
    excluded_repos: tuple[re.Pattern[str], ...] = ()
    files: tuple[re.Pattern[str], ...] = ()
    excluded_files: tuple[re.Pattern[str], ...] = ()
    terms: tuple[Term, ...] = ()
    count: int | None = None
    case_sensitive: bool = False
    pattern_type: PatternType = "keyword"
    select_repo: bool = False

    @property
    def repo_only(self) -> bool:
        """Whether only repository filters were given, so no file needs to match."""
        return not (self.files or self.excluded_files or self.terms)

    def matches_repo(self, name: str) -> bool:
        """Whether the repository called `name` passes the repo: and -repo: filters."""
        return all(p.search(name) for p in self.repos) and not any(
            p.search(name) for p in self.excluded_repos
        )

    def matches_path(self, path: str) -> bool:
        """Whether a file at `path` passes the file:, -file:, lang: and -lang: filters."""
        return all(p.search(path) for p in self.files) and not any(
            p.search(path) for p in self.excluded_files
        )


@dataclass(frozen=True)
class _Chunk:
    """A content pattern as written, before adjacent ones are joined per the pattern type."""

    text: str
    kind: Literal["word", "quoted", "regex"]
    column: int  # of the pattern's first character (after the opening / of a regex)


def parse_query(text: str) -> Query:
    """Parse `text`; QueryError saying what is wrong, at which column, and what to write."""
    if not text.strip():
        raise QueryError("the query is empty: give repo:, file:, lang: or a pattern", 1)
    sniffed = _SNIFF.search(text)
    kind = sniffed.group(1).lower() if sniffed else "keyword"
    return _Parser(text, kind if kind in PATTERN_TYPES else "keyword").parse()


def _language(name: str, column: int) -> re.Pattern[str]:
    canonical = LANGUAGE_ALIASES.get(name.lower(), name.lower())
    if canonical not in LANGUAGES:
        known = ", ".join(sorted(LANGUAGES)) + "; aliases: " + ", ".join(sorted(LANGUAGE_ALIASES))
        raise QueryError(f"unknown language {name!r} in lang:; known languages: {known}", column)
    extensions = "|".join(re.escape(ext) for ext in LANGUAGES[canonical])
    return re.compile(rf"\.(?:{extensions})$", re.IGNORECASE)


def _compile(pattern: str, flags: int, column: int, exact: bool, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        at = column + (exc.pos or 0) if exact else column
        raise QueryError(
            f"invalid regular expression {pattern!r} in {what}: {exc.msg} "
            "(patterns use Python's re syntax)",
            at,
        ) from None


class _Parser:
    """One pass over the query text, collecting filters and content patterns."""

    def __init__(self, text: str, pattern_type: str) -> None:
        self.text = text
        self.pos = 0
        self.pattern_type: PatternType = next(t for t in PATTERN_TYPES if t == pattern_type)
        self.seen: dict[str, int] = {}
        self.repos: list[re.Pattern[str]] = []
        self.excluded_repos: list[re.Pattern[str]] = []
        # Compiled at the end: case: may come after them.
        self.files: list[tuple[bool, str, int, bool]] = []
        self.langs: list[tuple[bool, re.Pattern[str]]] = []
        self.chunks: list[_Chunk] = []
        self.contents: list[tuple[bool, str, int, bool]] = []
        self.count: int | None = None
        self.where: Where = "any"
        self.case_sensitive = False
        self.select_repo = False

    def parse(self) -> Query:
        """The query the whole text describes."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(self.text):
                break
            start = self.pos
            field = _FIELD.match(self.text, start)
            name = _ALIASES.get(field.group(2).lower(), field.group(2).lower()) if field else ""
            if field and (name in _SUPPORTED or name in _UNSUPPORTED):
                self.pos = field.end()
                self._filter(field.group(0), bool(field.group(1)), name, start)
            elif self.text[start] in "\"'" and self.pattern_type in ("keyword", "regexp"):
                quoted = self._quoted()
                if not quoted:
                    raise QueryError("empty quoted pattern: put the text to find in it", start + 1)
                self.chunks.append(_Chunk(quoted, "quoted", start + 2))
            elif self.text[start] == "/" and self.pattern_type != "literal":
                self.chunks.append(self._regex())
            else:
                self._word(self._until_space(), start)
        return self._build()

    def _until_space(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and not self.text[self.pos].isspace():
            self.pos += 1
        return self.text[start : self.pos]

    def _quoted(self) -> str:
        """The quoted string at pos: `\\"` is a quote, `\\\\` a backslash, other escapes stay."""
        start, quote = self.pos, self.text[self.pos]
        out: list[str] = []
        i = start + 1
        while i < len(self.text):
            ch = self.text[i]
            if ch == "\\" and i + 1 < len(self.text):
                nxt = self.text[i + 1]
                out.append(nxt if nxt in (quote, "\\") else ch + nxt)
                i += 2
            elif ch == quote:
                self.pos = i + 1
                if self.pos < len(self.text) and not self.text[self.pos].isspace():
                    raise QueryError(
                        "a quoted string must end at a space: separate it from what follows",
                        self.pos + 1,
                    )
                return "".join(out)
            else:
                out.append(ch)
                i += 1
        raise QueryError(f"unbalanced quote: close it with {quote}", start + 1)

    def _regex(self) -> _Chunk:
        """The /regex/ at pos; it ends at the first unescaped / followed by a space or the end."""
        start = self.pos
        i = start + 1
        while i < len(self.text):
            if self.text[i] == "\\":
                i += 2
            elif self.text[i] == "/" and (i + 1 == len(self.text) or self.text[i + 1].isspace()):
                self.pos = i + 1
                if i == start + 1:
                    raise QueryError('empty /regex/: quote it ("//") to search for //', start + 1)
                return _Chunk(self.text[start + 1 : i], "regex", start + 2)
            else:
                i += 1
        raise QueryError(
            "unterminated /regex/: end it with a / followed by a space, or quote the pattern "
            '("/...") to search for text that starts with /',
            start + 1,
        )

    def _word(self, word: str, start: int) -> None:
        if word.lower() in _OPERATORS:
            raise QueryError(
                f"{word} is a boolean operator, which offload's search does not support (all "
                f'patterns must match); write content:"{word}" to search for the word itself',
                start + 1,
            )
        grouping = word.startswith("(") or (word.endswith(")") and "(" not in word)
        if grouping and self.pattern_type in ("keyword", "standard"):
            raise QueryError(
                "parentheses group expressions, which offload's search does not support; "
                f'write content:"{word}" to search for the text itself',
                start + 1,
            )
        self.chunks.append(_Chunk(word, "word", start + 1))

    def _filter(self, written: str, negated: bool, name: str, start: int) -> None:
        column = start + 1
        value_column = self.pos + 1
        quoted = self.pos < len(self.text) and self.text[self.pos] in "\"'"
        value = self._quoted() if quoted else self._until_space()
        if name in _UNSUPPORTED:
            raise QueryError(
                f"the {written} filter is not supported by offload's search; supported: "
                + ", ".join(SUPPORTED_FILTERS),
                column,
            )
        if not value:
            raise QueryError(f"{written} needs a value, e.g. {_EXAMPLES[name]}", column)
        if negated and name not in _NEGATABLE:
            raise QueryError(f"{name}: cannot be negated: remove the -", column)
        if name in _SCALAR:
            if name in self.seen:
                raise QueryError(
                    f"{name}: is given twice (columns {self.seen[name]} and {column}): keep one",
                    column,
                )
            self.seen[name] = column
        exact = not quoted  # an error's offset in an unquoted value is its column
        getattr(self, f"_on_{name}")(value, negated, value_column + int(quoted), exact)

    def _on_repo(self, value: str, negated: bool, column: int, exact: bool) -> None:
        if _PREDICATE.match(value):
            raise QueryError(f"repository predicates ({value}) are not supported", column)
        if "@" in value:
            raise QueryError(
                "revisions (repo:NAME@REV) are not supported: offload searches each "
                "repository's default branch; remove the @ and what follows",
                column + value.index("@"),
            )
        # Repository names match case-insensitively whatever case: says, as in Sourcegraph.
        pattern = _compile(value, re.IGNORECASE, column, exact, "the repo: filter")
        (self.excluded_repos if negated else self.repos).append(pattern)

    def _on_file(self, value: str, negated: bool, column: int, exact: bool) -> None:
        if _PREDICATE.match(value):
            raise QueryError(f"file predicates ({value}) are not supported", column)
        _compile(value, 0, column, exact, "the file: filter")  # report errors where they are
        self.files.append((negated, value, column, exact))

    def _on_lang(self, value: str, negated: bool, column: int, exact: bool) -> None:
        self.langs.append((negated, _language(value, column)))

    def _on_content(self, value: str, negated: bool, column: int, exact: bool) -> None:
        self.contents.append((negated, value, column, exact))

    def _on_count(self, value: str, negated: bool, column: int, exact: bool) -> None:
        if value.lower() == "all":
            return
        if not value.isdigit() or int(value) == 0:
            raise QueryError(f"count:{value} must be all or a positive number", column)
        self.count = int(value)

    def _on_type(self, value: str, negated: bool, column: int, exact: bool) -> None:
        if value.lower() not in ("file", "path"):
            raise QueryError(f"type:{value} is not supported: use type:file or type:path", column)
        self.where = "content" if value.lower() == "file" else "path"

    def _on_patterntype(self, value: str, negated: bool, column: int, exact: bool) -> None:
        if value.lower() not in PATTERN_TYPES:
            choices = ", ".join(PATTERN_TYPES)
            raise QueryError(f"patterntype:{value} is not one of {choices}", column)

    def _on_case(self, value: str, negated: bool, column: int, exact: bool) -> None:
        if value.lower() not in ("yes", "no"):
            raise QueryError(f"case:{value} must be case:yes or case:no", column)
        self.case_sensitive = value.lower() == "yes"

    def _on_select(self, value: str, negated: bool, column: int, exact: bool) -> None:
        if value.lower() not in ("repo", "file"):
            raise QueryError(
                f"select:{value} is not supported: use select:repo or select:file", column
            )
        self.select_repo = value.lower() == "repo"

    def _on_fork(self, value: str, negated: bool, column: int, exact: bool) -> None:
        self._no_op("fork", value, column)

    def _on_archived(self, value: str, negated: bool, column: int, exact: bool) -> None:
        self._no_op("archived", value, column)

    def _no_op(self, name: str, value: str, column: int) -> None:
        # offload's repositories are plain mirrors: none is a fork or archived.
        if value.lower() not in ("yes", "no"):
            raise QueryError(
                f"{name}:{value} is not supported: offload's repositories are never "
                f"{'forks' if name == 'fork' else 'archived'}; use {name}:yes or {name}:no",
                column,
            )

    def _on_context(self, value: str, negated: bool, column: int, exact: bool) -> None:
        if value != "global":
            raise QueryError(f"context:{value} is not supported: only context:global", column)

    def _build(self) -> Query:
        flags = re.MULTILINE | (0 if self.case_sensitive else re.IGNORECASE)
        files = [
            (negated, _compile(value, flags, column, exact, "the file: filter"))
            for negated, value, column, exact in self.files
        ] + self.langs
        terms = self._terms(flags)
        for negated, value, column, exact in self.contents:
            regex = self.pattern_type == "regexp"
            source = value if regex else re.escape(value)
            pattern = _compile(source, flags, column, exact, "the content: filter")
            terms.append(Term(value, regex, "content", negated, pattern))
        return Query(
            text=self.text,
            repos=tuple(self.repos),
            excluded_repos=tuple(self.excluded_repos),
            files=tuple(p for negated, p in files if not negated),
            excluded_files=tuple(p for negated, p in files if negated),
            terms=tuple(terms),
            count=self.count,
            case_sensitive=self.case_sensitive,
            pattern_type=self.pattern_type,
            select_repo=self.select_repo,
        )

    def _terms(self, flags: int) -> list[Term]:
        """The content patterns, joined as Sourcegraph joins adjacent ones of this pattern type."""

        def literal(text: str) -> Term:
            return Term(text, False, self.where, False, re.compile(re.escape(text), flags))

        def regex(chunk: _Chunk) -> Term:
            pattern = _compile(chunk.text, flags, chunk.column, True, "/regex/")
            return Term(chunk.text, True, self.where, False, pattern)

        if not self.chunks:
            return []
        if self.pattern_type == "keyword":
            return [regex(c) if c.kind == "regex" else literal(c.text) for c in self.chunks]
        if self.pattern_type == "literal":
            return [literal(" ".join(c.text for c in self.chunks))]
        if self.pattern_type == "standard":
            terms: list[Term] = []
            words: list[str] = []
            for chunk in self.chunks:
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
        for chunk in self.chunks:
            if chunk.kind == "quoted":
                parts.append(re.escape(chunk.text))
            else:
                parts.append(regex(chunk).pattern)
        joined = parts[0] if len(parts) == 1 else "(?:" + ").*?(?:".join(parts) + ")"
        text = " ".join(c.text for c in self.chunks)
        return [Term(text, True, self.where, False, re.compile(joined, flags))]


__all__ = [
    "LANGUAGES",
    "LANGUAGE_ALIASES",
    "PATTERN_TYPES",
    "SUPPORTED_FILTERS",
    "PatternType",
    "Query",
    "QueryError",
    "Term",
    "Where",
    "parse_query",
]
