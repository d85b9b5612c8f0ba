"""Go's fmt as templates print values: %v for actions and print, and the verbs of printf."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

MAX_TEXT = 10 * 1024 * 1024
"""The longest string, in characters, a template may build or render (stops runaway templates)."""

# Go's fmt gives up on widths and precisions past a million; so do we.
_MAX_WIDTH = 1_000_000
_NAMED_ESCAPES = {"\a": "a", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t", "\v": "v"}
_INT_BASES = {"v": "d", "d": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}


class PathList(tuple[str, ...]):
    """Strings that print space-separated, as Sourcegraph's repository.search_result_paths do.

    In Go that value is a list type with a String method, which fmt prefers to the brackets.
    """

    __slots__ = ()


@dataclass(frozen=True)
class _Spec:
    """The flags, width and precision of one printf verb."""

    minus: bool = False
    plus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    width: int | None = None
    precision: int | None = None
    sharp_v: bool = False


_PLAIN = _Spec()


def go_type(value: Any) -> str:
    """The Go type a template value stands for, as Go's messages name it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "[]interface {}"
    if isinstance(value, Mapping):
        return "map[string]interface {}"
    return type(value).__name__


def sorted_items(mapping: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    """A map's entries in Go's order (fmt and range sort keys): bools, numbers, then strings."""
    return sorted(mapping.items(), key=lambda item: _key_order(item[0]))


def _key_order(key: Any) -> tuple[int, Any]:
    if isinstance(key, bool):
        return (0, key)
    if isinstance(key, int | float) and not math.isnan(key):
        return (1, key)
    if isinstance(key, str):
        return (2, key)
    return (3, repr(key))


def format_value(value: Any) -> str:
    """A value as Go's %v prints it: [a b] for lists, map[k:v] for maps, <nil> for nil."""
    return _format(value, "v", _PLAIN, top=True)


def sprint(args: list[Any]) -> str:
    """Go's fmt.Sprint: operands printed with %v, spaced where neither side is a string."""
    parts: list[str] = []
    previous_is_string = False
    for i, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if i > 0 and not is_string and not previous_is_string:
            parts.append(" ")
        parts.append(format_value(arg))
        previous_is_string = is_string
    return _checked("".join(parts))


def sprintln(args: list[Any]) -> str:
    """Go's fmt.Sprintln: operands printed with %v, always spaced, then a newline."""
    return _checked(" ".join(format_value(arg) for arg in args) + "\n")


def sprintf(form: str, args: list[Any]) -> str:
    """Go's fmt.Sprintf for the verbs v s d q t x X o b c U e E f F g G and %%."""
    out: list[str] = []
    size = 0
    used = 0
    i = 0
    end = len(form)
    while i < end:
        percent = form.find("%", i)
        if percent < 0:
            out.append(form[i:])
            break
        out.append(form[i:percent])
        i = percent + 1
        spec, i, used, bad = _parse_spec(form, i, args, used)
        if bad:
            out.append(bad)
        if i >= end:
            out.append("%!(NOVERB)")
            break
        verb = form[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[used]
        used += 1
        if verb == "v":
            # Go reads %+v and %#v as other syntaxes, not as sign and prefix flags.
            spec = replace(spec, plus=False, sharp=False, sharp_v=spec.sharp)
        piece = _format(arg, verb, spec, top=True)
        size += len(piece)
        if size > MAX_TEXT:
            raise ValueError(f"printf result is longer than {MAX_TEXT} characters")
        out.append(piece)
    if used < len(args):
        extra = ", ".join(
            "<nil>" if arg is None else f"{go_type(arg)}={format_value(arg)}" for arg in args[used:]
        )
        out.append(f"%!(EXTRA {extra})")
    return _checked("".join(out))


def _parse_spec(form: str, i: int, args: list[Any], used: int) -> tuple[_Spec, int, int, str]:
    """Read flags, width and precision after a %; returns the spec, position, args used, error."""
    flags = {"minus": False, "plus": False, "sharp": False, "space": False, "zero": False}
    names = {"-": "minus", "+": "plus", "#": "sharp", " ": "space", "0": "zero"}
    end = len(form)
    while i < end and form[i] in names:
        flags[names[form[i]]] = True
        i += 1
    if flags["minus"]:
        flags["zero"] = False
    bad = ""
    width: int | None = None
    if i < end and form[i] == "*":
        i += 1
        if used < len(args) and type(args[used]) is int and abs(args[used]) <= _MAX_WIDTH:
            width = args[used]
            if width < 0:
                flags["minus"], flags["zero"], width = True, False, -width
        else:
            bad = "%!(BADWIDTH)"
        used += 1
    else:
        width, i = _number(form, i)
    precision: int | None = None
    if i < end and form[i] == ".":
        i += 1
        if i < end and form[i] == "*":
            i += 1
            if used < len(args) and type(args[used]) is int and 0 <= args[used] <= _MAX_WIDTH:
                precision = args[used]
            else:
                bad += "%!(BADPREC)"
            used += 1
        else:
            precision, i = _number(form, i)
            precision = precision or 0
    if (width is not None and width > _MAX_WIDTH) or (
        precision is not None and precision > _MAX_WIDTH
    ):
        # Go stops reading the format at a number this long.
        return _PLAIN, end, used, ""
    return _Spec(**flags, width=width, precision=precision), i, used, bad


def _number(form: str, i: int) -> tuple[int | None, int]:
    start = i
    while i < len(form) and "0" <= form[i] <= "9" and i - start <= 8:
        i += 1
    return (int(form[start:i]) if i > start else None), i


def _checked(text: str) -> str:
    if len(text) > MAX_TEXT:
        raise ValueError(f"result is longer than {MAX_TEXT} characters")
    return text


def _format(value: Any, verb: str, spec: _Spec, *, top: bool) -> str:
    if value is None:
        if top and verb != "v":
            return f"%!{verb}(<nil>)"
        return _pad("<nil>", spec)
    if isinstance(value, bool):
        if verb in "tv":
            return _pad("true" if value else "false", spec)
        return _bad(verb, value)
    if isinstance(value, int):
        return _format_int(value, verb, spec)
    if isinstance(value, float):
        return _format_float(value, verb, spec)
    if isinstance(value, str):
        return _format_str(value, verb, spec)
    if isinstance(value, PathList) and verb in "vsqxX":
        return _format_str(" ".join(value), verb, spec)
    if isinstance(value, list | tuple):
        if spec.sharp_v:
            inner = ", ".join(_format(v, verb, spec, top=False) for v in value)
            return f"[]interface {{}}{{{inner}}}"
        return "[" + _join(_format(v, verb, spec, top=False) for v in value) + "]"
    if isinstance(value, Mapping):
        pairs = (
            _format(k, verb, spec, top=False) + ":" + _format(v, verb, spec, top=False)
            for k, v in sorted_items(value)
        )
        if spec.sharp_v:
            return "map[string]interface {}{" + ", ".join(pairs) + "}"
        return "map[" + _join(pairs) + "]"
    if verb in "vs":
        return _pad(str(value), spec)
    return _bad(verb, value)


def _join(pieces: Any) -> str:
    out: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece) + 1
        if size > MAX_TEXT:
            raise ValueError(f"value is longer than {MAX_TEXT} characters when printed")
        out.append(piece)
    return " ".join(out)


def _bad(verb: str, value: Any) -> str:
    return f"%!{verb}({go_type(value)}={format_value(value)})"


def _pad(text: str, spec: _Spec, *, zero: bool = True) -> str:
    if spec.width is None or len(text) >= spec.width:
        return text
    fill = spec.width - len(text)
    if spec.minus:
        return text + " " * fill
    return ("0" if spec.zero and zero else " ") * fill + text


def _sign(negative: bool, spec: _Spec) -> str:
    if negative:
        return "-"
    return "+" if spec.plus else " " if spec.space else ""


def _format_int(n: int, verb: str, spec: _Spec) -> str:
    if verb == "c":
        return _pad(_rune(n), spec)
    if verb == "q":
        return _pad(quote(_rune(n), quote_char="'", ascii_only=spec.plus), spec)
    if verb == "U":
        text = f"U+{n:04X}" if n >= 0 else f"U+-{-n:04X}"
        return _pad(text + (f" '{_rune(n)}'" if spec.sharp else ""), spec)
    base = _INT_BASES.get(verb)
    if base is None:
        return _bad(verb, n)
    if n.bit_length() > 4096:
        raise ValueError("integer is too large to print")
    digits = format(abs(n), base)
    sign = _sign(n < 0, spec)
    if spec.precision is not None:
        digits = "" if spec.precision == 0 and n == 0 else digits.zfill(spec.precision)
    elif spec.zero and spec.width is not None:
        # Like Go, the zeros fill the width less the sign, before any 0x prefix is added.
        digits = digits.zfill(spec.width - len(sign))
    prefix = ""
    if verb == "O":
        prefix = "0o"
    elif spec.sharp:
        if verb == "b":
            prefix = "0b"
        elif verb == "o" and not digits.startswith("0"):
            prefix = "0"
        elif verb in "xX":
            prefix = "0" + verb
    return _pad(sign + prefix + digits, spec, zero=False)


def _rune(n: int) -> str:
    if 0 <= n <= 0x10FFFF and not 0xD800 <= n <= 0xDFFF:
        return chr(n)
    return "\ufffd"


def _format_float(f: float, verb: str, spec: _Spec) -> str:
    precision = spec.precision
    if verb == "v":
        verb = "g"
    if verb not in "eEfFgG":
        if verb in "xX":
            raise ValueError(f"printf verb %{verb} of a float is not supported; use %f or %e")
        return _bad(verb, f)
    negative = math.copysign(1.0, f) < 0 and not math.isnan(f)
    if math.isnan(f) or math.isinf(f):
        body = "NaN" if math.isnan(f) else "Inf"
        sign = "-" if negative else "+" if spec.plus or body == "Inf" else ""
        if spec.space and sign == "+" and not spec.plus:
            sign = " "
        return _pad(sign + body, spec, zero=False)
    if verb in "gG" and precision is None:
        body = format_float(abs(f))
        body = body.upper() if verb == "G" else body
    else:
        body = format(abs(f), f".{6 if precision is None else precision}{verb}")
    sign = _sign(negative, spec)
    if sign and spec.zero and spec.width is not None and not spec.minus:
        return sign + body.zfill(spec.width - len(sign))
    return _pad(sign + body, spec)


def format_float(f: float) -> str:
    """A float as Go's %v prints it: shortest digits, exponent form from 1e+06 and below 1e-04."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign = "-" if f < 0 else ""
    # repr gives the shortest digits that round-trip, exactly as Go's strconv does.
    mantissa, _, exponent = repr(abs(f)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    stripped = all_digits.lstrip("0")
    point = len(whole) + int(exponent or 0) - (len(all_digits) - len(stripped))
    digits = stripped.rstrip("0")
    exp = point - 1
    if exp < -4 or exp >= 6:
        head = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{head}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _format_str(s: str, verb: str, spec: _Spec) -> str:
    if verb in "vsq" and spec.precision is not None:
        s = s[: spec.precision]
    if verb == "s" or (verb == "v" and not spec.sharp_v):
        return _pad(s, spec)
    if verb == "q" or verb == "v":
        if spec.sharp and _can_backquote(s):
            return _pad(f"`{s}`", spec)
        return _pad(quote(s, ascii_only=spec.plus), spec)
    if verb in "xX":
        data = s.encode("utf-8", "surrogatepass")
        if spec.precision is not None:
            data = data[: spec.precision]
        digits = [format(b, "02x" if verb == "x" else "02X") for b in data]
        prefix = ("0" + verb) if spec.sharp else ""
        if spec.space:
            return _pad(" ".join(prefix + d for d in digits), spec)
        return _pad(prefix + "".join(digits) if digits else "", spec)
    return _bad(verb, s)


def _can_backquote(s: str) -> bool:
    return all(c == "\t" or (c >= " " and c not in "`\x7f\ufeff") for c in s)


def quote(s: str, *, quote_char: str = '"', ascii_only: bool = False) -> str:
    """Go's strconv.Quote: a double-quoted literal with Go escapes for what is not printable."""
    out = [quote_char]
    for c in s:
        code = ord(c)
        if c == quote_char or c == "\\":
            out.append("\\" + c)
        elif c.isprintable() and (code < 0x80 or not ascii_only):
            out.append(c)
        elif c in _NAMED_ESCAPES:
            out.append("\\" + _NAMED_ESCAPES[c])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append(quote_char)
    return "".join(out)
