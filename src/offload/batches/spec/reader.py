"""Reading a batch spec file: YAML in, validated BatchSpec out, or every error with its place."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from offload.batches.spec.checks import semantic_errors
from offload.batches.spec.limits import (
    MAX_ERRORS,
    LimitedComposer,
    LimitedScanner,
    check_counts,
    check_text,
)
from offload.batches.spec.model import (
    Author,
    BatchSpec,
    ChangesetTemplate,
    CommitTemplate,
    EnvVar,
    GroupTransform,
    ImportChangeset,
    Mount,
    On,
    OnQuery,
    OnRepository,
    Output,
    Published,
    PublishedRule,
    SpecError,
    SpecErrors,
    Step,
    TransformChanges,
    WorkspaceConfig,
)
from offload.batches.spec.recall import recalled
from offload.batches.spec.schema import describe, schema_errors
from offload.batches.spec.source import SpecSource, key_text


def parse_spec(text: str, *, source: str = "<spec>") -> BatchSpec:
    """Parse and validate a batch spec's YAML; raise SpecErrors listing every problem found."""
    # A spec a worker process parsed already (the server's and the worker's do) is not parsed
    # again here: this may run on an event loop.
    return recalled(text) or read(text, source=source)


def read(text: str, *, source: str = "<spec>") -> BatchSpec:
    """Parse and validate a batch spec, always (parse_spec may recall one parsed before)."""
    check_text(text, source)
    root = _load(text, source)
    spec_source = SpecSource(root, text, source)
    data = _plain(root)
    check_counts(data, source)
    errors = schema_errors(spec_source, data) + semantic_errors(spec_source, data)
    if errors:
        raise SpecErrors(_shown(errors, source))
    return _build(data)


def _shown(errors: list[SpecError], source: str) -> list[SpecError]:
    """The first MAX_ERRORS problems in file order, and how many more there are."""
    if len(errors) <= MAX_ERRORS:
        return errors
    first = sorted(errors, key=lambda e: (e.line, e.column))[:MAX_ERRORS]
    last = first[-1]
    more = len(errors) - MAX_ERRORS
    message = f"... and {more:,} more problem{'s' if more != 1 else ''} (MAX_ERRORS: {MAX_ERRORS})"
    return [*first, SpecError(message, line=last.line, column=last.column, source=source)]


def _load(text: str, source: str) -> Any:
    yaml = YAML(typ="rt")
    # They count the tree as it is read: limits of spec/limits.py, with where they were passed.
    yaml.Scanner = LimitedScanner
    yaml.Composer = LimitedComposer
    yaml.spec_source = source  # type: ignore[attr-defined]
    try:
        root = yaml.load(text)
    except MarkedYAMLError as exc:
        raise SpecErrors([_yaml_error(exc, source)]) from None
    except YAMLError as exc:
        raise SpecErrors([SpecError(f"invalid YAML: {exc}", source=source)]) from None
    if root is None:
        message = "the batch spec is empty; it needs at least a name (name: my-batch-change)"
        raise SpecErrors([SpecError(message, source=source)])
    if not isinstance(root, Mapping):
        found = describe(_plain(root))
        message = f"the batch spec must be a mapping of fields (name: ..., on: ...), found {found}"
        raise SpecErrors([SpecError(message, source=source)])
    return root


def _yaml_error(exc: MarkedYAMLError, source: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    problem = exc.problem or "invalid YAML"
    duplicate = re.match(r'found duplicate key "(.*?)" with value', problem)
    if duplicate:
        message = (
            f'duplicate key "{duplicate[1]}": a field may appear only once in a mapping; '
            "remove or merge one of them"
        )
        return SpecError(message, line=line, column=column, source=source)
    message = f"invalid YAML: {problem}"
    if "'\\t'" in problem:
        message += "; indent with spaces, not tabs"
    if exc.context and exc.context_mark is not None:
        at = exc.context_mark
        message += f" ({exc.context} started at line {at.line + 1}, column {at.column + 1})"
    return SpecError(message, line=line, column=column, source=source)


def _plain(node: Any) -> Any:
    """The ruamel.yaml tree as plain JSON values (dates stay dates, so the schema rejects them)."""
    if isinstance(node, Mapping):
        return {key_text(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    # ruamel's ScalarBoolean (a bool that carries an anchor) subclasses int, not bool.
    if isinstance(node, bool) or type(node).__name__ == "ScalarBoolean":
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def _build(data: dict[str, Any]) -> BatchSpec:
    """The domain objects of a spec that passed the schema."""
    changeset = data.get("changesetTemplate")
    transform = data.get("transformChanges")
    return BatchSpec(
        name=data["name"],
        description=data.get("description", ""),
        version=int(data.get("version", 1)),
        on=tuple(_on(entry) for entry in data.get("on") or []),
        workspaces=tuple(
            WorkspaceConfig(
                root_at_location_of=w["rootAtLocationOf"],
                in_=w.get("in", "*"),
                only_fetch_workspace=w.get("onlyFetchWorkspace", False),
            )
            for w in data.get("workspaces") or []
        ),
        steps=tuple(_step(step) for step in data.get("steps") or []),
        transform_changes=None
        if transform is None
        else TransformChanges(
            group=tuple(
                GroupTransform(g["directory"], g["branch"], g.get("repository"))
                for g in transform.get("group") or []
            )
        ),
        import_changesets=tuple(
            ImportChangeset(c["repository"], tuple(str(i) for i in c["externalIDs"] or []))
            for c in data.get("importChangesets") or []
        ),
        changeset_template=None if changeset is None else _changeset_template(changeset),
    )


def _on(entry: dict[str, Any]) -> On:
    if "repositoriesMatchingQuery" in entry:
        return OnQuery(entry["repositoriesMatchingQuery"])
    return OnRepository(entry["repository"], entry.get("branch"), tuple(entry.get("branches", ())))


def _step(step: dict[str, Any]) -> Step:
    env = step.get("env") or {}
    if isinstance(env, dict):
        variables = tuple(EnvVar(name, value) for name, value in env.items())
    else:
        variables = tuple(
            EnvVar(item, None) if isinstance(item, str) else EnvVar(*next(iter(item.items())))
            for item in env
        )
    return Step(
        run=step["run"],
        container=step["container"],
        env=variables,
        files=dict(step.get("files") or {}),
        outputs={
            name: Output(o["value"], o.get("format", "text"))
            for name, o in (step.get("outputs") or {}).items()
        },
        if_=step.get("if"),
        mount=tuple(Mount(m["path"], m["mountpoint"]) for m in step.get("mount") or []),
    )


def _changeset_template(changeset: dict[str, Any]) -> ChangesetTemplate:
    commit = changeset["commit"]
    author = commit.get("author")
    published = changeset.get("published")
    if published is None:
        publication = None
    elif isinstance(published, list):
        rules = (PublishedRule(g, v) for item in published for g, v in item.items())
        publication = Published(rules=tuple(rules))
    elif isinstance(published, dict):
        publication = Published(rules=tuple(PublishedRule(g, v) for g, v in published.items()))
    else:
        publication = Published(default=published)
    return ChangesetTemplate(
        title=changeset["title"],
        branch=changeset["branch"],
        commit=CommitTemplate(
            message=commit["message"],
            author=None if author is None else Author(author["name"], author["email"]),
        ),
        body=changeset.get("body", ""),
        published=publication,
    )
