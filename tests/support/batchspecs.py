"""Batch specs the store and service tests submit: the smallest valid one, named as asked."""

from __future__ import annotations

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
