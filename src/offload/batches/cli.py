"""`offload batch ...`: write, check and run batch specs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

batch_app = typer.Typer(
    help="Batch changes: one change described in a spec, run across many repositories.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console()
err = Console(stderr=True)

SpecFile = Annotated[
    str, typer.Option("--file", "-f", help="The batch spec (YAML); - reads standard input.")
]

STARTER = """\
# A batch change: https://docs.sourcegraph.com/batch_changes/references/batch_spec_yaml_reference
# describes every field; offload reads the same format.
name: {name}
description: Say what this batch change does and why.

# The repositories to change (offload repos list shows them).
on:
  - repositoriesMatchingQuery: file:README.md
  # - repository: github.com/acme/api
  #   branch: main

# Run in each repository, in the container, from the repository's root.
steps:
  - run: sed -i 's/colour/color/g' README.md
    container: busybox

changesetTemplate:
  title: Use American spelling
  body: This batch change was created by ${{{{ batch_change.name }}}}.
  branch: batch/${{{{ batch_change.name }}}}
  commit:
    message: Use American spelling in ${{{{ repository.name }}}}
  published: false
"""


def read_spec(file: str) -> tuple[str, str]:
    """The spec's text and the name its errors should show."""
    if file == "-":
        return sys.stdin.read(), "<stdin>"
    path = Path(file)
    try:
        return path.read_text(), file
    except OSError as exc:
        err.print(f"[bold red]error:[/] cannot read {file}: {exc.strerror}", highlight=False)
        raise typer.Exit(2) from exc


@batch_app.command()
def new(
    file: Annotated[
        str, typer.Option("--file", "-f", help="Where to write the spec.")
    ] = "batch.yaml",
    name: Annotated[str, typer.Option(help="The batch change's name.")] = "hello-world",
) -> None:
    """Write a starter batch spec to edit.

    Examples:

        offload batch new

        offload batch new -f fix-spelling.yaml --name fix-spelling
    """
    path = Path(file)
    if path.exists():
        err.print(f"[bold red]error:[/] {file} exists; choose another --file", highlight=False)
        raise typer.Exit(1)
    path.write_text(STARTER.format(name=name))
    out.print(f"wrote {file}; check it with: offload batch validate -f {file}", highlight=False)


@batch_app.command()
def validate(file: SpecFile) -> None:
    """Check a batch spec: every problem is printed as FILE:LINE:COLUMN: FIELD: what is wrong.

    Exits 0 when the spec is valid, 1 when it is not.

    Examples:

        offload batch validate -f batch.yaml

        cat batch.yaml | offload batch validate -f -
    """
    from offload.batches.spec import SpecErrors, parse_spec

    text, source = read_spec(file)
    try:
        spec = parse_spec(text, source=source)
    except SpecErrors as exc:
        for problem in exc.errors:
            err.print(str(problem), highlight=False, markup=False, soft_wrap=True)
        count = len(exc.errors)
        err.print(f"{source}: {count} problem{'s' if count != 1 else ''}", highlight=False)
        raise typer.Exit(1) from exc
    out.print(
        f"{source}: batch spec {spec.name!r} is valid "
        f"({len(spec.on)} repository selector(s), {len(spec.steps)} step(s))",
        highlight=False,
        markup=False,
    )
