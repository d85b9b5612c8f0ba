"""Code navigation: definitions, references and hover text at a position of a commit.

A position is answered from the completed uploads of the repository at that commit whose
root holds the path; failing those, from the nearest of its `ANCESTORS` first-parent
ancestors that has one, with the position carried to the older file through `git diff -U0`
and every answer carried back (positions.py): a position or an answer on a line that changed
is dropped, never guessed. Symbols missing from the repository's own uploads (an external
package's) are looked up in the uploads that define their package; references also come from
other repositories' uploads that use the package. Local symbols stay in their document.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from offload.codeintel.documents import StoredDocument, decode_document, occurrence_at
from offload.codeintel.events import ResultKind, UsageEvents
from offload.codeintel.positions import LineMap, parse_hunks
from offload.codeintel.ranges import Range
from offload.codeintel.scip.model import Occurrence, is_definition
from offload.codeintel.scip.symbol import SymbolError, parse_symbol
from offload.codeintel.store import CodeintelStore, UploadRow
from offload.db.base import Database
from offload.repos.mirror import Mirrors, run_git

# First-parent ancestors searched for an index when the commit has none.
ANCESTORS = 50
# Locations in one answer; more are cut, and the answer says `truncated`.
MAX_LOCATIONS = 1_000
# Files of a symbol read first (then twice as many each time): a popular symbol's first
# pages usually fill an answer.
RANGES_PAGE = 100
# Other repositories' uploads searched for references to a package.
MAX_PACKAGE_UPLOADS = 20
# Decoded documents kept: a reader clicking through one file decodes it once.
CACHED_DOCUMENTS = 64
# Payloads smaller than this are decoded on the event loop: the thread hop costs more.
_INLINE_DECODE = 64 * 1024

Kind = Literal["definitions", "references", "hover"]


@dataclass(frozen=True)
class Location:
    """A range of a file of a repository's commit."""

    repo: str
    commit: str
    path: str
    range: Range


@dataclass(frozen=True)
class Answer:
    """What a navigation request found, and from which upload; `reason` when nothing."""

    repo: str
    commit: str
    path: str
    line: int
    character: int
    upload: UploadRow | None = None
    adjusted: bool = False
    locations: tuple[Location, ...] = ()
    truncated: bool = False
    contents: str | None = None  # hover only: the symbol's documentation, markdown
    range: Range | None = None  # hover only: the occurrence hovered
    reason: str | None = None


@dataclass
class _Anchor:
    """The occurrence a request points at, in the upload(s) that answer it."""

    commit: str  # the commit asked about
    indexed: str  # the commit of the uploads (an ancestor when adjusted)
    uploads: list[UploadRow]  # every completed upload of the repository at `indexed`
    upload: UploadRow  # the one whose document holds the path
    document: StoredDocument
    occurrence: Occurrence
    maps: dict[str, LineMap] = field(default_factory=dict)


class Navigator:
    """Answers definitions, references and hover from processed uploads."""

    def __init__(
        self,
        db: Database,
        mirrors: Mirrors,
        store: CodeintelStore | None = None,
        events: UsageEvents | None = None,
        *,
        cached_documents: int = CACHED_DOCUMENTS,
    ) -> None:
        self.db = db
        self.mirrors = mirrors
        self.store = store or CodeintelStore(db)
        self.events = events or UsageEvents(db)
        self.cached_documents = cached_documents
        self._documents: OrderedDict[int, StoredDocument] = OrderedDict()

    async def definitions(
        self, repo: str, commit: str, path: str, line: int, character: int
    ) -> Answer:
        """Where the symbol at the position is defined (`commit` is a full commit id)."""
        return await self._answer("definitions", repo, commit, path, line, character)

    async def references(
        self, repo: str, commit: str, path: str, line: int, character: int
    ) -> Answer:
        """Where the symbol at the position is defined and referenced."""
        return await self._answer("references", repo, commit, path, line, character)

    async def hover(self, repo: str, commit: str, path: str, line: int, character: int) -> Answer:
        """The documentation of the symbol at the position."""
        return await self._answer("hover", repo, commit, path, line, character)

    # -- one request ------------------------------------------------------------------------

    async def _answer(
        self, kind: Kind, repo: str, commit: str, path: str, line: int, character: int
    ) -> Answer:
        asked = Answer(repo, commit, path, line, character)
        anchor = await self._anchor(asked)
        if isinstance(anchor, Answer):
            return anchor
        base = Answer(
            repo,
            commit,
            path,
            line,
            character,
            upload=anchor.upload,
            adjusted=anchor.indexed != commit,
        )
        occurrence = anchor.occurrence
        if kind == "hover":
            contents = await self._hover_text(anchor)
            where = await self._carry(anchor, path, occurrence[:4])
            if contents is None:
                return _with(base, reason="the symbol here has no documentation in the index")
            await self.events.record(repo, ResultKind.PRECISE)
            return _with(base, contents=contents, range=where)
        found = await self._locations(anchor, path, references=kind == "references")
        locations = sorted(
            set(found), key=lambda loc: (loc.repo != repo, loc.repo, loc.path, loc.range)
        )
        truncated = len(locations) > MAX_LOCATIONS
        if not locations:
            return _with(base, reason=f"the index has no {kind} of {occurrence.symbol}")
        await self.events.record(repo, ResultKind.PRECISE)
        return _with(base, locations=tuple(locations[:MAX_LOCATIONS]), truncated=truncated)

    async def _anchor(self, asked: Answer) -> _Anchor | Answer:
        """The uploads and the occurrence at the asked position, or an Answer saying why none."""
        repo, commit, path = asked.repo, asked.commit, asked.path
        indexed, uploads = commit, await self.store.upload_for(repo, commit)
        if not _covering(uploads, path):
            found = await self._nearest_indexed(repo, commit, path)
            if found is None:
                return _with(
                    asked,
                    reason=f"no index for this commit or its {ANCESTORS} nearest ancestors",
                )
            indexed, uploads = found
        anchor_doc = await self._document_of(_covering(uploads, path), path)
        if anchor_doc is None:
            return _with(asked, reason=f"the index of commit {indexed[:12]} does not hold {path}")
        upload, document = anchor_doc
        anchor = _Anchor(commit, indexed, uploads, upload, document, _NOWHERE)
        line = asked.line
        if indexed != commit:
            old = (await self._map(anchor, path)).to_old(line)
            if old is None:
                return _with(
                    asked,
                    upload=upload,
                    adjusted=True,
                    reason=f"this line changed since the indexed commit {indexed[:12]}",
                )
            line = old
        occurrence = occurrence_at(document, line, asked.character)
        if occurrence is None:
            return _with(
                asked,
                upload=upload,
                adjusted=indexed != commit,
                reason=f"no symbol at this position in the index of commit {indexed[:12]}",
            )
        anchor.occurrence = occurrence
        return anchor

    async def _nearest_indexed(
        self, repo: str, commit: str, path: str
    ) -> tuple[str, list[UploadRow]] | None:
        """The nearest first-parent ancestor with an upload holding `path`, and its uploads."""
        listing = await run_git(
            ["rev-list", "--first-parent", "-n", str(ANCESTORS + 1), commit, "--"],
            cwd=self.mirrors.existing(repo),
        )
        ancestors = [c for c in listing.split() if c != commit]
        if not ancestors:
            return None
        params = {f"c{n}": c for n, c in enumerate(ancestors)}
        rows = await self.db.fetch(
            "SELECT * FROM codeintel_uploads WHERE repo_name = :repo AND state = 'completed' "
            f"AND commit_sha IN ({', '.join(':' + k for k in params)}) "
            "ORDER BY root, indexer, id DESC",
            {"repo": repo, **params},
        )
        by_commit: dict[str, list[UploadRow]] = {}
        for row in rows:
            by_commit.setdefault(row["commit_sha"], []).append(UploadRow.from_row(row))
        for ancestor in ancestors:
            uploads = by_commit.get(ancestor, [])
            if _covering(uploads, path):
                return ancestor, uploads
        return None

    # -- answers ----------------------------------------------------------------------------

    async def _locations(self, anchor: _Anchor, path: str, *, references: bool) -> list[Location]:
        symbol = anchor.occurrence.symbol
        repo = anchor.upload.repo_name
        if symbol.startswith("local "):
            return [
                loc
                for o in anchor.document.occurrences
                if o.symbol == symbol and (references or is_definition(o.roles))
                for loc in [await self._located(anchor, path, o[:4])]
                if loc is not None
            ]
        own = [u.id for u in anchor.uploads]
        out: list[Location] = []
        # Answers stop past MAX_LOCATIONS: files are read a page at a time, and a page's ranges
        # are decoded only as far as the answer needs them.
        same = anchor.indexed == anchor.commit
        after: tuple[str, int] | None = None
        size = RANGES_PAGE
        while len(out) <= MAX_LOCATIONS:
            page = await self.store.symbol_ranges(
                own, symbol, definitions_only=not references, limit=size, after=after
            )
            for ranges in page:
                wanted = ranges.definitions + (ranges.references if references else ())
                if same:  # nothing to carry through a diff
                    out.extend(Location(repo, anchor.commit, ranges.path, w) for w in wanted)
                else:
                    for where in wanted:
                        loc = await self._located(anchor, ranges.path, where)
                        if loc is not None:
                            out.append(loc)
                if len(out) > MAX_LOCATIONS:
                    return out
            if len(page) < size:
                break
            after = (page[-1].path, page[-1].upload_id)
            # Files that hold few places each: larger pages, so a symbol spread over
            # thousands of files takes a few round trips, not ten.
            size *= 2
        if references:
            others = await self._package_uploads(symbol, exclude_repo=repo, defining=False)
        elif not out:
            others = await self._package_uploads(symbol, exclude_repo=repo, defining=True)
        else:
            others = []
        by_id = {u.id: u for u in others}
        elsewhere = await self.store.symbol_ranges(
            list(by_id), symbol, definitions_only=not references, limit=MAX_LOCATIONS + 1
        )
        for ranges in elsewhere:
            other = by_id[ranges.upload_id]
            wanted = ranges.definitions + (ranges.references if references else ())
            out.extend(Location(other.repo_name, other.commit_sha, ranges.path, w) for w in wanted)
            if len(out) > MAX_LOCATIONS:
                break
        return out

    async def _package_uploads(
        self, symbol: str, *, exclude_repo: str, defining: bool
    ) -> list[UploadRow]:
        """Other repositories' newest completed uploads defining (or, with defining=False,
        defining or using) the symbol's package: one per repository, root and indexer."""
        try:
            parsed = parse_symbol(symbol)
        except SymbolError:
            return []
        if not parsed.package:
            return []
        rows = await self.db.fetch(
            "SELECT u.* FROM codeintel_packages p JOIN codeintel_uploads u ON u.id = p.upload_id "
            "WHERE p.scheme = :scheme AND p.manager = :manager AND p.name = :name AND "
            "p.version = :version AND u.state = 'completed' AND u.repo_name <> :repo"
            + (" AND p.defines = :defines" if defining else "")
            + " ORDER BY u.id DESC LIMIT :limit",
            {
                "scheme": parsed.scheme,
                "manager": parsed.manager,
                "name": parsed.package,
                "version": parsed.version,
                "repo": exclude_repo,
                "defines": True,
                # Older uploads of the same projects are skipped below; read a few more.
                "limit": MAX_PACKAGE_UPLOADS * 5,
            },
        )
        chosen: dict[tuple[str, str, str], UploadRow] = {}
        for row in rows:
            upload = UploadRow.from_row(row)
            key = (upload.repo_name, upload.root, upload.indexer)
            if key not in chosen and len(chosen) < MAX_PACKAGE_UPLOADS:
                chosen[key] = upload
        return list(chosen.values())

    async def _hover_text(self, anchor: _Anchor) -> str | None:
        """The symbol's documentation: from this document, else from where it is defined."""
        symbol = anchor.occurrence.symbol
        docs = anchor.document.hover.get(symbol)
        if not docs and not symbol.startswith("local "):
            own = [u.id for u in anchor.uploads]
            places = await self.store.symbol_ranges(own, symbol, definitions_only=True, limit=3)
            if not places:
                others = await self._package_uploads(
                    symbol, exclude_repo=anchor.upload.repo_name, defining=True
                )
                places = await self.store.symbol_ranges(
                    [u.id for u in others], symbol, definitions_only=True, limit=3
                )
            for place in places[:3]:
                found = await self._document_in(place.upload_id, place.path)
                if found is not None and found.hover.get(symbol):
                    docs = found.hover[symbol]
                    break
        return "\n\n".join(docs) if docs else None

    # -- positions --------------------------------------------------------------------------

    async def _located(self, anchor: _Anchor, path: str, where: Range) -> Location | None:
        """A range of the indexed commit as a Location of the asked commit (None: changed)."""
        carried = await self._carry(anchor, path, where)
        if carried is None:
            return None
        return Location(anchor.upload.repo_name, anchor.commit, path, carried)

    async def _carry(self, anchor: _Anchor, path: str, where: Range) -> Range | None:
        if anchor.indexed == anchor.commit:
            return where
        return (await self._map(anchor, path)).range_to_new(where)

    async def _map(self, anchor: _Anchor, path: str) -> LineMap:
        """The line map of `path` from the indexed commit to the asked one, once a request."""
        if path not in anchor.maps:
            diff = await run_git(
                [
                    "diff",
                    "-U0",
                    "--no-color",
                    "--no-ext-diff",
                    "--no-renames",
                    anchor.indexed,
                    anchor.commit,
                    "--",
                    path,
                ],
                cwd=self.mirrors.existing(anchor.upload.repo_name),
            )
            anchor.maps[path] = LineMap(parse_hunks(diff))
        return anchor.maps[path]

    # -- documents --------------------------------------------------------------------------

    async def _document_of(
        self, uploads: Sequence[UploadRow], path: str
    ) -> tuple[UploadRow, StoredDocument] | None:
        """The first of `uploads` (deepest root first) holding `path`, and its document."""
        for upload in uploads:
            document = await self._document_in(upload.id, path)
            if document is not None:
                return upload, document
        return None

    async def _document_in(self, upload_id: int, path: str) -> StoredDocument | None:
        rows = await self.db.fetch(
            "SELECT document_id FROM codeintel_upload_documents WHERE upload_id = :upload AND "
            "path = :path",
            {"upload": upload_id, "path": path},
        )
        if not rows:
            return None
        document_id = int(rows[0]["document_id"])
        cached = self._documents.get(document_id)
        if cached is not None:
            self._documents.move_to_end(document_id)
            return cached
        payload = await self.db.fetch(
            "SELECT payload FROM codeintel_documents WHERE id = :id", {"id": document_id}
        )
        if not payload:
            return None  # replaced between the two reads
        data = bytes(payload[0]["payload"])
        if len(data) < _INLINE_DECODE:
            document = decode_document(data)
        else:
            document = await asyncio.to_thread(decode_document, data)
        self._documents[document_id] = document
        while len(self._documents) > self.cached_documents:
            self._documents.popitem(last=False)
        return document


_NOWHERE = Occurrence(0, 0, 0, 0, "", 0)


def _covering(uploads: Iterable[UploadRow], path: str) -> list[UploadRow]:
    """The uploads whose root holds `path`, deepest root first."""
    held = [u for u in uploads if _holds(u.root, path)]
    return sorted(held, key=lambda u: -len(u.root.strip("/")))


def _holds(root: str, path: str) -> bool:
    root = root.strip("/")
    return not root or root == "." or path.startswith(root + "/")


def _with(answer: Answer, **changes: Any) -> Answer:
    return replace(answer, **changes)
