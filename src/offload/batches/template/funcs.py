"""The functions templates call: Go's text/template builtins and Sourcegraph's batch helpers."""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from offload.batches.template.format import MAX_TEXT, go_type, sprint, sprintf, sprintln

Kind: TypeAlias = Literal["any", "str", "strs"]
"""What a parameter accepts: any value, a string, or a list of strings (Go's []string)."""


class _Missing:
    """The value of a map key that is not there (Go's invalid reflect.Value)."""

    def __repr__(self) -> str:
        return "<no value>"


MISSING: Any = _Missing()
"""What `.key` evaluates to when the map has no such key; it prints as <no value>."""

CONTEXTS = frozenset(
    {"batch_change", "outputs", "previous_step", "repository", "secrets", "step", "steps"}
)
"""Names Sourcegraph registers as functions returning parts of the context: repository.name."""


@dataclass(frozen=True)
class Function:
    """A function templates can call: its implementation and the kinds of its parameters."""

    call: Callable[..., Any]
    params: tuple[Kind, ...]
    variadic: Kind | None = None


def truth(value: Any) -> bool:
    """Go's truth: false, 0, nil, a missing key and empty strings, lists and maps are false."""
    if value is None or value is MISSING:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | tuple | Mapping):
        return len(value) > 0
    return True


def _and(first: Any, *rest: Any) -> Any:
    for value in (first, *rest):
        if not truth(value):
            return value
    return value


def _or(first: Any, *rest: Any) -> Any:
    for value in (first, *rest):
        if truth(value):
            return value
    return value


def _basic(value: Any) -> str:
    """Go's basicKind for comparisons: bool, int, float, string, nil, or other."""
    if value is None or value is MISSING:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "other"


def _incompatible(a: Any, b: Any) -> ValueError:
    return ValueError(f"incompatible types for comparison: {go_type(a)} and {go_type(b)}")


def _eq(first: Any, *others: Any) -> bool:
    if not others:
        raise ValueError("missing argument for comparison: eq needs at least two")
    kind = _basic(first)
    for other in others:
        other_kind = _basic(other)
        if kind == "nil" or other_kind == "nil":
            if kind == other_kind:
                return True
            continue
        if kind != other_kind:
            raise _incompatible(first, other)
        if kind == "other":
            raise ValueError(f"non-comparable type {go_type(first)}: compare strings or numbers")
        if first == other:
            return True
    return False


def _ne(a: Any, b: Any) -> bool:
    return not _eq(a, b)


def _lt(a: Any, b: Any) -> bool:
    for value in (a, b):
        if _basic(value) in ("nil", "other"):
            raise ValueError(f"invalid type for comparison: {go_type(value)}")
    if _basic(a) != _basic(b):
        raise _incompatible(a, b)
    if isinstance(a, bool):
        raise ValueError("invalid type for comparison: bool")
    return bool(a < b)


def _le(a: Any, b: Any) -> bool:
    return _lt(a, b) or _eq(a, b)


def _gt(a: Any, b: Any) -> bool:
    return not _le(a, b)


def _ge(a: Any, b: Any) -> bool:
    return not _lt(a, b)


def _not(value: Any) -> bool:
    return not truth(value)


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def _len(value: Any) -> int:
    if isinstance(value, str):
        return len(_utf8(value))
    if isinstance(value, list | tuple | Mapping):
        return len(value)
    if value is None:
        raise ValueError("len of nil pointer")
    raise ValueError(f"len of type {go_type(value)}")


def _position(index: Any, size: int) -> int:
    """An index into a list or string, checked as Go's indexArg does (size itself is allowed)."""
    if index is None:
        raise ValueError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise ValueError(f"cannot index slice/array with type {go_type(index)}")
    if index < 0 or index > size:
        raise ValueError(f"index out of range: {index}")
    return index


def _index(item: Any, *indexes: Any) -> Any:
    for index in indexes:
        if item is None:
            raise ValueError("index of untyped nil")
        if isinstance(item, str | list | tuple):
            sequence = _utf8(item) if isinstance(item, str) else item
            position = _position(index, len(sequence))
            if position == len(sequence):
                raise ValueError(f"index out of range: {index}")
            item = sequence[position]
        elif isinstance(item, Mapping):
            if not isinstance(index, str | int | float):
                raise ValueError(f"cannot index a map with {go_type(index)}")
            item = item.get(index)
        else:
            raise ValueError(f"can't index item of type {go_type(item)}")
    return item


def _slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise ValueError("slice of untyped nil")
    if len(indexes) > 3:
        raise ValueError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise ValueError("cannot 3-index slice a string")
        sequence: bytes | list[Any] | tuple[Any, ...] = _utf8(item)
    elif isinstance(item, list | tuple):
        sequence = item
    else:
        raise ValueError(f"can't slice item of type {go_type(item)}")
    bounds = [0, len(sequence), len(sequence)]
    for i, index in enumerate(indexes):
        bounds[i] = _position(index, len(sequence))
    if bounds[0] > bounds[1]:
        raise ValueError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    if len(indexes) == 3 and bounds[1] > bounds[2]:
        raise ValueError(f"invalid slice index: {bounds[1]} > {bounds[2]}")
    part = sequence[bounds[0] : bounds[1]]
    if isinstance(part, bytes):
        # Go would keep a cut multi-byte character as raw bytes; Python strings cannot.
        return part.decode("utf-8", "replace")
    return list(part)


def _escaped_args(args: tuple[Any, ...]) -> str:
    """The text html, js and urlquery escape: one string as is, anything else as print does."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if arg is None else arg for arg in args])


def _html(*args: Any) -> str:
    text = _escaped_args(args)
    for old, new in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;")):
        text = text.replace(old, new)
    return text.replace("\0", "\ufffd")


_JS_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def _js(*args: Any) -> str:
    out: list[str] = []
    for c in _escaped_args(args):
        if c in _JS_ESCAPES:
            out.append(_JS_ESCAPES[c])
        elif c < " ":
            out.append(f"\\u{ord(c):04X}")
        elif ord(c) >= 0x80 and not c.isprintable():
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def _urlquery(*args: Any) -> str:
    return urllib.parse.quote_plus(_escaped_args(args), safe="", errors="surrogatepass")


def _print(*args: Any) -> str:
    return sprint(list(args))


def _println(*args: Any) -> str:
    return sprintln(list(args))


def _printf(form: str, *args: Any) -> str:
    return sprintf(form, list(args))


def _check_size(size: int) -> None:
    if size > MAX_TEXT:
        raise ValueError(f"result would be longer than {MAX_TEXT} characters")


def _join(elems: list[str], sep: str) -> str:
    _check_size(sum(map(len, elems)) + len(sep) * max(len(elems) - 1, 0))
    return sep.join(elems)


def _split(s: str, sep: str) -> list[str]:
    # Go's strings.Split with an empty separator splits after each character.
    return list(s) if sep == "" else s.split(sep)


def _replace(s: str, old: str, new: str) -> str:
    count = len(s) + 1 if old == "" else s.count(old)
    _check_size(len(s) + count * (len(new) - len(old)))
    return s.replace(old, new)


def _join_if(sep: str, *elems: str) -> str:
    return _join([e for e in elems if e != ""], sep)


def _matches(s: str, pattern: str) -> bool:
    return _glob(pattern).match(s)


FUNCTIONS: dict[str, Function] = {
    "and": Function(_and, ("any",), "any"),
    "or": Function(_or, ("any",), "any"),
    "not": Function(_not, ("any",)),
    "eq": Function(_eq, ("any",), "any"),
    "ne": Function(_ne, ("any", "any")),
    "lt": Function(_lt, ("any", "any")),
    "le": Function(_le, ("any", "any")),
    "gt": Function(_gt, ("any", "any")),
    "ge": Function(_ge, ("any", "any")),
    "len": Function(_len, ("any",)),
    "index": Function(_index, ("any",), "any"),
    "slice": Function(_slice, ("any",), "any"),
    "print": Function(_print, (), "any"),
    "printf": Function(_printf, ("str",), "any"),
    "println": Function(_println, (), "any"),
    "html": Function(_html, (), "any"),
    "js": Function(_js, (), "any"),
    "urlquery": Function(_urlquery, (), "any"),
    "join": Function(_join, ("strs", "str")),
    "split": Function(_split, ("str", "str")),
    "replace": Function(_replace, ("str", "str", "str")),
    "join_if": Function(_join_if, ("str",), "str"),
    "matches": Function(_matches, ("str", "str")),
}
"""Every function templates can call besides the context names, by the name templates use."""

KNOWN_NAMES = frozenset(FUNCTIONS) | CONTEXTS
"""The names a template may use as functions; any other is an error when parsing."""


# The glob matcher: gobwas/glob syntax without separators, run as a Thompson NFA so that no
# pattern can make matching slower than (input length x pattern length).
_Op: TypeAlias = tuple[Any, ...]
_MAX_GLOB_WORK = 50_000_000
_MAX_GLOB_NESTING = 50


class _Glob:
    """A compiled glob: `*` any run, `?` one character, `[abc]` `[!a-z]` classes, `{a,b}`."""

    def __init__(self, pattern: str) -> None:
        self._pattern = pattern
        self._pos = 0
        self._program: list[_Op] = []
        if self._sequence(0) is not None:
            raise AssertionError("unreachable: a top-level sequence ends only at the end")
        self._program.append(("match",))

    def _error(self, message: str) -> ValueError:
        return ValueError(f"bad glob {self._pattern!r}: {message}")

    def _sequence(self, depth: int) -> str | None:
        """Compile terms until the pattern ends (None) or, inside braces, a ',' or '}'."""
        pattern, program = self._pattern, self._program
        while self._pos < len(pattern):
            c = pattern[self._pos]
            self._pos += 1
            if c == "*":
                while self._pos < len(pattern) and pattern[self._pos] == "*":
                    self._pos += 1
                here = len(program)
                program.extend([("split", here + 1, here + 3), ("any",), ("jump", here)])
            elif c == "?":
                program.append(("any",))
            elif c == "[":
                program.append(self._class())
            elif c == "{":
                self._alternatives(depth + 1)
            elif depth and c in ",}":
                return c
            elif c == "\\":
                if self._pos < len(pattern):
                    program.append(("char", pattern[self._pos]))
                    self._pos += 1
            else:
                program.append(("char", c))
        if depth:
            raise self._error("unclosed '{': add '}'")
        return None

    def _alternatives(self, depth: int) -> None:
        if depth > _MAX_GLOB_NESTING:
            raise self._error(f"braces nest more than {_MAX_GLOB_NESTING} deep")
        program = self._program
        exits: list[int] = []
        while True:
            fork = len(program)
            program.append(("split", fork + 1, -1))
            stop = self._sequence(depth)
            exits.append(len(program))
            program.append(("jump", -1))
            program[fork] = ("split", fork + 1, len(program))
            if stop == "}":
                break
        program.append(("fail",))
        for exit_at in exits:
            program[exit_at] = ("jump", len(program))

    def _class(self) -> _Op:
        pattern = self._pattern
        negated = pattern.startswith("!", self._pos)
        if negated:
            self._pos += 1
        if self._pos + 2 < len(pattern) and pattern[self._pos + 1] == "-":
            low, high = pattern[self._pos], pattern[self._pos + 2]
            self._pos += 3
            if not pattern.startswith("]", self._pos):
                raise self._error("a range like [a-z] must end right after its high character")
            self._pos += 1
            return ("range", negated, low, high)
        chars: list[str] = []
        while self._pos < len(pattern) and pattern[self._pos] != "]":
            if pattern[self._pos] == "\\" and self._pos + 1 < len(pattern):
                self._pos += 1
            chars.append(pattern[self._pos])
            self._pos += 1
        if self._pos >= len(pattern):
            raise self._error("unclosed '[': add ']'")
        self._pos += 1
        if not chars:
            raise self._error("empty character class []")
        return ("set", negated, frozenset(chars))

    def _closure(self, starts: list[int]) -> set[int]:
        """The instructions reachable from starts without reading a character."""
        seen: set[int] = set()
        stack = list(starts)
        while stack:
            at = stack.pop()
            if at in seen:
                continue
            seen.add(at)
            op = self._program[at]
            if op[0] == "split":
                stack.extend((op[1], op[2]))
            elif op[0] == "jump":
                stack.append(op[1])
        return seen

    def match(self, s: str) -> bool:
        """Whether the whole of s matches the pattern."""
        if len(s) * len(self._program) > _MAX_GLOB_WORK:
            raise ValueError("input is too long to match against this glob")
        states = self._closure([0])
        for c in s:
            following: list[int] = []
            for at in states:
                op = self._program[at]
                kind = op[0]
                if (
                    kind == "any"
                    or (kind == "char" and op[1] == c)
                    or (kind == "set" and (c in op[2]) != op[1])
                    or (kind == "range" and (op[2] <= c <= op[3]) != op[1])
                ):
                    following.append(at + 1)
            if not following:
                return False
            states = self._closure(following)
        return len(self._program) - 1 in states


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> _Glob:
    return _Glob(pattern)
