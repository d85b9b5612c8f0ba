"""Batch specs: the YAML a user writes to describe one change across many repositories."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

OutputFormat: TypeAlias = Literal["json", "yaml", "text"]
PublishedState: TypeAlias = bool | Literal["draft"]


@dataclass(frozen=True)
class OnQuery:
    """Run on every repository (and branch) a search query matches."""

    repositories_matching_query: str


@dataclass(frozen=True)
class OnRepository:
    """Run on one named repository, on its default branch or the given branch(es)."""

    repository: str
    branch: str | None = None
    branches: tuple[str, ...] = ()

    def requested_branches(self) -> tuple[str, ...]:
        """The branches asked for; empty means the repository's default branch."""
        return (self.branch,) if self.branch is not None else self.branches


On: TypeAlias = OnQuery | OnRepository


@dataclass(frozen=True)
class WorkspaceConfig:
    """Split matching repositories into one workspace per directory holding a marker file."""

    root_at_location_of: str
    in_: str = "*"
    only_fetch_workspace: bool = False


@dataclass(frozen=True)
class EnvVar:
    """One step environment variable; a None value is passed through from the environment."""

    name: str
    value: str | None


@dataclass(frozen=True)
class Output:
    """A named step output: a template rendered after the step, parsed in its format."""

    value: str
    format: OutputFormat = "text"


@dataclass(frozen=True)
class Mount:
    """A local file or directory mounted into a step's container."""

    path: str
    mountpoint: str


@dataclass(frozen=True)
class Step:
    """One command run in a container in each workspace."""

    run: str
    container: str
    env: tuple[EnvVar, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)
    outputs: Mapping[str, Output] = field(default_factory=dict)
    if_: bool | str | None = None
    mount: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class GroupTransform:
    """Changes under a directory that go to their own changeset on their own branch."""

    directory: str
    branch: str
    repository: str | None = None


@dataclass(frozen=True)
class TransformChanges:
    """Transformations applied to the changes produced in each workspace."""

    group: tuple[GroupTransform, ...] = ()


@dataclass(frozen=True)
class ImportChangeset:
    """Existing pull requests of one repository to track, by their code host number."""

    repository: str
    external_ids: tuple[str, ...]


@dataclass(frozen=True)
class Author:
    """The author of the commits a batch change creates."""

    name: str
    email: str


@dataclass(frozen=True)
class CommitTemplate:
    """The commit created from each workspace's changes."""

    message: str
    author: Author | None = None


@dataclass(frozen=True)
class PublishedRule:
    """Repositories whose name matches a glob get this published state."""

    glob: str
    state: PublishedState


@dataclass(frozen=True)
class Published:
    """Whether to publish changesets: one state for all, or the last matching glob rule."""

    default: PublishedState | None = None
    rules: tuple[PublishedRule, ...] = ()


@dataclass(frozen=True)
class ChangesetTemplate:
    """How each workspace's changes become a changeset (branch, commit, pull request)."""

    title: str
    branch: str
    commit: CommitTemplate
    body: str = ""
    published: Published | None = None


@dataclass(frozen=True)
class BatchSpec:
    """A parsed and validated batch spec."""

    name: str
    description: str = ""
    version: int = 1
    on: tuple[On, ...] = ()
    workspaces: tuple[WorkspaceConfig, ...] = ()
    steps: tuple[Step, ...] = ()
    transform_changes: TransformChanges | None = None
    import_changesets: tuple[ImportChangeset, ...] = ()
    changeset_template: ChangesetTemplate | None = None


class SpecError(ValueError):
    """One problem in a batch spec, at a field and a line and column of its file."""

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        line: int = 1,
        column: int = 1,
        source: str = "<spec>",
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}: "
        return where + (f"{self.path}: {self.message}" if self.path else self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Specs are parsed in worker processes: their errors travel back pickled.
        where = {"path": self.path, "line": self.line, "column": self.column}
        return (_spec_error, (self.message, where, self.source))


class SpecErrors(ValueError):
    """Every problem found in a batch spec, in file order."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line, e.column))
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors,))


def _spec_error(message: str, where: dict[str, Any], source: str) -> SpecError:
    return SpecError(message, source=source, **where)
