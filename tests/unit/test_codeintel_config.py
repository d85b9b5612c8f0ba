"""Reading sourcegraph.yaml: every field, errors with line:column, and hostile input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offload.codeintel.config import ConfigErrors, IndexJob, Step, parse_config

FULL = """\
index_jobs:
  - steps:
      - root: web
        image: node:20
        commands: [npm install, npm run build]
    local_steps: [echo ready]
    root: ./web/
    indexer: sourcegraph/scip-typescript
    indexer_args: [scip-typescript, index]
    outfile: out/web.scip
    requestedEnvVars: [NPM_TOKEN]
  - indexer: sourcegraph/scip-go
"""


def errors(text: str | bytes) -> list[str]:
    """The problems parse_config reports, as people read them."""
    with pytest.raises(ConfigErrors) as caught:
        parse_config(text)
    return str(caught.value).splitlines()


def test_every_field() -> None:
    """Each field lands in the job; defaults fill the rest; roots are cleaned."""
    assert parse_config(FULL) == (
        IndexJob(
            indexer="sourcegraph/scip-typescript",
            root="web",
            steps=(Step("web", "node:20", ("npm install", "npm run build")),),
            local_steps=("echo ready",),
            indexer_args=("scip-typescript", "index"),
            outfile="out/web.scip",
            requested_env_vars=("NPM_TOKEN",),
        ),
        IndexJob(indexer="sourcegraph/scip-go"),
    )


def test_json_is_read_too() -> None:
    """The same configuration written as JSON (with tabs) gives the same jobs."""
    jobs = parse_config(FULL)
    text = json.dumps({"index_jobs": [j.payload() for j in jobs]}, indent="\t")
    assert parse_config(text.encode()) == jobs


def test_no_jobs_is_valid() -> None:
    """An empty list means: index nothing."""
    assert parse_config("index_jobs: []\n") == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ["sourcegraph.yaml:1:1: the file is empty; it needs index_jobs: [...]"]),
        (
            "- a\n",
            ["sourcegraph.yaml:1:1: expected a mapping with index_jobs: [...], found a list"],
        ),
        (
            "jobs: []\n",
            [
                "sourcegraph.yaml:1:1: unknown field 'jobs'; the fields are index_jobs",
                "sourcegraph.yaml:1:1: index_jobs is missing; add index_jobs: [...]",
            ],
        ),
        (
            "index_jobs: {}\n",
            ["sourcegraph.yaml:1:13: index_jobs: expected a list, found a mapping"],
        ),
        (
            "index_jobs:\n  - root: a\n",
            [
                "sourcegraph.yaml:2:5: index_jobs[0]: indexer is missing; it names an image, "
                "e.g. indexer: my/image"
            ],
        ),
        (
            "index_jobs:\n  - indexer: x\n    indexer_arg: [a]\n",
            [
                "sourcegraph.yaml:3:5: index_jobs[0]: unknown field 'indexer_arg'; the fields are "
                "steps, local_steps, root, indexer, indexer_args, outfile, requestedEnvVars"
            ],
        ),
        (
            "index_jobs:\n  - indexer: x\n    steps:\n      - image: i\n"
            "        commands: [ok, 7]\n",
            [
                "sourcegraph.yaml:5:24: index_jobs[0].steps[0].commands[1]: expected a string, "
                "found an integer (7); put it in quotes"
            ],
        ),
        (
            "index_jobs:\n  - indexer: x\n    steps: [{commands: []}]\n",
            [
                "sourcegraph.yaml:3:13: index_jobs[0].steps[0]: image is missing; it names an "
                "image, e.g. image: my/image"
            ],
        ),
        (
            "index_jobs:\n  - indexer: x\n    root: ../up\n",
            [
                "sourcegraph.yaml:3:11: index_jobs[0].root: '../up' must be a path inside the "
                "repository (no / or ..)"
            ],
        ),
        (
            "index_jobs:\n  - indexer: x\n    requestedEnvVars: [OK, 'A B']\n",
            [
                "sourcegraph.yaml:3:23: index_jobs[0].requestedEnvVars: 'A B' is not an "
                "environment variable name (letters, digits, _)"
            ],
        ),
        (
            "index_jobs:\n  - indexer: x\n    indexer: y\n",
            [
                'sourcegraph.yaml:3:5: invalid YAML: found duplicate key "indexer"; a field may '
                "appear only once"
            ],
        ),
        (
            "index_jobs:\n\t- indexer: x\n",
            [
                "sourcegraph.yaml:2:1: invalid YAML: found character '\\t' that cannot start any "
                "token"
            ],
        ),
        (
            "a: &x [1]\nindex_jobs: *x\n",
            [
                "sourcegraph.yaml:2:13: alias *x: anchors and aliases are not supported here; "
                "write the values out"
            ],
        ),
    ],
)
def test_invalid_files_say_where(text: str, expected: list[str]) -> None:
    """Every problem comes with its line, column and field."""
    assert errors(text) == expected


def test_all_problems_at_once() -> None:
    """Several problems are all reported, in file order."""
    text = "index_jobs:\n  - indexer: 1\n  - root: 2\n    indexer: x\n"
    assert errors(text) == [
        "sourcegraph.yaml:2:14: index_jobs[0].indexer: expected a string, found an integer (1); "
        "put it in quotes",
        "sourcegraph.yaml:3:11: index_jobs[1].root: expected a string, found an integer (2); "
        "put it in quotes",
    ]


def test_limits() -> None:
    """Too many jobs, too long strings, too deep or binary text: each named with its limit."""
    many = "index_jobs:\n" + "  - indexer: x\n" * 101
    assert errors(many) == [
        "sourcegraph.yaml:2:3: index_jobs: 101 entries; the limit is 100 (MAX_JOBS)"
    ]
    long = "index_jobs:\n  - indexer: " + "x" * 9000 + "\n"
    assert errors(long) == [
        "sourcegraph.yaml:2:14: index_jobs[0].indexer: 9,000 characters; the limit is 8,192 "
        "(MAX_STRING_CHARS)"
    ]
    deep = "index_jobs: " + "[" * 5000
    assert errors(deep) == ["sourcegraph.yaml:1:29: brackets nest deeper than 16 (MAX_DEPTH)"]
    assert errors("index_jobs: []\n\x07") == [
        "sourcegraph.yaml:2:1: control character U+0007; is this a binary file?"
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(data: bytes) -> None:
    """Any bytes give jobs or ConfigErrors, never another exception."""
    try:
        parse_config(data)
    except ConfigErrors as problems:
        assert problems.errors and all(e.line >= 1 and e.column >= 1 for e in problems.errors)


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["index_jobs", "indexer", "root", "steps", "image", "commands", "x"])
            | st.text(max_size=5),
            inner,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_random_documents_never_crash(value: object) -> None:
    """Any JSON-shaped document of the right and wrong types: jobs or ConfigErrors."""
    try:
        parse_config(json.dumps(value))
    except ConfigErrors as problems:
        assert problems.errors


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="[]{}:-,&*!|>'\"\n #ab1", max_size=200))
def test_random_yaml_syntax_never_crashes(text: str) -> None:
    """YAML punctuation in any order: jobs or ConfigErrors."""
    try:
        parse_config(text)
    except ConfigErrors as problems:
        assert problems.errors
