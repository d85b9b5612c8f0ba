"""Templates in batch specs: Go's text/template with `${{ }}` delimiters, as Sourcegraph runs them.

The data is a mapping. Templates reach it as Go templates do (`.repository.name`, `$`) and as
Sourcegraph's do, through bare names (`repository.name`, `outputs.x`, `previous_step.stdout`),
which Sourcegraph registers as functions returning parts of the context. A missing key prints
`<no value>`, as it does in Go for a map[string]interface{}; a missing context name is an empty
map, as Sourcegraph's context functions always return one. Go's `define`, `template`, `block`
and `call` are not supported: batch specs have no use for them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from offload.batches.template.format import (
    MAX_TEXT,
    PathList,
    format_value,
    go_type,
    sorted_items,
)
from offload.batches.template.funcs import (
    CONTEXTS,
    FUNCTIONS,
    KNOWN_NAMES,
    MISSING,
    Kind,
    truth,
)
from offload.batches.template.lexer import LEFT_DELIM, TemplateError, error_at
from offload.batches.template.syntax import (
    Action,
    Arg,
    Chain,
    Command,
    Control,
    Dot,
    Field,
    Identifier,
    Jump,
    Literal,
    Nil,
    Node,
    Parser,
    Pipe,
    Text,
    Variable,
)

__all__ = [
    "PathList",
    "Template",
    "TemplateError",
    "evaluate_condition",
    "is_static",
    "parse",
    "render",
]

MAX_STEPS = 10_000_000
"""How many nodes, commands and range iterations one render may run before it is stopped."""

_NO_FINAL: Any = object()  # no value piped into a command (Go's missingVal)


class _Break(Exception):
    """Unwinds to the innermost range on {{break}}."""


class _Continue(Exception):
    """Unwinds to the innermost range on {{continue}}."""


class Template:
    """A parsed template, ready to render against a step's or a changeset's context."""

    def __init__(self, text: str, name: str, nodes: tuple[Node, ...]) -> None:
        self.text = text
        self.name = name
        self._nodes = nodes

    def render(self, data: Mapping[str, Any]) -> str:
        """The template's output with data as dot and $; raises TemplateError."""
        run = _Run(self.text, self.name, data)
        try:
            run.walk(self._nodes, data)
        except RecursionError:
            raise TemplateError(
                "template or data is nested too deeply to render", 1, 1, self.name
            ) from None
        return "".join(run.out)


def parse(text: str, *, name: str = "template") -> Template:
    """Parse a template; raises TemplateError saying where and what is wrong."""
    if len(text) <= _CACHED_TEXT:
        return _cached_parse(text, name)
    return _parse(text, name)


def _parse(text: str, name: str) -> Template:
    try:
        nodes = Parser(text, name, KNOWN_NAMES).parse()
    except RecursionError:
        raise TemplateError("template is nested too deeply to parse", 1, 1, name) from None
    return Template(text, name, nodes)


# Templates are immutable, and the same few are rendered once per repository: cache the small ones.
_CACHED_TEXT = 64 * 1024
_cached_parse = functools.lru_cache(maxsize=512)(_parse)


def render(text: str, data: Mapping[str, Any]) -> str:
    """Parse and render a template in one go; raises TemplateError."""
    return parse(text).render(data)


def is_static(text: str) -> bool:
    """Whether the text has no actions, so that it renders to itself."""
    return LEFT_DELIM not in text


def evaluate_condition(text: str, data: Mapping[str, Any]) -> bool:
    """A step's `if`: true when it renders to "true", give or take surrounding whitespace.

    An empty condition is true, as in Sourcegraph: a step with no condition always runs.
    """
    if text == "":
        return True
    return render(text, data).strip() == "true"


class _Run:
    """The state of one render: output, variables and the budget against runaway templates."""

    def __init__(self, text: str, name: str, data: Mapping[str, Any]) -> None:
        self.text = text
        self.name = name
        self.data = data
        self.out: list[str] = []
        self.size = 0
        self.steps = 0
        # Variables as Go keeps them: a stack, popped when a block ends; indexed by name.
        self.values: dict[str, list[Any]] = {"$": [data]}
        self.order: list[str] = ["$"]

    def error(self, message: str, pos: int) -> TemplateError:
        return error_at(self.text, pos, message, self.name)

    def tick(self, pos: int, cost: int = 1) -> None:
        self.steps += cost
        if self.steps > MAX_STEPS:
            raise self.error(
                f"template ran more than {MAX_STEPS} steps; is a range over a huge value?", pos
            )

    def write(self, text: str, pos: int) -> None:
        self.size += len(text)
        if self.size > MAX_TEXT:
            raise self.error(f"output is longer than {MAX_TEXT} characters", pos)
        self.out.append(text)

    def push(self, name: str, value: Any) -> None:
        self.values.setdefault(name, []).append(value)
        self.order.append(name)

    def pop(self, mark: int) -> None:
        while len(self.order) > mark:
            self.values[self.order.pop()].pop()

    def assign(self, name: str, value: Any, pos: int) -> None:
        stack = self.values.get(name)
        if not stack:
            raise self.error(f"undefined variable: {name}", pos)
        stack[-1] = value

    def lookup(self, name: str, pos: int) -> Any:
        stack = self.values.get(name)
        if not stack:
            raise self.error(f"undefined variable: {name}", pos)
        return stack[-1]

    def walk(self, nodes: tuple[Node, ...], dot: Any) -> None:
        for node in nodes:
            self.tick(node.pos)
            if isinstance(node, Text):
                self.write(node.text, node.pos)
            elif isinstance(node, Action):
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self.write(self.show(value, node.pos), node.pos)
            elif isinstance(node, Control):
                if node.keyword == "range":
                    self.range(dot, node)
                else:
                    self.if_or_with(dot, node)
            elif isinstance(node, Jump):
                raise _Break if node.keyword == "break" else _Continue

    def show(self, value: Any, pos: int) -> str:
        if value is None or value is MISSING:
            return "<no value>"
        try:
            return format_value(value)
        except ValueError as exc:
            raise self.error(str(exc), pos) from None

    def if_or_with(self, dot: Any, node: Control) -> None:
        mark = len(self.order)
        value = self.pipeline(dot, node.pipe)
        if truth(value):
            self.walk(node.body, value if node.keyword == "with" else dot)
        elif node.orelse is not None:
            self.walk(node.orelse, dot)
        self.pop(mark)

    def range(self, dot: Any, node: Control) -> None:
        mark = len(self.order)
        pipe = node.pipe
        # As in Go, the variables first hold the whole value (what an else branch sees).
        value = self.pipeline(dot, pipe)
        inner = len(self.order)
        ran = False
        for index, element in self.iterate(value, node):
            ran = True
            self.tick(node.pos)
            if len(pipe.decl) == 1:
                self.assign(pipe.decl[0], element, pipe.pos)
            elif pipe.decl:
                self.assign(pipe.decl[0], index, pipe.pos)
                self.assign(pipe.decl[1], element, pipe.pos)
            try:
                self.walk(node.body, element)
            except _Continue:
                pass
            except _Break:
                break
            finally:
                self.pop(inner)
        if not ran and node.orelse is not None:
            self.walk(node.orelse, dot)
        self.pop(mark)

    def iterate(self, value: Any, node: Control) -> Iterable[tuple[Any, Any]]:
        if value is None or value is MISSING:
            return ()
        if isinstance(value, list | tuple):
            return enumerate(value)
        if isinstance(value, Mapping):
            return sorted_items(value)
        if isinstance(value, int) and not isinstance(value, bool):
            # Go 1.22 ranges over an integer n as 0..n-1, giving only the element.
            if len(node.pipe.decl) > 1:
                raise self.error(
                    f"can't use {value} to iterate over more than one variable", node.pos
                )
            return ((None, i) for i in range(value))
        raise self.error(
            f"range can't iterate over {self.show(value, node.pos)} ({go_type(value)}): "
            "range over a list, a map or an integer",
            node.pos,
        )

    def pipeline(self, dot: Any, pipe: Pipe) -> Any:
        value = _NO_FINAL
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.assign:
                self.assign(name, value, pipe.pos)
            else:
                self.push(name, value)
        return value

    def command(self, dot: Any, cmd: Command, final: Any) -> Any:
        self.tick(cmd.pos)
        first, args = cmd.args[0], cmd.args[1:]
        if isinstance(first, Field):
            return self.fields(dot, first.names, args, final, first)
        if isinstance(first, Chain):
            return self.fields(self.value(dot, first.node), first.names, args, final, first)
        if isinstance(first, Identifier):
            return self.call(dot, first, args, final)
        if isinstance(first, Variable) and first.names:
            return self.fields(self.lookup(first.name, first.pos), first.names, args, final, first)
        if args or final is not _NO_FINAL:
            raise self.error(f"can't give argument to non-function {first.source}", first.pos)
        if isinstance(first, Nil):
            raise self.error("nil is not a command", first.pos)
        return self.value(dot, first)

    def value(self, dot: Any, node: Arg) -> Any:
        """An argument's value, with MISSING for a missing map key."""
        if isinstance(node, Field):
            return self.fields(dot, node.names, (), _NO_FINAL, node)
        if isinstance(node, Variable):
            value = self.lookup(node.name, node.pos)
            return self.fields(value, node.names, (), _NO_FINAL, node) if node.names else value
        if isinstance(node, Chain):
            return self.fields(self.value(dot, node.node), node.names, (), _NO_FINAL, node)
        if isinstance(node, Identifier):
            return self.call(dot, node, (), _NO_FINAL)
        if isinstance(node, Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Dot):
            return dot
        return None

    def fields(
        self, receiver: Any, names: tuple[str, ...], args: tuple[Arg, ...], final: Any, node: Arg
    ) -> Any:
        for i, name in enumerate(names):
            if receiver is MISSING:
                return MISSING
            if receiver is None:
                raise self.error(
                    f"can't evaluate field {name} of a nil value in {node.source}", node.pos
                )
            if not isinstance(receiver, Mapping):
                raise self.error(
                    f"can't evaluate field {name} in type {go_type(receiver)} in {node.source}",
                    node.pos,
                )
            if i == len(names) - 1 and (args or final is not _NO_FINAL):
                raise self.error(f"{name} is not a method but has arguments", node.pos)
            receiver = receiver.get(name, MISSING)
        return receiver

    def call(self, dot: Any, ident: Identifier, args: tuple[Arg, ...], final: Any) -> Any:
        name = ident.name
        count = len(args) + (final is not _NO_FINAL)
        if name in CONTEXTS:
            if count:
                raise self.error(f"wrong number of args for {name}: want 0 got {count}", ident.pos)
            context = self.data.get(name)
            return {} if context is None else context
        function = FUNCTIONS[name]
        fixed = len(function.params)
        if function.variadic is None and count != fixed:
            raise self.error(
                f"wrong number of args for {name}: want {fixed} got {count}", ident.pos
            )
        if count < fixed:
            raise self.error(
                f"wrong number of args for {name}: want at least {fixed} got {count}", ident.pos
            )
        kinds = [*function.params, *[function.variadic or "any"] * (count - fixed)]
        if name in ("and", "or"):
            # Go >= 1.18: evaluate left to right, stop at the deciding argument and return it.
            value: Any = None
            for arg in args:
                value = self.arg(dot, arg, "any")
                if truth(value) == (name == "or"):
                    return value
            return self.check(final, "any", ident) if final is not _NO_FINAL else value
        values = [self.arg(dot, arg, kind) for arg, kind in zip(args, kinds, strict=False)]
        if final is not _NO_FINAL:
            values.append(self.check(final, kinds[-1], ident))
        try:
            result = function.call(*values)
        except ValueError as exc:
            raise self.error(f"error calling {name}: {exc}", ident.pos) from None
        if isinstance(result, str):
            # Building long strings costs time too: charge it to the step budget.
            self.tick(ident.pos, len(result) // 100)
        return result

    def arg(self, dot: Any, node: Arg, kind: Kind) -> Any:
        if isinstance(node, Literal) and kind != "any" and not isinstance(node.value, str):
            raise self.error(f"expected {_GO_KINDS[kind]}; found {node.source}", node.pos)
        if isinstance(node, Nil) and kind == "str":
            raise self.error("cannot assign nil to string", node.pos)
        if isinstance(node, Literal) and kind == "strs":
            raise self.error(f"expected []string; found {node.source}", node.pos)
        return self.check(self.value(dot, node), kind, node)

    def check(self, value: Any, kind: Kind, node: Arg | Identifier) -> Any:
        """The value as a parameter of this kind takes it, as Go converts arguments."""
        if kind == "any":
            return None if value is MISSING else value
        if value is None or value is MISSING:
            if kind == "strs":
                return []
            raise self.error(
                f"invalid value; expected string: {node.source} has no value", node.pos
            )
        if kind == "str":
            if isinstance(value, str):
                return value
            raise self.error(
                f"wrong type for value; expected string; got {go_type(value)} ({node.source})",
                node.pos,
            )
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return list(value)
        raise self.error(
            f"wrong type for value; expected []string; got {go_type(value)} ({node.source})",
            node.pos,
        )


_GO_KINDS: dict[Kind, str] = {"any": "interface {}", "str": "string", "strs": "[]string"}
