"""Named SQL blocks from sql/<dialect>.sql, filled in for one QueueSpec."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

from offload.db.url import Dialect
from offload.queue.spec import QueueSpec

_FILES: dict[Dialect, str] = {"postgresql": "postgres.sql", "sqlite": "sqlite.sql"}
_BLOCK = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def load(dialect: Dialect) -> dict[str, str]:
    """Every named statement of `dialect`, unformatted: the common ones, then the dialect's."""
    common = _blocks("common.sql")
    own = _blocks(_FILES[dialect])
    clash = set(common) & set(own)
    assert not clash, f"{_FILES[dialect]} redefines common statements {sorted(clash)}"
    return common | own


def _blocks(filename: str) -> dict[str, str]:
    text = files("offload.queue").joinpath("sql").joinpath(filename).read_text()
    parts = _BLOCK.split(text)
    blocks: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        blocks[name] = "\n".join(lines).rstrip().rstrip(";")
    return blocks


class Statements:
    """The statements of one queue in one dialect, formatted once."""

    def __init__(self, dialect: Dialect, spec: QueueSpec) -> None:
        columns = "".join(f", {c}" for c in spec.columns)
        values = "".join(f", :{c}" for c in spec.columns)
        scope = ""
        if spec.partition:
            # The name is checked to be [a-z0-9._-] (QueueSpec), so it can stand as a literal.
            columns += f", {spec.partition}"
            values += f", '{spec.name}'"
            scope = f" AND {spec.partition} = '{spec.name}'"
        self._dialect = dialect
        self._scope = scope
        self._fills = fills = {
            "{table}": spec.table,
            "{order_by}": spec.order_by,
            "{columns}": columns,
            "{values}": values,
            "{scope}": scope,
            "{dequeue_index}": spec.dequeue_index_name,
            "{started}": ":now",
        }
        self._sql: dict[str, str] = {}
        self._narrowed: dict[tuple[str, str], str] = {}
        for name, body in load(dialect).items():
            for placeholder, value in fills.items():
                body = body.replace(placeholder, value)
            self._sql[name] = body

    def __getitem__(self, name: str) -> str:
        return self._sql[name]

    def narrowed(self, name: str, condition: str) -> str:
        """Statement `name` over only the rows that also meet `condition` (trusted SQL over
        the queue's table, its values bound as parameters); a dequeue of this kind leaves
        `started_at` to the job's first log entry (see `started`)."""
        known = self._narrowed.get((name, condition))
        if known is not None:
            return known
        body = load(self._dialect)[name]
        fills = {**self._fills, "{scope}": f"{self._scope} AND ({condition})", "{started}": "NULL"}
        for placeholder, value in fills.items():
            body = body.replace(placeholder, value)
        self._narrowed[(name, condition)] = body
        return body
