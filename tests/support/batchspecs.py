"""Batch specs the store and service tests submit (the smallest valid one, named as asked),
and the workspaces they add by hand."""

from __future__ import annotations

from offload.batches.store import NewWorkspace

MINIMAL = """\
name: {name}
on:
  - repository: demo
steps:
  - run: "true"
    container: busybox
changesetTemplate:
  title: t
  branch: b
  commit:
    message: m
"""


def minimal(name: str) -> str:
    """One step over the repository `demo`, one changeset per workspace."""
    return MINIMAL.format(name=name)


def workspace(path: str, **flags: bool) -> NewWorkspace:
    """A workspace of the monorepo `demo` at `path`."""
    return NewWorkspace(repo_name="demo", branch="main", commit="a" * 40, path=path, **flags)
