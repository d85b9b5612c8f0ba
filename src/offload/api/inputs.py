"""What the API accepts as ids, names and text: the bounds that every route shares.

Every value a request carries reaches the database or a subprocess, so each has a type here
that refuses what neither can hold: ids past a 64-bit integer, NUL characters (PostgreSQL
text cannot store them), control characters in names, and unbounded lengths. A refused value
is a 422 that names its place, never a 500 from deeper down.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import Field

# The largest id a BIGINT column (and SQLite's INTEGER) holds.
ID_MAX = 2**63 - 1
# Free text: newlines and tabs are fine, NUL is not.
NO_NUL = r"^[^\x00]*$"
# Names: no control characters at all.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
# Tokens and keys sent in HTTP headers: visible ASCII, no spaces.
VISIBLE_ASCII = r"^[\x21-\x7e]+$"
# A user's, organization's, queue's or secret's name; a repository's or batch change's.
NAME_MAX = 64
LONG_NAME_MAX = 255

PATTERN_MEANINGS = {
    NO_NUL: "must not contain a NUL character",
    PRINTABLE: "must not contain control characters (NUL, newline, tab, ...)",
    VISIBLE_ASCII: "must be visible ASCII characters, without spaces",
}

# In bodies.
Text = Annotated[str, Field(pattern=NO_NUL)]
PlainName = Annotated[str, Field(pattern=PRINTABLE)]

# In paths.
IdPath = Annotated[int, Path(ge=1, le=ID_MAX)]
NamePath = Annotated[str, Path(max_length=NAME_MAX, pattern=PRINTABLE)]
LongNamePath = Annotated[str, Path(max_length=LONG_NAME_MAX, pattern=PRINTABLE)]

# In queries: a position in a list (ids are positive; 0 means from the start).
AfterQuery = Annotated[int, Query(ge=0, le=ID_MAX)]
BeforeQuery = Annotated[int | None, Query(ge=1, le=ID_MAX)]
NameQuery = Annotated[str | None, Query(max_length=NAME_MAX, pattern=PRINTABLE)]
LongNameQuery = Annotated[str | None, Query(max_length=LONG_NAME_MAX, pattern=PRINTABLE)]
