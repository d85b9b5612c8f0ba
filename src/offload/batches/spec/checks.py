"""Checks beyond a batch spec's schema: templates, globs, search queries, required sections."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from offload.batches.spec.model import SpecError
from offload.batches.spec.source import SpecSource, format_path
from offload.batches.template import engine as template
from offload.repos.search_query import QueryError, parse_query

_Field = tuple[list[str | int], str]


def semantic_errors(source: SpecSource, data: dict[str, Any]) -> list[SpecError]:
    """Every semantic problem of a spec; written to cope with data the schema rejected."""
    errors = []
    steps = data.get("steps")
    if isinstance(steps, list) and steps and "changesetTemplate" not in data:
        message = (
            "changesetTemplate is required when steps are given; add one with title, branch "
            "and commit.message"
        )
        errors.append(source.error(["steps"], message, source.key_position(["steps"])))
    errors += _glob_errors(source, data)
    errors += _template_errors(source, data)
    errors += _query_errors(source, data)
    return errors


def glob_problem(glob: str) -> str | None:
    """Why a repository-name glob (*, ?, [...], {a,b}, \\x) cannot be compiled, if it cannot."""
    depth = 0
    i = 0
    while i < len(glob):
        char = glob[i]
        if char == "\\":
            if i + 1 == len(glob):
                return 'it ends with an unfinished escape "\\"'
            i += 1
        elif char == "[":
            close = glob.find("]", i + 1)
            if close < 0:
                return f'the "[" at character {i + 1} is never closed with "]"'
            i = close
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return f'the "}}" at character {i + 1} has no matching "{{"'
            depth -= 1
        i += 1
    return 'a "{" is never closed with "}"' if depth else None


def _glob_errors(source: SpecSource, data: dict[str, Any]) -> list[SpecError]:
    changeset = data.get("changesetTemplate")
    published = changeset.get("published") if isinstance(changeset, dict) else None
    base: list[str | int] = ["changesetTemplate", "published"]
    # (path named in the error, path of the glob key)
    rules: list[tuple[list[str | int], list[str | int]]] = []
    if isinstance(published, list):
        for i, item in enumerate(published):
            if isinstance(item, dict):
                rules += [([*base, i], [*base, i, glob]) for glob in item]
    elif isinstance(published, dict):
        rules = [([*base, glob], [*base, glob]) for glob in published]
    errors = []
    for path, key in rules:
        glob = str(key[-1])
        problem = glob_problem(glob)
        if problem:
            message = f"invalid glob {json.dumps(glob)}: {problem}"
            errors.append(source.error(path, message, source.key_position(key)))
    return errors


def _query_errors(source: SpecSource, data: dict[str, Any]) -> list[SpecError]:
    """Search queries the resolver could not run, at the character in the file at fault."""
    entries = data.get("on")
    errors = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        query = entry.get("repositoriesMatchingQuery") if isinstance(entry, dict) else None
        if not isinstance(query, str):
            continue  # the schema says what is wrong with it
        try:
            parse_query(query)
        except QueryError as exc:
            path: list[str | int] = ["on", i, "repositoriesMatchingQuery"]
            offset = min(exc.column - 1, len(query))
            message = f"invalid search query: {exc.message}"
            errors.append(source.error(path, message, source.text_position(path, offset)))
    return errors


def _template_errors(source: SpecSource, data: dict[str, Any]) -> list[SpecError]:
    errors = []
    for path, text in _templated_fields(data):
        try:
            template.parse(text, name=format_path(path))
        except template.TemplateError as exc:
            offset = _offset(text, exc.line, exc.column)
            message = f"invalid template: {exc.message}"
            errors.append(source.error(path, message, source.text_position(path, offset)))
    return errors


def _offset(text: str, line: int, column: int) -> int:
    """The character offset of a 1-based line and column in text."""
    lines = text.split("\n")
    before = sum(len(ln) + 1 for ln in lines[: max(line - 1, 0)])
    return min(before + max(column - 1, 0), len(text))


def _templated_fields(data: dict[str, Any]) -> Iterator[_Field]:
    """Every string rendered as a template, with its path."""
    steps = data.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        if not isinstance(step, dict):
            continue
        base: list[str | int] = ["steps", i]
        yield from _strings(step, base, ["run", "if"])
        env = step.get("env")
        if isinstance(env, dict):
            yield from _strings(env, [*base, "env"], list(env))
        elif isinstance(env, list):
            for j, item in enumerate(env):
                if isinstance(item, dict):
                    yield from _strings(item, [*base, "env", j], list(item))
        files = step.get("files")
        if isinstance(files, dict):
            yield from _strings(files, [*base, "files"], list(files))
        outputs = step.get("outputs")
        if isinstance(outputs, dict):
            for name, output in outputs.items():
                if isinstance(output, dict):
                    yield from _strings(output, [*base, "outputs", name], ["value"])
    changeset = data.get("changesetTemplate")
    if isinstance(changeset, dict):
        yield from _strings(changeset, ["changesetTemplate"], ["title", "body", "branch"])
        commit = changeset.get("commit")
        if isinstance(commit, dict):
            yield from _strings(commit, ["changesetTemplate", "commit"], ["message"])
            author = commit.get("author")
            if isinstance(author, dict):
                path: list[str | int] = ["changesetTemplate", "commit", "author"]
                yield from _strings(author, path, ["name", "email"])


def _strings(mapping: dict[str, Any], base: list[str | int], keys: list[str]) -> Iterator[_Field]:
    for key in keys:
        value = mapping.get(key)
        if isinstance(value, str):
            yield [*base, key], value
