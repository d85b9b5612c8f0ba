"""The template gallery: batch specs made by filling in a form, one YAML file per template.

A template file (gallery/NAME.yaml) holds two YAML documents: the form (title, description, the
fields it asks for and the defaults of the batch change's name and repository query), then the
batch spec it makes, where `<<field|filter|...>>` marks a value's place inside a string.

Values never become YAML, shell or sed syntax. Each placeholder's value passes through its
filters (quoted for the shell, escaped for sed: FILTERS), then, in a field the spec renders as
a template (`run`, `files`, `changesetTemplate`...), `${{` is escaped so the value is printed
and never evaluated. The spec's tree is then dumped by the YAML library (the strings that took
a value as double-quoted scalars, or as literal blocks when they span lines and YAML holds them
exactly) and read back to prove it holds exactly the strings built.
"""

from __future__ import annotations

import io
import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from offload.batches.spec.checks import _templated_fields
from offload.batches.spec.limits import forbidden_character
from offload.batches.template.lexer import LEFT_DELIM
from offload.repos.search_query import MAX_QUERY_CHARS

# The templates, in the gallery's order: each is gallery/NAME.yaml. To add one, write its file
# (copy sed.yaml) and add its name here.
TEMPLATES = ("sed", "file", "bump", "script")

PLACEHOLDER = re.compile(r"<<([a-z_]+)((?:\|[a-z_]+)*)>>")
# What YAML reads as a line break besides \n and \r: refused where one line is asked for.
LINE_BREAKS = re.compile("[\n\r\x85\u2028\u2029]")
# A batch change's name, as the spec's schema allows it.
NAME_PATTERN = r"[\w.-]+"
NAME_MAX = 255
# How `${{` is written so that a template prints it: as the string literal it is.
ESCAPED_DELIM = LEFT_DELIM + ' "' + LEFT_DELIM + '" }}'


class FieldErrors(ValueError):
    """Values a template cannot take: the message for each field, by its name."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        # Templates are filled in spec worker processes: the error travels back pickled.
        return (type(self), (self.errors,))


class FilterError(ValueError):
    """A value a filter cannot write safely (a newline inside a sed expression, say)."""


@dataclass(frozen=True)
class Field:
    """One value a template asks for, with its limits."""

    name: str
    label: str
    help: str = ""
    default: str = ""
    required: bool = False
    max_length: int = 1000
    multiline: bool = False
    pattern: str | None = None
    pattern_help: str = ""
    choices: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Field:
        """A field as a template file declares it."""
        return cls(
            name=str(data["name"]),
            label=str(data["label"]),
            help=str(data.get("help", "")),
            default=str(data.get("default", "")),
            required=bool(data.get("required", False)),
            max_length=int(data.get("maxLength", 1000)),
            multiline=bool(data.get("multiline", False)),
            pattern=data.get("pattern"),
            pattern_help=str(data.get("patternHelp", "")),
            choices=tuple(str(c) for c in data.get("choices", ())),
        )

    def check(self, given: str) -> str:
        """The value to use for `given` (line breaks made \\n); FilterError says what is wrong."""
        value = given.replace("\r\n", "\n").replace("\r", "\n") if self.multiline else given
        if not self.multiline and LINE_BREAKS.search(value):
            raise FilterError("must be one line")
        bad = forbidden_character(value)
        if bad is not None:
            raise FilterError(f"control character U+{ord(bad):04X} is not allowed")
        if self.required and not value.strip():
            raise FilterError("is required")
        if len(value) > self.max_length:
            raise FilterError(f"is at most {self.max_length:,} characters; this is {len(value):,}")
        if self.choices and value not in self.choices:
            raise FilterError(f"must be one of {', '.join(self.choices)}")
        if self.pattern and value and not re.fullmatch(self.pattern, value):
            raise FilterError(self.pattern_help or f"must match {self.pattern}")
        return value


def sed_regex(value: str) -> str:
    """`value` as a sed basic regular expression that matches it literally, between `/`s."""
    if "\n" in value:
        raise FilterError("cannot hold a line break: sed works on one line at a time")
    # Only the characters special in a basic regex (and the delimiter) get a backslash:
    # before any other, a backslash could make one special (\+, \n, \w in GNU sed).
    return re.sub(r"([\\/.*\[^$])", r"\\\1", value)


def sed_replacement(value: str) -> str:
    """`value` as the replacement of a sed `s/.../.../` command: inserted literally."""
    if "\n" in value:
        raise FilterError("cannot hold a line break: sed works on one line at a time")
    return re.sub(r"([\\/&])", r"\\\1", value)


def shell_words(value: str) -> str:
    """`value` split into words as a shell would, each quoted: arguments, never code."""
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise FilterError(f"cannot be split into words: {exc}") from None
    return " ".join(shlex.quote(w) for w in words)


FILTERS: dict[str, Callable[[str], str]] = {
    "sh": shlex.quote,
    "sed_regex": sed_regex,
    "sed_replacement": sed_replacement,
    "words": shell_words,
}


def escape_template(text: str) -> str:
    """`text` in a templated field of a spec: printed as it is, never evaluated."""
    return text.replace(LEFT_DELIM, ESCAPED_DELIM)


@dataclass(frozen=True)
class Template:
    """A template of the gallery: its form, and the spec it makes."""

    key: str
    title: str
    description: str
    fields: tuple[Field, ...]
    name: str
    on: str
    skeleton: str = field(repr=False)

    def form_fields(self) -> tuple[Field, ...]:
        """Every field the form asks for: the batch change's name, the template's own fields,
        the repository query."""
        name = Field(
            "name",
            "Batch change name",
            "Unique among the namespace's batch changes: letters, digits, '.', '_' and '-'.",
            default=self.name,
            required=True,
            max_length=NAME_MAX,
            pattern=NAME_PATTERN,
            pattern_help="Use only letters, digits, '.', '_' and '-'.",
        )
        on = Field(
            "on",
            "Repositories",
            "A search query: the repositories it matches are changed, such as file:\\.md$ or "
            "repo:^github\\.com/acme/.",
            default=self.on,
            required=True,
            max_length=MAX_QUERY_CHARS,
        )
        return (name, *self.fields, on)

    def defaults(self) -> dict[str, str]:
        """Each field's default value."""
        return {f.name: f.default for f in self.form_fields()}

    def fill(self, given: Mapping[str, str]) -> str:
        """The batch spec with `given` values (a field left out takes its default);
        FieldErrors for values the fields refuse."""
        values, errors = {}, {}
        labels = {f.name: f.label for f in self.form_fields()}
        for f in self.form_fields():
            try:
                values[f.name] = f.check(given.get(f.name, f.default))
            except FilterError as exc:
                errors[f.name] = f"{f.label} {exc}"
        if errors:
            raise FieldErrors(errors)
        tree = _yaml().load(self.skeleton)
        templated = {tuple(path) for path, _ in _templated_fields(_plain(tree))}
        filled: list[tuple[Any, Any, str]] = []  # (container, key, string)
        for container, key, path, text in _strings(tree, ()):
            try:
                made = _fill_string(text, values, escape=path in templated)
            except _FieldFault as exc:
                errors[exc.field] = f"{labels[exc.field]} {exc.message}"
                continue
            if made != text:
                filled.append((container, key, made))
        if errors:
            raise FieldErrors(errors)
        # Lines read best as a literal block, where YAML can hold them as they are: checked
        # by reading the dump back; otherwise every filled string is double-quoted.
        for block_allowed in (True, False):
            for container, key, made in filled:
                literal = block_allowed and "\n" in made
                container[key] = (
                    LiteralScalarString(made) if literal else DoubleQuotedScalarString(made)
                )
            text = _dump(tree)
            if _reads_back(text, tree):
                return text
        raise RuntimeError(f"template {self.key}: the filled spec does not read back as built")


class _FieldFault(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.field = name
        self.message = message


def _fill_string(text: str, values: Mapping[str, str], *, escape: bool) -> str:
    """`text` with each placeholder replaced by its value."""
    return PLACEHOLDER.sub(lambda m: _value(m, values, escape=escape), text)


def _value(match: re.Match[str], values: Mapping[str, str], *, escape: bool) -> str:
    """A placeholder's value through its filters (and escaped in a templated field)."""
    name, filters = match[1], [f for f in match[2].split("|") if f]
    value = values[name]
    for name_of_filter in filters:
        try:
            value = FILTERS[name_of_filter](value)
        except FilterError as exc:
            raise _FieldFault(name, str(exc)) from None
    return escape_template(value) if escape else value


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.width = 4096  # long strings stay on one line, as written
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _reads_back(text: str, tree: Any) -> bool:
    """Whether `text` is YAML that holds exactly `tree`'s values."""
    try:
        return bool(_plain(_yaml().load(text)) == _plain(tree))
    except YAMLError:
        return False


def _dump(tree: Any) -> str:
    out = io.StringIO()
    _yaml().dump(tree, out)
    return out.getvalue()


Path = tuple[Any, ...]


def _strings(node: Any, path: Path) -> Iterator[tuple[Any, Any, Path, str]]:
    """Every string value in the tree: (its container, its key there, its path, the string)."""
    if isinstance(node, CommentedMap):
        items: Iterator[tuple[Any, Any]] = iter(node.items())
    elif isinstance(node, CommentedSeq):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        if isinstance(value, str):
            yield node, key, (*path, key), value
        else:
            yield from _strings(value, (*path, key))


def _plain(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def load(key: str, text: str) -> Template:
    """A template from its file's text."""
    form, skeleton = re.split(r"^---$\n", text, maxsplit=1, flags=re.MULTILINE)
    data = YAML(typ="safe", pure=True).load(form)
    return Template(
        key=key,
        title=str(data["title"]),
        description=str(data["description"]),
        fields=tuple(Field.from_json(f) for f in data.get("fields", ())),
        name=str(data["name"]),
        on=str(data["on"]),
        skeleton=skeleton,
    )


@cache
def templates() -> dict[str, Template]:
    """Every template of the gallery, by name, in the gallery's order (read once)."""
    folder = resources.files("offload.batches") / "gallery"
    return {key: load(key, (folder / f"{key}.yaml").read_text("utf-8")) for key in TEMPLATES}


def render(key: str, values: Mapping[str, str]) -> str:
    """The batch spec of template `key` filled with `values` (run it in a spec worker: the
    YAML library is slow pure Python); KeyError for an unknown template, FieldErrors."""
    return templates()[key].fill(values)
