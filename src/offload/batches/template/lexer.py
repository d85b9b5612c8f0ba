"""Template tokens: how a `${{ }}` template splits into text and action items, as Go lexes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

LEFT_DELIM = "${{"
RIGHT_DELIM = "}}"

_SPACES = " \t\r\n"
_KEYWORDS = frozenset(
    {"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"}
)
_TERMINATORS = frozenset(_SPACES + ".,|:()")
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}
_OCTAL_INT = re.compile(r"0[0-7_]+")
_INT_RANGE = range(-(2**63), 2**63)

# Token kinds; punctuation is its own kind.
TEXT, LEFT, RIGHT, EOF = "text", "left", "right", "eof"
IDENT, FIELD, VAR, DOT = "ident", "field", "var", "dot"
NIL, LITERAL, KEYWORD = "nil", "literal", "keyword"
PIPE, LPAREN, RPAREN, DECLARE, ASSIGN, COMMA = "|", "(", ")", ":=", "=", ","
OPERAND_START = frozenset({IDENT, FIELD, VAR, DOT, NIL, LITERAL, LPAREN})
"""The kinds of token an operand starts with."""


# TemplateError lives here because the lexer is the first stage to find errors.
class TemplateError(ValueError):
    """A template that cannot be parsed or rendered, with the 1-based line and column at fault."""

    def __init__(
        self, message: str, line: int = 1, column: int = 1, name: str = "template"
    ) -> None:
        super().__init__(message, line, column, name)
        self.message = message
        self.line = line
        self.column = column
        self.name = name

    def __str__(self) -> str:
        return f"{self.name}:{self.line}:{self.column}: {self.message}"


def error_at(text: str, pos: int, message: str, name: str) -> TemplateError:
    """A TemplateError for the character at offset pos of the template text."""
    pos = max(0, min(pos, len(text)))
    line_start = text.rfind("\n", 0, pos) + 1
    return TemplateError(message, text.count("\n", 0, pos) + 1, pos - line_start + 1, name)


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical item: its kind, its value, where it starts and ends, and if space precedes."""

    kind: str
    value: Any
    pos: int
    end: int
    space: bool = False


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


class Lexer:
    """Splits a template into tokens, with Go's rules for trim markers, comments and literals."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.tokens: list[Token] = []
        self.parens = 0

    def error(self, message: str, pos: int) -> TemplateError:
        return error_at(self.text, pos, message, self.name)

    def lex(self) -> list[Token]:
        text, pos = self.text, 0
        while True:
            start = text.find(LEFT_DELIM, pos)
            if start < 0:
                if pos < len(text):
                    self.tokens.append(Token(TEXT, text[pos:], pos, len(text)))
                self.tokens.append(Token(EOF, None, len(text), len(text)))
                return self.tokens
            inner = start + len(LEFT_DELIM)
            chunk = text[pos:start]
            if text.startswith("-", inner) and text[inner + 1 : inner + 2] in tuple(_SPACES):
                chunk = chunk.rstrip(_SPACES)
                inner += 2
            if chunk:
                self.tokens.append(Token(TEXT, chunk, pos, pos + len(chunk)))
            if text.startswith("/*", inner):
                pos = self.comment(start, inner)
            else:
                self.tokens.append(Token(LEFT, LEFT_DELIM, start, inner))
                pos = self.action(start, inner)

    def after_right_delim(self, pos: int) -> int | None:
        """Where text resumes if a right delimiter (maybe trim-marked) starts at pos."""
        text = self.text
        if text.startswith(RIGHT_DELIM, pos):
            return pos + len(RIGHT_DELIM)
        if text[pos : pos + 1] in tuple(_SPACES) and text.startswith("-" + RIGHT_DELIM, pos + 1):
            pos += 2 + len(RIGHT_DELIM)
            while pos < len(text) and text[pos] in _SPACES:
                pos += 1
            return pos
        return None

    def comment(self, start: int, pos: int) -> int:
        close = self.text.find("*/", pos + 2)
        if close < 0:
            raise self.error("unclosed comment: end it with */}}", start)
        resume = self.after_right_delim(close + 2)
        if resume is None:
            raise self.error("comment ends before closing delimiter: write */}}", close + 2)
        return resume

    def action(self, start: int, pos: int) -> int:
        text, space = self.text, False
        while True:
            resume = self.after_right_delim(pos)
            if resume is not None:
                if self.parens > 0:
                    raise self.error("unclosed left paren: add )", pos)
                self.tokens.append(Token(RIGHT, RIGHT_DELIM, pos, resume, space))
                return resume
            if pos >= len(text):
                raise self.error("unclosed action: close it with }}", start)
            c = text[pos]
            if c in _SPACES:
                end = pos
                while end < len(text) and text[end] in _SPACES:
                    end += 1
                # Leave the last space to " -}}", which trims.
                if end > pos + 1 and text.startswith("-" + RIGHT_DELIM, end):
                    end -= 1
                pos, space = end, True
                continue
            kind, value, end = self.item(c, pos)
            self.tokens.append(Token(kind, value, pos, end, space))
            pos, space = end, False

    def item(self, c: str, pos: int) -> tuple[str, Any, int]:
        text = self.text
        if c in "=|,":
            return c, c, pos + 1
        if c == ":":
            if text.startswith(":=", pos):
                return DECLARE, ":=", pos + 2
            raise self.error("expected := after :", pos)
        if c == "(":
            self.parens += 1
            return LPAREN, c, pos + 1
        if c == ")":
            self.parens -= 1
            if self.parens < 0:
                raise self.error("unexpected right paren )", pos)
            return RPAREN, c, pos + 1
        if c == '"':
            return self.quoted(pos)
        if c == "`":
            close = text.find("`", pos + 1)
            if close < 0:
                raise self.error("unterminated raw quoted string: add `", pos)
            # Go drops carriage returns from raw strings.
            return LITERAL, text[pos + 1 : close].replace("\r", ""), close + 1
        if c == "'":
            return self.char(pos)
        if c == "$":
            end = self.word_end(pos + 1)
            return VAR, text[pos:end], end
        if c == "." and not "0" <= text[pos + 1 : pos + 2] <= "9":
            end = self.word_end(pos + 1)
            return (FIELD, text[pos + 1 : end], end) if end > pos + 1 else (DOT, ".", end)
        if c in "+-." or "0" <= c <= "9":
            return self.number(pos)
        if _is_alnum(c):
            end = self.word_end(pos)
            word = text[pos:end]
            if word in ("true", "false"):
                return LITERAL, word == "true", end
            if word == "nil":
                return NIL, word, end
            return (KEYWORD if word in _KEYWORDS else IDENT), word, end
        if " " < c < "\x7f":
            raise self.error(f'unexpected "{c}" in action', pos)
        raise self.error(f"unrecognized character in action: U+{ord(c):04X}", pos)

    def word_end(self, pos: int) -> int:
        """The end of the identifier at pos, which must be followed by a terminator."""
        text, end = self.text, pos
        while end < len(text) and _is_alnum(text[end]):
            end += 1
        if end >= len(text) or text[end] in _TERMINATORS or text.startswith(RIGHT_DELIM, end):
            return end
        bad = text[end]
        if bad == "-" and end > pos and text[pos - 1] == ".":
            # A key like outputs.my-key: Go reads the dash as an error, index reads the key.
            chain = pos - 1
            while chain > 0 and (_is_alnum(text[chain - 1]) or text[chain - 1] in ".$"):
                chain -= 1
            key_end = end
            while key_end < len(text) and (_is_alnum(text[key_end]) or text[key_end] == "-"):
                key_end += 1
            base = text[chain : pos - 1] or "."
            raise self.error(
                f"bad character '-' in {text[chain:key_end]}: for keys that are not "
                f'identifiers write (index {base} "{text[pos:key_end]}")',
                end,
            )
        raise self.error(f"bad character {bad!r} after {text[pos - 1 : end]!r}", end)

    def closing(self, pos: int, quote: str, what: str) -> int:
        """Where the `quote` that closes the one at `pos` is (escapes skipped, one line)."""
        text, end = self.text, pos + 1
        while True:
            c = text[end : end + 1]
            if c == "\\" and text[end + 1 : end + 2] not in ("", "\n"):
                end += 2
            elif c in ("", "\n", "\\"):
                raise self.error(f"unterminated {what}: close it with {quote}", pos)
            elif c == quote:
                return end
            else:
                end += 1

    def quoted(self, pos: int) -> tuple[str, Any, int]:
        end = self.closing(pos, '"', "quoted string")
        return LITERAL, self.unescape(self.text[pos + 1 : end], '"', pos), end + 1

    def char(self, pos: int) -> tuple[str, Any, int]:
        text, end = self.text, self.closing(pos, "'", "character constant")
        body = text[pos + 1 : end]
        value = self.unescape(body, "'", pos, as_rune=True)
        if len(value) != 1:
            raise self.error(f"malformed character constant: {text[pos : end + 1]}", pos)
        return LITERAL, ord(value), end + 1

    def unescape(self, body: str, quote: str, pos: int, *, as_rune: bool = False) -> str:
        """Go's strconv.Unquote of a string body: \\n \\t \\xHH \\ooo \\uHHHH \\UHHHHHHHH ..."""
        if "\\" not in body:
            return body
        out = bytearray()
        i = 0
        while i < len(body):
            c = body[i]
            if c != "\\":
                out += c.encode("utf-8", "surrogatepass")
                i += 1
                continue
            esc = body[i + 1]
            i += 2
            if esc in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[esc])
            elif esc == quote:
                out += quote.encode()
            elif esc in "xuU01234567":
                size = {"x": 2, "u": 4, "U": 8}.get(esc, 3)
                digits = body[i : i + size] if esc in "xuU" else body[i - 1 : i + 2]
                base = 8 if esc in "01234567" else 16
                allowed = "01234567" if base == 8 else "0123456789abcdefABCDEF"
                valid = len(digits) == size and all(d in allowed for d in digits)
                code = int(digits, base) if valid else -1
                if code < 0 or (esc in "uU" and (code > 0x10FFFF or 0xD800 <= code < 0xE000)):
                    raise self.error(f"invalid escape \\{esc}{digits} in {quote}…{quote}", pos)
                if code > 255 and esc not in "uU":
                    raise self.error(f"octal escape \\{digits} is above \\377", pos)
                i += size if esc in "xuU" else 2
                if esc in "uU" or as_rune:
                    out += chr(code).encode("utf-8")
                else:
                    out.append(code)
            else:
                raise self.error(
                    f"invalid escape \\{esc} in {quote}…{quote}: use \\n \\t \\\\ \\{quote} "
                    "\\xHH \\uHHHH, or a raw `string`",
                    pos,
                )
        return out.decode("utf-8", "replace")

    def number(self, pos: int) -> tuple[str, Any, int]:
        text, end = self.text, pos
        if text[end : end + 1] in ("+", "-"):
            end += 1
        digits = "0123456789_"
        if text.startswith("0", end):
            end += 1
            prefix = text[end : end + 1].lower()
            if prefix and prefix in "xob":
                digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[prefix]
                end += 1
        end = self.run(end, digits)
        if text.startswith(".", end):
            end = self.run(end + 1, digits)
        exponent = "eE" if len(digits) == 11 else "pP" if len(digits) == 23 else ""
        if exponent and text[end : end + 1] in tuple(exponent):
            end += 1
            if text[end : end + 1] in ("+", "-"):
                end += 1
            end = self.run(end, "0123456789_")
        if text.startswith("i", end):
            end += 1
        if end < len(text) and _is_alnum(text[end]):
            raise self.error(f"bad number syntax: {text[pos : end + 1]!r}", pos)
        literal = text[pos:end]
        return LITERAL, self.number_value(literal, pos), end

    def run(self, pos: int, chars: str) -> int:
        while pos < len(self.text) and self.text[pos] in chars:
            pos += 1
        return pos

    def number_value(self, literal: str, pos: int) -> int | float:
        """An int for integer syntax, a float when the literal has . e or p (as Go decides)."""
        if literal.endswith("i"):
            raise self.error(f"complex number {literal} is not supported", pos)
        negative = literal.startswith("-")
        body = literal.lstrip("+-")
        try:
            value = int("0o" + body[1:] if _OCTAL_INT.fullmatch(body) else body, 0)
        except ValueError:
            pass
        else:
            value = -value if negative else value
            if value not in _INT_RANGE:
                raise self.error(f"{literal} overflows int", pos)
            return value
        if any(c in body for c in ".eEpP"):
            try:
                if body[:2].lower() == "0x":
                    number = float.fromhex(body.replace("_", ""))
                else:
                    number = float(body)
            except (ValueError, OverflowError):
                pass
            else:
                if number != float("inf"):
                    return -number if negative else number
        raise self.error(f"illegal number syntax: {literal!r}", pos)
