"""Template syntax: the parse tree of a `${{ }}` template and the parser that builds it."""

from __future__ import annotations

import dataclasses
from collections.abc import Set
from dataclasses import dataclass
from typing import Any, TypeAlias

from offload.batches.template.lexer import (
    ASSIGN,
    COMMA,
    DECLARE,
    DOT,
    EOF,
    FIELD,
    IDENT,
    KEYWORD,
    LEFT_DELIM,
    LITERAL,
    LPAREN,
    NIL,
    OPERAND_START,
    PIPE,
    RIGHT,
    RIGHT_DELIM,
    RPAREN,
    TEXT,
    VAR,
    Lexer,
    TemplateError,
    Token,
    error_at,
)

MAX_DEPTH = 100
"""How deep parentheses and if/range/with blocks may nest (deeper templates are refused)."""


# The parse tree. Every node knows its offset; arguments also keep their source for messages.


@dataclass(frozen=True, slots=True)
class Text:
    """Text outside actions, copied to the output."""

    pos: int
    text: str


@dataclass(frozen=True, slots=True)
class Field:
    """A field chain on dot: .repository.name."""

    pos: int
    source: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Variable:
    """A variable, maybe followed by fields: $, $x, $x.name."""

    pos: int
    source: str
    name: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Dot:
    """The cursor, `.`."""

    pos: int
    source: str


@dataclass(frozen=True, slots=True)
class Nil:
    """The untyped `nil`."""

    pos: int
    source: str


@dataclass(frozen=True, slots=True)
class Literal:
    """A constant: a string, a number or a bool."""

    pos: int
    source: str
    value: Any


@dataclass(frozen=True, slots=True)
class Identifier:
    """A function name: join, eq, repository."""

    pos: int
    source: str
    name: str


@dataclass(frozen=True, slots=True)
class Chain:
    """Fields on something that is not dot or a variable: repository.name, (pipeline).x."""

    pos: int
    source: str
    node: Arg
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Command:
    """One stage of a pipeline: an operand, maybe a function with its arguments."""

    pos: int
    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Pipe:
    """A pipeline, maybe declaring ($x := ...) or assigning ($x = ...) variables."""

    pos: int
    source: str
    decl: tuple[str, ...]
    assign: bool
    cmds: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Action:
    """An action that prints its pipeline's value unless it declares variables."""

    pos: int
    pipe: Pipe


@dataclass(frozen=True, slots=True)
class Control:
    """An if, with or range block, with its optional else."""

    pos: int
    keyword: str
    pipe: Pipe
    body: tuple[Node, ...]
    orelse: tuple[Node, ...] | None


@dataclass(frozen=True, slots=True)
class Jump:
    """A break or continue inside a range."""

    pos: int
    keyword: str


Arg: TypeAlias = Field | Variable | Dot | Nil | Literal | Identifier | Chain | Pipe
Node: TypeAlias = Text | Action | Control | Jump


@dataclass(frozen=True, slots=True)
class _Stop:
    """An {{else}} or {{end}} that closes the list being parsed."""

    keyword: str
    pos: int
    chained: Token | None = None


def _tag(words: str) -> str:
    """An action as users write it, for messages: ${{ end }}."""
    return f"{LEFT_DELIM} {words} {RIGHT_DELIM}"


class Parser:
    """Builds the parse tree of one template, checking names and variables as Go does."""

    def __init__(self, text: str, name: str, functions: Set[str]) -> None:
        self.text = text
        self.name = name
        self.functions = functions
        self.tokens = Lexer(text, name).lex()
        self.i = 0
        self.scope = ["$"]
        self.declared = {"$": 1}
        self.range_depth = 0
        self.depth = 0

    def parse(self) -> tuple[Node, ...]:
        """The template's nodes; raises TemplateError on the first syntax error."""
        nodes, stop = self.items()
        if stop is not None:
            what = "else" if stop.keyword == "else" else "end"
            raise self.error(f"unexpected {_tag(what)}: no if, range or with is open", stop.pos)
        return nodes

    def error(self, message: str, pos: int) -> TemplateError:
        return error_at(self.text, pos, message, self.name)

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        token = self.tokens[self.i]
        if token.kind != EOF:
            self.i += 1
        return token

    def source(self, start: int) -> str:
        """The template text from start to the end of the last token consumed."""
        return self.text[start : self.tokens[self.i - 1].end]

    def unexpected(self, token: Token, context: str) -> TemplateError:
        shown = "end of template" if token.kind == EOF else self.text[token.pos : token.end]
        return self.error(f'unexpected "{shown}" in {context}', token.pos)

    def enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"templates may nest at most {MAX_DEPTH} levels deep", token.pos)

    def declare(self, name: str) -> None:
        self.scope.append(name)
        self.declared[name] = self.declared.get(name, 0) + 1

    def unscope(self, mark: int) -> None:
        """Forget the variables declared since mark: a block's variables end at its end."""
        while len(self.scope) > mark:
            self.declared[self.scope.pop()] -= 1

    def items(self) -> tuple[tuple[Node, ...], _Stop | None]:
        """Text and actions up to the end of the template or an else/end."""
        nodes: list[Node] = []
        while True:
            token = self.next()
            if token.kind == EOF:
                return tuple(nodes), None
            if token.kind == TEXT:
                nodes.append(Text(token.pos, token.value))
                continue
            node = self.action()
            if isinstance(node, _Stop):
                return tuple(nodes), node
            nodes.append(node)

    def action(self) -> Node | _Stop:
        token = self.peek()
        if token.kind != KEYWORD:
            return Action(token.pos, self.pipeline("command", RIGHT))
        self.next()
        word = token.value
        if word in ("if", "with", "range"):
            return self.control(token)
        if word in ("break", "continue"):
            if self.range_depth == 0:
                raise self.error(f"{_tag(word)} outside {_tag('range')}", token.pos)
            self.expect_right(word)
            return Jump(token.pos, word)
        if word == "else":
            chained = self.peek()
            if chained.kind == KEYWORD and chained.value in ("if", "with"):
                return _Stop("else", token.pos, self.next())
            self.expect_right("else")
            return _Stop("else", token.pos)
        if word == "end":
            self.expect_right("end")
            return _Stop("end", token.pos)
        raise self.error(
            f"{_tag(word)} is not supported: batch spec templates cannot define templates",
            token.pos,
        )

    def expect_right(self, word: str) -> None:
        token = self.next()
        if token.kind != RIGHT:
            raise self.error(
                f'unexpected "{self.text[token.pos : token.end]}" in {_tag(word)}: expected }}}}',
                token.pos,
            )

    def control(self, keyword: Token) -> Control:
        word = keyword.value
        self.enter(keyword)
        outer = len(self.scope)
        pipe = self.pipeline(word, RIGHT)
        inner = len(self.scope)
        self.range_depth += word == "range"
        body, stop = self.items()
        self.unscope(inner)
        self.range_depth -= word == "range"
        orelse: tuple[Node, ...] | None = None
        if stop is not None and stop.keyword == "else":
            if stop.chained is not None:
                if stop.chained.value != word:
                    raise self.error(
                        f"{_tag('else ' + stop.chained.value)} cannot continue {_tag(word)}: "
                        f"write {_tag('else')}{_tag(stop.chained.value + ' ...')}...{_tag('end')}",
                        stop.pos,
                    )
                # {{else if b}}...{{end}} is {{else}}{{if b}}...{{end}}{{end}}: one end closes both.
                orelse = (self.control(stop.chained),)
                stop = _Stop("end", stop.pos)
            else:
                orelse, stop = self.items()
                self.unscope(inner)
                if stop is not None and stop.keyword == "else":
                    raise self.error(
                        f"{_tag(word)} already has an {_tag('else')}: expected {_tag('end')}",
                        stop.pos,
                    )
        if stop is None:
            raise self.error(f"{_tag(word)} is never closed: add {_tag('end')}", keyword.pos)
        self.unscope(outer)
        self.depth -= 1
        return Control(keyword.pos, word, pipe, body, orelse)

    def pipeline(self, context: str, end: str) -> Pipe:
        start = self.peek()
        decl: list[Token] = []
        assign = False
        while self.peek().kind == VAR:
            var, after = self.peek(), self.tokens[self.i + 1]
            if after.kind in (DECLARE, ASSIGN):
                self.i += 2
                decl.append(var)
                assign = after.kind == ASSIGN
                break
            if after.kind != COMMA:
                if decl:
                    raise self.unexpected(after, f"{context}: expected := after the variables")
                break
            self.i += 2
            decl.append(var)
            if context != "range" or len(decl) > 1:
                raise self.error(f"too many declarations in {context}", var.pos)
            if self.peek().kind != VAR:
                raise self.error(
                    "range can only initialize variables: write range $i, $v := ...", var.pos
                )
        for var in decl:
            if assign and not self.declared.get(var.value):
                raise self.error(
                    f"undefined variable {var.value}: declare it first with {var.value} := ...",
                    var.pos,
                )
        cmds: list[Command] = []
        while True:
            token = self.peek()
            if token.kind in OPERAND_START:
                cmd, piped = self.command()
                cmds.append(cmd)
                if piped:
                    if self.peek().kind not in OPERAND_START:
                        raise self.unexpected(self.peek(), f"{context}: expected a command after |")
                    continue
                token = self.peek()
            if token.kind == end:
                break
            raise self.unexpected(token, context)
        if not cmds:
            raise self.error(f"missing value for {context}", token.pos)
        source = self.source(start.pos)
        self.next()
        for stage, cmd in enumerate(cmds[1:], start=2):
            if isinstance(cmd.args[0], Literal | Dot | Nil):
                raise self.error(
                    f"non executable command in pipeline stage {stage}: "
                    "only a function can receive a piped value",
                    cmd.pos,
                )
        if not assign:
            for var in decl:
                self.declare(var.value)
        names = tuple(var.value for var in decl)
        return Pipe(start.pos, source, names, assign, tuple(cmds))

    def command(self) -> tuple[Command, bool]:
        """One pipeline stage, and whether a | follows it."""
        start = self.peek()
        args: list[Arg] = []
        while True:
            args.append(self.operand())
            token = self.peek()
            if token.kind in (RIGHT, RPAREN):
                return Command(start.pos, tuple(args)), False
            if token.kind == PIPE:
                self.next()
                return Command(start.pos, tuple(args)), True
            if token.space and token.kind in OPERAND_START:
                continue
            if token.kind == LPAREN and isinstance(args[-1], Identifier):
                raise self.error(
                    f"unexpected ( after {args[-1].name}: call functions with spaces, "
                    f"as in ({args[-1].name} a b), not {args[-1].name}(a, b)",
                    token.pos,
                )
            raise self.unexpected(token, "operand")

    def operand(self) -> Arg:
        start = self.peek()
        node = self.term()
        names: list[str] = []
        while self.peek().kind == FIELD and not self.peek().space:
            names.append(self.next().value)
        if not names:
            return node
        source = self.source(start.pos)
        if isinstance(node, Field):
            return Field(node.pos, source, node.names + tuple(names))
        if isinstance(node, Variable):
            return Variable(node.pos, source, node.name, tuple(names))
        if isinstance(node, Literal | Dot | Nil):
            raise self.error(f"unexpected . after term {node.source}", start.pos)
        return Chain(node.pos, source, node, tuple(names))

    def term(self) -> Arg:
        token = self.next()
        kind, pos, text = token.kind, token.pos, self.text[token.pos : token.end]
        if kind == IDENT:
            if token.value not in self.functions:
                known = ", ".join(sorted(self.functions))
                raise self.error(f'function "{token.value}" not defined (known: {known})', pos)
            return Identifier(pos, text, token.value)
        if kind == FIELD:
            return Field(pos, text, (token.value,))
        if kind == VAR:
            if not self.declared.get(token.value):
                raise self.error(
                    f"undefined variable {token.value}: declare it with {token.value} := ...", pos
                )
            return Variable(pos, text, token.value)
        if kind == DOT:
            return Dot(pos, text)
        if kind == NIL:
            return Nil(pos, text)
        if kind == LITERAL:
            return Literal(pos, text, token.value)
        if kind == LPAREN:
            self.enter(token)
            pipe = self.pipeline("parenthesized pipeline", RPAREN)
            self.depth -= 1
            return dataclasses.replace(pipe, source=self.source(pos))
        raise self.unexpected(token, "operand")
