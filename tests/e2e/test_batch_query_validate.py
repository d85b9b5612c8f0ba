"""`offload batch validate` parses `on.repositoriesMatchingQuery` as the resolver will.

A query offload cannot run is told at validate time, at the line and column of the character
at fault in the YAML file (plain, quoted and folded scalars), instead of failing at preview.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TAIL = """\
steps:
  - run: echo hello >> README.md
    container: alpine:3
changesetTemplate:
  title: Hello
  branch: hello
  commit:
    message: Hello
"""

# Real spec shapes, each with one thing offload cannot run or that is malformed:
# (the query's line in the spec, the text the column must point at, what the message says).
BAD = [
    (
        '  - repositoriesMatchingQuery: lang:go log.Printf(":[format]", :[args]) '
        "patternType:structural repo:sourcegraph$",
        "structural",
        "offload cannot run: write the pattern as a regular expression with patterntype:regexp",
    ),
    (
        "  - repositoriesMatchingQuery: 'repo:has.path(.*\\.php$) "
        "-repo:has.commit.after(1 month ago)'",
        "-repo:has.commit",
        "repo:has.commit.after() is not supported by offload's search",
    ),
    (
        '  - repositoriesMatchingQuery: "file:locals.tf$ lang:klingon tag"',
        "klingon",
        "unknown language 'klingon' in lang:",
    ),
    (
        "  - repositoriesMatchingQuery: whitelist OR",
        "OR",
        "has nothing on its right",
    ),
    (
        "  - repositoriesMatchingQuery: (lang:go OR lang:python file:go.mod",
        "(lang",
        "the ( at column 1 is never closed",
    ),
    (
        "  - repositoriesMatchingQuery: repo:has.file(path:package.json OR content:react)",
        "OR content",
        "repo:has.file() has no OR",
    ),
    (
        "  - repositoriesMatchingQuery: rev:main repo:acme",
        "rev:",
        "the rev: filter is not supported",
    ),
    (
        '  - repositoriesMatchingQuery: file:package.json "bootstrap',
        '"bootstrap',
        "unbalanced quote",
    ),
    (
        "  - repositoriesMatchingQuery: dd-MMM-YYYY patternType:regexp case:maybe",
        "maybe",
        "case:maybe must be case:yes or case:no",
    ),
    (
        "  - repositoriesMatchingQuery: NOT (whitelist OR blacklist)",
        "NOT",
        "NOT applies to one pattern or filter, not to a group",
    ),
    (
        "  - repositoriesMatchingQuery: repo:acme@main",
        "@",
        "revisions (repo:NAME@REV) are not supported",
    ),
]
FOLDED = "  - repositoriesMatchingQuery: >-\n      lang:yaml\n      file:k8s/[a\n"


def offload(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run an offload command in `cwd`, with a terminal-free environment."""
    return subprocess.run(
        [sys.executable, "-m", "offload", *args],
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_queries_offload_cannot_run_fail_validate_at_their_line_and_column(
    tmp_path: Path,
) -> None:
    spec = "name: queries\non:\n" + "".join(line + "\n" for line, _, _ in BAD) + FOLDED + TAIL
    (tmp_path / "batch.yaml").write_text(spec)
    checked = offload("batch", "validate", "-f", "batch.yaml", cwd=tmp_path)
    assert checked.returncode == 1, checked.stdout
    problems = checked.stderr.strip().splitlines()
    assert problems[-1] == f"batch.yaml: {len(BAD) + 1} problems"
    lines = spec.splitlines()
    for index, (line, at, fragment) in enumerate(BAD):
        number = lines.index(line) + 1
        column = line.index(at) + 1
        where = f"batch.yaml:{number}:{column}: on[{index}].repositoriesMatchingQuery: "
        said = [p for p in problems if p.startswith(where)]
        assert said, f"no problem at {where} in:\n{checked.stderr}"
        assert "invalid search query: " in said[0] and fragment in said[0]
    # In a folded scalar, the column is found on the source line the character is on.
    number = lines.index("      file:k8s/[a") + 1
    folded = f"batch.yaml:{number}:16: on[{len(BAD)}].repositoriesMatchingQuery: invalid search "
    folded += "query: invalid regular expression 'k8s/[a' in the file: filter"
    assert any(p.startswith(folded) for p in problems), checked.stderr


def test_queries_of_real_specs_validate(tmp_path: Path) -> None:
    queries = [
        "lang:go gopkg.in/inconshreveable/log15.v2 -repo:sourcegraph/sourcegraph$",
        "file:locals.tf$ lang:HCL tag not ServiceName",
        "lang:HCl aws_vpc count:100",
        '\'f:package.json "bootstrap": ".?4 patterntype:regexp -r:13k -r:ghe -r:gitlab\'',
        "repo:sourcegraph-testing dd-MMM-YYYY fork:yes patternType:regexp case:true",
        "whitelist OR blacklist lang:markdown -file:vendor repo:sourcegraph",
        "'repo:has.path(.*\\.php$) -repo:has.content(phpstan/phpstan)'",
        "'file:docker-compose.yaml entrypoint: count:10'",
        "path:.vscode\\/extensions.json$",
        "^FROM (\\w+\\/)?\\w+:latest($|\\s) file:Dockerfile patternType:regexp fork:yes",
        '(lang:go OR lang:python) AND repo:has.file(path:go.mod content:"go 1.2")',
    ]
    spec = "name: real\non:\n" + "".join(f"  - repositoriesMatchingQuery: {q}\n" for q in queries)
    (tmp_path / "real.yaml").write_text(spec + TAIL)
    checked = offload("batch", "validate", "-f", "real.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert f"({len(queries)} repository selector(s), 1 step(s))" in checked.stdout
