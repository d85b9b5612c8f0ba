"""A batch spec submitted with a search query offload cannot run is refused with its place.

The spec workers that parse submissions check `on.repositoriesMatchingQuery` as
`offload batch validate` does, so the API answers 400 with the line and column in the file.
"""

from __future__ import annotations

from pathlib import Path

from access_site import served

from offload.db.base import Database
from offload.db.url import DatabaseURL

SPEC = """\
name: {name}
on:
  - repository: demo
  - repositoriesMatchingQuery: {query}
steps:
  - run: "true"
    container: busybox
changesetTemplate:
  title: t
  branch: b
  commit:
    message: m
"""


async def test_a_submitted_query_is_checked_with_its_line_and_column(
    db: Database, db_url: DatabaseURL, tmp_path: Path
) -> None:
    async with served(db, db_url, tmp_path) as site:
        bad = SPEC.format(name="bad", query="'lang:HCL aws_vpc patternType:structural'")
        refused = await site.call(
            "owner", "POST", "/api/batches/specs", json={"spec": bad, "source": "bad.yaml"}
        )
        assert refused.status_code == 400, refused.text
        (error,) = refused.json()["errors"]
        assert error["path"] == "on[1].repositoriesMatchingQuery"
        column = bad.splitlines()[3].index("structural") + 1
        assert (error["line"], error["column"]) == (4, column)
        assert "patterntype:structural" in error["message"]
        assert "patterntype:regexp" in error["message"]

        good = SPEC.format(name="good", query="lang:HCL aws_vpc OR repo:has.path(\\.tf$)")
        made = await site.call("owner", "POST", "/api/batches/specs", json={"spec": good})
        assert made.status_code == 201, made.text
