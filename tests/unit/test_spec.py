"""Batch spec parsing: Sourcegraph specs parse unchanged; mistakes are told at line and column."""

from __future__ import annotations

import json
import textwrap
from importlib import resources

import jsonschema
import pytest

from offload.batches.spec.model import (
    Author,
    BatchSpec,
    ChangesetTemplate,
    CommitTemplate,
    EnvVar,
    GroupTransform,
    ImportChangeset,
    Mount,
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
from offload.batches.spec.reader import parse_spec
from offload.batches.spec.source import SpecSource

FULL_SPEC = """\
version: 2
name: hello-world.v2
description: Add Hello World to READMEs

on:
  - repositoriesMatchingQuery: file:README.md count:10
  - repository: github.com/sourcegraph/src-cli
    branch: main
  - repository: github.com/sourcegraph/sourcegraph
    branches: [main, "3.40"]

workspaces:
  - rootAtLocationOf: package.json
    in: github.com/sourcegraph/*
    onlyFetchWorkspace: true

steps:
  - run: |
      echo "Hello World" >> README.md
      echo ${{ repository.name }} >> ${{ outputs.file }}
    container: alpine:3
    env:
      - GITHUB_TOKEN
      - FROM: ${{ batch_change.name }}
    files:
      /tmp/hello.txt: Hello from ${{ repository.name }}
    outputs:
      friendlyMessage:
        value: "${{ step.stdout }}"
        format: text
      config:
        value: ${{ step.stdout }}
        format: yaml
    if: ${{ matches repository.name "github.com/sourcegraph/*" }}
    mount:
      - path: ./scripts/hello.sh
        mountpoint: /tmp/hello.sh
  - run: go fmt ./...
    container: golang:1.22
    env:
      GOFLAGS: -mod=mod
    if: false

transformChanges:
  group:
    - directory: client
      branch: hello-world-client
    - directory: monitoring
      branch: hello-world-monitoring
      repository: github.com/sourcegraph/sourcegraph

importChangesets:
  - repository: github.com/sourcegraph/sourcegraph
    externalIDs: [13323, "13328", 13330]

changesetTemplate:
  title: Hello World
  body: |
    My first batch change, in ${{ repository.name }}!
  branch: hello-world # Push the commit to this branch.
  commit:
    message: Append Hello World to all README.md files
    author:
      name: Batch Bot
      email: batches@example.com
  published:
    - github.com/sourcegraph/*: draft
    - github.com/sourcegraph/src-cli: true
"""


def test_full_sourcegraph_spec_parses_into_domain_objects() -> None:
    spec = parse_spec(FULL_SPEC, source="hello.batch.yaml")

    assert spec == BatchSpec(
        name="hello-world.v2",
        description="Add Hello World to READMEs",
        version=2,
        on=(
            OnQuery("file:README.md count:10"),
            OnRepository("github.com/sourcegraph/src-cli", branch="main"),
            OnRepository("github.com/sourcegraph/sourcegraph", branches=("main", "3.40")),
        ),
        workspaces=(
            WorkspaceConfig(
                "package.json", in_="github.com/sourcegraph/*", only_fetch_workspace=True
            ),
        ),
        steps=(
            Step(
                run=(
                    'echo "Hello World" >> README.md\n'
                    "echo ${{ repository.name }} >> ${{ outputs.file }}\n"
                ),
                container="alpine:3",
                env=(EnvVar("GITHUB_TOKEN", None), EnvVar("FROM", "${{ batch_change.name }}")),
                files={"/tmp/hello.txt": "Hello from ${{ repository.name }}"},
                outputs={
                    "friendlyMessage": Output("${{ step.stdout }}", "text"),
                    "config": Output("${{ step.stdout }}", "yaml"),
                },
                if_='${{ matches repository.name "github.com/sourcegraph/*" }}',
                mount=(Mount("./scripts/hello.sh", "/tmp/hello.sh"),),
            ),
            Step(
                run="go fmt ./...",
                container="golang:1.22",
                env=(EnvVar("GOFLAGS", "-mod=mod"),),
                if_=False,
            ),
        ),
        transform_changes=TransformChanges(
            group=(
                GroupTransform("client", "hello-world-client"),
                GroupTransform(
                    "monitoring", "hello-world-monitoring", "github.com/sourcegraph/sourcegraph"
                ),
            )
        ),
        import_changesets=(
            ImportChangeset("github.com/sourcegraph/sourcegraph", ("13323", "13328", "13330")),
        ),
        changeset_template=ChangesetTemplate(
            title="Hello World",
            body="My first batch change, in ${{ repository.name }}!\n",
            branch="hello-world",
            commit=CommitTemplate(
                message="Append Hello World to all README.md files",
                author=Author("Batch Bot", "batches@example.com"),
            ),
            published=Published(
                rules=(
                    PublishedRule("github.com/sourcegraph/*", "draft"),
                    PublishedRule("github.com/sourcegraph/src-cli", True),
                )
            ),
        ),
    )
    assert isinstance(spec.on[2], OnRepository)
    assert spec.on[2].requested_branches() == ("main", "3.40")


def test_minimal_spec_gets_defaults() -> None:
    spec = parse_spec("name: track-prs\n")

    assert spec == BatchSpec(name="track-prs")
    assert spec.changeset_template is None


def test_sourcegraph_leniencies_are_kept() -> None:
    # Empty sections (null), a glob mapping for published, a scalar published, a yes that YAML 1.2
    # keeps a string, and `on` as a key (YAML 1.1 would have made it true).
    spec = parse_spec(
        textwrap.dedent(
            """\
            name: lenient
            description: yes
            on:
            workspaces:
            steps:
            importChangesets:
            changesetTemplate:
              title: t
              branch: b
              commit: {message: m}
              published: {"github.com/*": false, "github.com/a/*": draft}
            """
        )
    )

    assert spec.description == "yes"
    assert spec.on == () and spec.steps == () and spec.import_changesets == ()
    assert spec.changeset_template is not None
    assert spec.changeset_template.published == Published(
        rules=(PublishedRule("github.com/*", False), PublishedRule("github.com/a/*", "draft"))
    )
    draft = parse_spec(
        "name: d\nchangesetTemplate: {title: t, branch: b, commit: {message: m},"
        " published: draft}\n"
    )
    assert draft.changeset_template is not None
    assert draft.changeset_template.published == Published(default="draft")


STEP = "steps:\n  - run: echo\n    container: alpine\n"
TEMPLATE = "changesetTemplate:\n  title: t\n  branch: b\n  commit:\n    message: m\n"

# (yaml, [(line, column, path, fragment of the message)]) : every error, in file order.
INVALID: dict[str, tuple[str, list[tuple[int, int, str, str]]]] = {
    "unknown top-level field": (
        "name: x\ndescripton: typo\n",
        [(2, 1, "descripton", 'unknown field "descripton"; valid fields here: version, name,')],
    ),
    "unknown step field, with a suggestion": (
        "name: x\nsteps:\n  - run: echo\n    container: alpine\n    contaner: alpine\n" + TEMPLATE,
        [
            (
                5,
                5,
                "steps[0].contaner",
                'unknown field "contaner"; valid fields here: run, container, env, files, '
                'outputs, if, mount (did you mean "container"?)',
            )
        ],
    ),
    "wrong type": (
        "name: x\non: github.com/a/b\n",
        [(2, 5, "on", 'expected a list, found the string "github.com/a/b"')],
    ),
    "number where a string is expected": (
        "name: x\nsteps:\n  - run: echo\n    container: 3.10\n" + TEMPLATE,
        [(4, 16, "steps[0].container", "expected a string, found the number 3.1 (put it in quo")],
    ),
    "missing run": (
        "name: x\nsteps:\n  - container: alpine\n" + TEMPLATE,
        [(3, 5, "steps[0]", 'missing required field "run"')],
    ),
    "empty run": (
        "name: x\nsteps:\n  - run:\n    container: alpine\n" + TEMPLATE,
        [(3, 5, "steps[0].run", "expected a string, found nothing (null)")],
    ),
    "missing container": (
        "name: x\nsteps:\n  - run: echo\n" + TEMPLATE,
        [(3, 5, "steps[0]", 'missing required field "container"')],
    ),
    "missing name": (
        "# A spec.\ndescription: no name\n",
        [(2, 1, "", 'missing required field "name"')],
    ),
    "name with spaces": (
        "name: hello world\n",
        [(1, 7, "name", 'may contain only letters, digits, "_", "." and "-" (no spaces')],
    ),
    "steps without changesetTemplate": (
        "name: x\n" + STEP,
        [(2, 1, "steps", "changesetTemplate is required when steps are given")],
    ),
    "branch and branches": (
        "name: x\non:\n  - repository: github.com/a/b\n    branch: main\n    branches: [dev]\n",
        [(5, 5, "on[0].branches", '"branch" or "branches": give only one of them, not both')],
    ),
    "on entry with neither repository nor query": (
        "name: x\non:\n  - branch: main\n",
        [(3, 5, "on[0]", 'each "on" entry must be {repositoriesMatchingQuery: <query>} or')],
    ),
    "on entry that is a string": (
        "name: x\non:\n  - github.com/a/b\n",
        [(3, 5, "on[0]", 'each "on" entry must be {reposi')],
    ),
    "bad template syntax in run": (
        "name: x\nsteps:\n  - run: echo ${{ repository.name\n    container: alpine\n" + TEMPLATE,
        [(3, 15, "steps[0].run", "invalid template: unclosed action")],
    ),
    "unknown template function in title": (
        "name: x\nchangesetTemplate:\n  title: Fix ${{ frobnicate repository.name }}\n"
        "  branch: b\n  commit: {message: m}\n",
        [(3, 18, "changesetTemplate.title", 'function "frobnicate" not defined')],
    ),
    "bad template in a block scalar body": (
        "name: x\n" + TEMPLATE + "  body: |\n    Hello\n\n      from ${{ if }}\n",
        [(10, 19, "changesetTemplate.body", "invalid template: missing value for if")],
    ),
    "bad template in a folded commit message": (
        "name: x\nchangesetTemplate:\n  title: t\n  branch: b\n  commit:\n    message: >\n"
        "      Fix it\n      ${{ else }}\n",
        [(8, 11, "changesetTemplate.commit.message", "unexpected ${{ else }}")],
    ),
    "bad template in a quoted file": (
        "name: x\nsteps:\n  - run: echo\n    container: alpine\n    files:\n"
        '      f.txt: "${{ end }}"\n' + TEMPLATE,
        [(6, 19, 'steps[0].files["f.txt"]', "unexpected ${{ end }}")],
    ),
    "bad template after an escape points at the value": (
        "name: x\nsteps:\n  - run: echo\n    container: alpine\n    env:\n"
        '      - A: "\\t${{ nope }}"\n' + TEMPLATE,
        [(6, 12, "steps[0].env[0].A", 'function "nope" not defined')],
    ),
    "bad template in if and in an output": (
        "name: x\nsteps:\n  - run: echo\n    container: alpine\n    if: ${{ if }}\n"
        "    outputs:\n      o: {value: '${{ nope }}'}\n" + TEMPLATE,
        [
            (5, 16, "steps[0].if", "missing value for if"),
            (7, 23, "steps[0].outputs.o.value", 'function "nope" not defined'),
        ],
    ),
    "bad published value": (
        "name: x\n" + TEMPLATE + "  published: maybe\n",
        [
            (
                7,
                14,
                "changesetTemplate.published",
                'published must be true, false, "draft", or a list of {glob: true|false|"draft"};'
                ' found the string "maybe"',
            )
        ],
    ),
    "bad published value in a glob rule": (
        "name: x\n" + TEMPLATE + "  published:\n    - github.com/*: 1\n",
        [(8, 21, 'changesetTemplate.published[0]["github.com/*"]', "must be true, false, or")],
    ),
    "bad published glob": (
        "name: x\n"
        + TEMPLATE
        + "  published:\n    - github.com/*: true\n    - github.com/[ab: false\n",
        [
            (
                9,
                7,
                "changesetTemplate.published[1]",
                'invalid glob "github.com/[ab": the "[" at character 12 is never closed',
            )
        ],
    ),
    "bad output format": (
        "name: x\nsteps:\n  - run: echo\n    container: alpine\n    outputs:\n"
        "      out: {value: x, format: xml}\n" + TEMPLATE,
        [(6, 31, "steps[0].outputs.out.format", 'must be one of "json", "yaml", "text"; found')],
    ),
    "mount without mountpoint": (
        "name: x\nsteps:\n  - run: echo\n    container: alpine\n    mount:\n      - path: a\n"
        + TEMPLATE,
        [(6, 9, "steps[0].mount[0]", 'missing required field "mountpoint"')],
    ),
    "env as a number": (
        "name: x\nsteps:\n  - run: echo\n    container: alpine\n    env: 5\n" + TEMPLATE,
        [(5, 10, "steps[0].env", "env must be a mapping of NAME: value, or a list of")],
    ),
    "env entry with two names": (
        "name: x\nsteps:\n  - run: echo\n    container: alpine\n    env:\n      - {A: a, B: b}\n"
        + TEMPLATE,
        [(6, 9, "steps[0].env[0]", "must be a mapping with exactly one key; found 2 keys")],
    ),
    "if as a number": (
        "name: x\nsteps:\n  - run: echo\n    container: alpine\n    if: 1\n" + TEMPLATE,
        [(5, 9, "steps[0].if", "if must be true, false, or a template string; found the num")],
    ),
    "YAML syntax error": (
        "name: x\non: [github.com/a\nsteps: []\n",
        [(3, 6, "", "invalid YAML: expected ',' or ']', but got ':'")],
    ),
    "tab indentation": (
        "name: x\n\tsteps: []\n",
        [(2, 1, "", "indent with spaces, not tabs")],
    ),
    "duplicate key": (
        "name: x\non: []\nname: y\n",
        [(3, 1, "", 'duplicate key "name": a field may appear only once')],
    ),
    "empty file": ("", [(1, 1, "", "the batch spec is empty")]),
    "only comments": ("# nothing yet\n", [(1, 1, "", "the batch spec is empty")]),
    "a list at the top level": (
        "- name: x\n",
        [
            (
                1,
                1,
                "",
                "the batch spec must be a mapping of fields (name: ..., on: ...), found a list",
            )
        ],
    ),
    "importChangesets without externalIDs": (
        "name: x\nimportChangesets:\n  - repository: github.com/a/b\n",
        [(3, 5, "importChangesets[0]", 'missing required field "externalIDs"')],
    ),
    "duplicate external ID": (
        "name: x\nimportChangesets:\n  - repository: a\n    externalIDs: [1, 2, 1]\n",
        [(4, 25, "importChangesets[0].externalIDs[2]", "the number 1 appears more than once")],
    ),
    "external ID that is a float": (
        "name: x\nimportChangesets:\n  - repository: a\n    externalIDs: [1.5]\n",
        [(4, 19, "importChangesets[0].externalIDs[0]", "must be a string or an integer")],
    ),
    "unknown version": (
        "version: 3\nname: x\n",
        [(1, 10, "version", "must be one of 1, 2; found the number 3")],
    ),
    "date where a string is expected": (
        "name: x\ndescription: 2024-05-01\n",
        [(2, 14, "description", "expected a string, found the date 2024-05-01")],
    ),
    "changesetTemplate without commit": (
        "name: x\nchangesetTemplate:\n  title: t\n  branch: b\n",
        [(3, 3, "changesetTemplate", 'missing required field "commit"')],
    ),
    "author without email": (
        "name: x\n" + TEMPLATE + "    author: {name: me}\n",
        [(7, 13, "changesetTemplate.commit.author", 'missing required field "email"')],
    ),
    "empty transform directory": (
        "name: x\ntransformChanges:\n  group:\n    - {directory: '', branch: b}\n",
        [(4, 19, "transformChanges.group[0].directory", "must not be empty")],
    ),
    "unknown workspace field": (
        "name: x\nworkspaces:\n  - rootAtLocationOf: go.mod\n    In: '*'\n",
        [(4, 5, "workspaces[0].In", 'unknown field "In"; valid fields here: rootAtLocationOf')],
    ),
}


@pytest.mark.parametrize("text, expected", INVALID.values(), ids=list(INVALID))
def test_invalid_spec_is_reported_at_line_and_column(
    text: str, expected: list[tuple[int, int, str, str]]
) -> None:
    with pytest.raises(SpecErrors) as raised:
        parse_spec(text, source="spec.yaml")

    errors = raised.value.errors
    assert len(errors) == len(expected), str(raised.value)
    for error, (line, column, path, fragment) in zip(errors, expected, strict=True):
        assert (error.line, error.column, error.path) == (line, column, path), str(error)
        assert fragment in error.message
        assert str(error).startswith(f"spec.yaml:{line}:{column}: ")


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = "name: a b\nsteps:\n  - run: echo\n    contaner: alpine\n"

    with pytest.raises(SpecErrors) as raised:
        parse_spec(text, source="x.yaml")

    assert str(raised.value).splitlines() == [
        'x.yaml:1:7: name: may contain only letters, digits, "_", "." and "-" (no spaces or '
        'slashes); found the string "a b"',
        "x.yaml:2:1: steps: changesetTemplate is required when steps are given; add one with "
        "title, branch and commit.message",
        'x.yaml:3:5: steps[0]: missing required field "container"',
        'x.yaml:4:5: steps[0].contaner: unknown field "contaner"; valid fields here: run, '
        'container, env, files, outputs, if, mount (did you mean "container"?)',
    ]


def test_spec_error_format() -> None:
    at_field = SpecError("bad", path="steps[0].run", line=3, column=9, source="a.yaml")
    at_root = SpecError("empty", line=1, column=1)

    assert str(at_field) == "a.yaml:3:9: steps[0].run: bad"
    assert str(at_root) == "<spec>:1:1: empty"
    assert isinstance(SpecErrors([at_field]), ValueError)


def test_shipped_schema_is_valid_and_closed() -> None:
    text = resources.files("offload.batches").joinpath("schema/batch_spec.schema.json").read_text()
    schema = json.loads(text)
    jsonschema.Draft7Validator.check_schema(schema)

    def objects(node: object) -> list[dict[str, object]]:
        if isinstance(node, list):
            return [o for item in node for o in objects(item)]
        if not isinstance(node, dict):
            return []
        found = [node] if "properties" in node else []
        return found + [o for value in node.values() for o in objects(value)]

    assert all(o.get("additionalProperties") is False for o in objects(schema))


POSITIONS = """\
plain: echo ${{ x }}
double: "echo ${{ x }}"
single: 'it''s ${{ x }}'
escaped: "a\\tb ${{ x }}"
literal: |
  line one
    indented ${{ x }}
folded: >-
  first
  second ${{ x }}

  third ${{ x }}
multiline: first
  second ${{ x }}
"""


@pytest.mark.parametrize(
    "field, needle, occurrence, line, column",
    [
        ("plain", "x", 0, 1, 17),
        ("double", "x", 0, 2, 19),
        ("single", "it", 0, 3, 10),  # before the '' escape: exact
        ("single", "x", 0, 3, 9),  # after it: the value's start
        ("escaped", "a", 0, 4, 11),
        ("escaped", "x", 0, 4, 10),
        ("literal", "x", 0, 7, 18),
        ("literal", "line", 0, 6, 3),
        ("folded", "second", 0, 10, 3),
        ("folded", "x", 1, 12, 13),
        ("multiline", "x", 0, 14, 14),
    ],
)
def test_text_position_maps_string_offsets_to_the_file(
    field: str, needle: str, occurrence: int, line: int, column: int
) -> None:
    from ruamel.yaml import YAML

    root = YAML().load(POSITIONS)
    text = str(root[field])
    offset = -1
    for _ in range(occurrence + 1):
        offset = text.index(needle, offset + 1)

    assert SpecSource(root, POSITIONS, "p.yaml").text_position([field], offset) == (line, column)
