"""Changeset specs: what one workspace's changes become, as Sourcegraph's BuildChangesetSpecs does.

The changeset template is rendered against the context Sourcegraph gives it (repository,
batch_change, outputs, steps), and transformChanges.group may split a workspace's diff into
several changesets, one per branch. References below are to sourcegraph/sourcegraph's lib/batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from offload.batches import diffs
from offload.batches.diffs import ChangedFiles, DiffError, FileDiff
from offload.batches.spec.model import (
    Author,
    BatchSpec,
    ChangesetTemplate,
    GroupTransform,
    Published,
    PublishedState,
)
from offload.batches.template.engine import PathList, TemplateError, parse
from offload.batches.template.funcs import FUNCTIONS

_HEADS = "refs/heads/"
# Go's unicode.IsSpace, which strings.TrimSpace uses; str.strip() also strips \x1c-\x1f.
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    + "".join(map(chr, range(0x2000, 0x200B)))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_REF_FORBIDDEN = frozenset(" ~^:?*[\\\x7f") | frozenset(chr(c) for c in range(32))


class ChangesetSpecError(ValueError):
    """A workspace's changes cannot become changesets: a template or a branch is wrong."""


@dataclass(frozen=True)
class WorkspaceResult:
    """What the steps left in one workspace: its diff, outputs and the files they changed."""

    repo_name: str
    base_ref: str
    base_rev: str
    path: str
    diff: bytes
    outputs: Mapping[str, Any]
    changed: ChangedFiles
    search_result_paths: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChangesetDraft:
    """One changeset to create: where it goes, its commit and pull request text, its diff."""

    repo_name: str
    base_ref: str
    base_rev: str
    head_ref: str
    title: str
    body: str
    commit_message: str
    author_name: str
    author_email: str
    published: PublishedState | None
    diff: bytes
    diff_added: int
    diff_deleted: int


@dataclass(frozen=True)
class ImportDraft:
    """An existing pull request to track, by repository and code host id."""

    repo_name: str
    external_id: str


def build_changesets(
    spec: BatchSpec, result: WorkspaceResult, *, default_author: Author
) -> list[ChangesetDraft]:
    """The changesets a workspace's result becomes; none for an empty diff."""
    if not result.diff:
        return []
    repo = result.repo_name
    template = spec.changeset_template
    if template is None:
        raise ChangesetSpecError(
            f"repository {repo}: the steps changed files but the batch spec has no "
            "changesetTemplate to make a changeset of them; add one"
        )
    try:
        files = diffs.parse_diff(result.diff)
    except DiffError as exc:
        raise ChangesetSpecError(f"repository {repo}: the steps' diff is unusable: {exc}") from exc
    text = _Texts.render(template, template_context(spec, result), repo, default_author)
    default_branch = _branch(text.branch, repo, "changesetTemplate.branch")

    groups = groups_for(spec, repo)
    by_branch: dict[str, list[FileDiff]] = {default_branch: []}
    for group in groups:
        branch = _branch(group.branch, repo, "transformChanges.group.branch")
        if branch in by_branch:
            raise ChangesetSpecError(
                f"repository {repo}: transformChanges.group would give two changesets the "
                f"same branch {branch!r}; give each group its own branch, different from "
                "changesetTemplate.branch"
            )
        by_branch[branch] = []
    for f in files:
        owner = _group_of(f.path, groups)
        by_branch[default_branch if owner is None else _strip_heads(owner.branch)].append(f)

    drafts = []
    for branch, branch_files in by_branch.items():
        if not branch_files:
            continue
        # One changeset with no groups keeps the diff as it came, byte for byte.
        diff = result.diff if not groups else diffs.join_diff(branch_files)
        counts = diffs.stat(branch_files)
        drafts.append(
            ChangesetDraft(
                repo_name=repo,
                base_ref=_strip_heads(result.base_ref),
                base_rev=result.base_rev,
                head_ref=branch,
                title=text.title,
                body=text.body,
                commit_message=text.message,
                author_name=text.author.name,
                author_email=text.author.email,
                published=published_for(template.published, repo, branch),
                diff=diff,
                diff_added=counts.added,
                diff_deleted=counts.deleted,
            )
        )
    return drafts


def template_context(spec: BatchSpec, result: WorkspaceResult) -> dict[str, Any]:
    """The data changeset template fields render against (template.ChangesetTemplateContext)."""
    return {
        "repository": {
            "name": result.repo_name,
            "branch": _strip_heads(result.base_ref),
            # Sourcegraph keeps file matches in a set and lists them sorted.
            "search_result_paths": PathList(sorted(set(result.search_result_paths))),
        },
        "batch_change": {"name": spec.name, "description": spec.description},
        "outputs": dict(result.outputs),
        "steps": {
            "modified_files": list(result.changed.modified),
            "added_files": list(result.changed.added),
            "deleted_files": list(result.changed.deleted),
            "renamed_files": list(result.changed.renamed),
            "path": result.path,
        },
    }


def published_for(
    published: Published | None, repo_name: str, branch: str
) -> PublishedState | None:
    """The published state of a changeset on this repository and branch; None if unset.

    As overridable.rules.MatchWithSuffix: the last rule whose glob matches the repository name
    wins, and a glob may end in `@branch` to match only changesets on that branch.
    """
    if published is None:
        return None
    if not published.rules:
        return published.default
    for rule in reversed(published.rules):
        pattern, _, suffix = rule.glob.partition("@")
        if suffix and suffix != branch:
            continue
        try:
            matched = FUNCTIONS["matches"].call(repo_name, pattern)
        except ValueError as exc:
            raise ChangesetSpecError(
                f"repository {repo_name}: changesetTemplate.published: {exc}"
            ) from exc
        if matched:
            return rule.state
    return published.default


def groups_for(spec: BatchSpec, repo_name: str) -> tuple[GroupTransform, ...]:
    """The transformChanges groups that apply to a repository: its own and those for all."""
    if spec.transform_changes is None:
        return ()
    return tuple(g for g in spec.transform_changes.group if g.repository in (None, "", repo_name))


def branch_problem(name: str) -> str | None:
    """Why a name is not a valid git branch name (git check-ref-format --branch), if it is not."""
    if not name:
        return "it is empty"
    if name.startswith("-"):
        return 'it starts with "-"'
    if name in ("@", "HEAD"):
        # git refuses a branch HEAD; it allows "@", but reads it as HEAD nearly everywhere.
        return f"git reads {name!r} as HEAD"
    bad = sorted({c for c in name if c in _REF_FORBIDDEN})
    if bad:
        return "it contains " + ", ".join(repr(c) for c in bad)
    for needle in ("..", "@{", "//"):
        if needle in name:
            return f"it contains {needle!r}"
    if name.startswith("/") or name.endswith("/"):
        return 'it starts or ends with "/"'
    if name.endswith("."):
        return 'it ends with "."'
    for component in name.split("/"):
        if component.startswith("."):
            return f'its part {component!r} starts with "."'
        if component.endswith(".lock"):
            return f'its part {component!r} ends with ".lock"'
    return None


def import_drafts(spec: BatchSpec) -> list[ImportDraft]:
    """The pull requests importChangesets asks to track, each once, in spec order."""
    seen: dict[tuple[str, str], ImportDraft] = {}
    for item in spec.import_changesets:
        for external_id in item.external_ids:
            key = (item.repository, str(external_id))
            seen.setdefault(key, ImportDraft(repo_name=key[0], external_id=key[1]))
    return list(seen.values())


@dataclass(frozen=True)
class _Texts:
    """The rendered, trimmed fields of a changeset template for one repository."""

    title: str
    body: str
    branch: str
    message: str
    author: Author

    @classmethod
    def render(
        cls, template: ChangesetTemplate, data: Mapping[str, Any], repo: str, default: Author
    ) -> _Texts:
        def field(name: str, text: str) -> str:
            try:
                rendered = parse(text, name=name).render(data)
            except TemplateError as exc:
                raise ChangesetSpecError(f"repository {repo}: {exc}") from exc
            # RenderChangesetTemplateField trims every field, author ones included.
            return rendered.strip(_GO_SPACE)

        author = template.commit.author
        return cls(
            title=field("changesetTemplate.title", template.title),
            body=field("changesetTemplate.body", template.body),
            branch=field("changesetTemplate.branch", template.branch),
            message=field("changesetTemplate.commit.message", template.commit.message),
            author=default
            if author is None
            else Author(
                name=field("changesetTemplate.commit.author.name", author.name),
                email=field("changesetTemplate.commit.author.email", author.email),
            ),
        )


def _group_of(path: str, groups: tuple[GroupTransform, ...]) -> GroupTransform | None:
    # Follows groupFileDiffs in changeset_specs.go: a file belongs to a group when the group's
    # directory occurs anywhere in its path (strings.Contains, not a prefix test), and the
    # last matching group in spec order wins, so nested directories go to whichever is listed
    # later. An empty directory matches nothing.
    found = None
    for group in groups:
        if group.directory and group.directory in path:
            found = group
    return found


def _strip_heads(ref: str) -> str:
    return ref[len(_HEADS) :] if ref.startswith(_HEADS) else ref


def _branch(name: str, repo: str, field: str) -> str:
    """A branch name from the spec as a plain branch name; ChangesetSpecError if invalid."""
    branch = _strip_heads(name)
    problem = branch_problem(branch)
    if problem:
        raise ChangesetSpecError(
            f"repository {repo}: {field} gives the branch {name!r}, which git rejects: "
            f"{problem}; change the template so that it renders a valid branch name"
        )
    return branch
