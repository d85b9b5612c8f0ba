"""Forms the pages post: URL-encoded, bounded in size and fields, parsed off the event loop."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from fastapi import HTTPException, Request

MAX_BYTES = 256 * 1024
MAX_FIELDS = 64
FORM_TYPE = "application/x-www-form-urlencoded"


def parse(body: bytes) -> dict[str, str]:
    """The fields of a URL-encoded body (the last value of a repeated name); ValueError when
    it is not UTF-8 or has too many fields."""
    text = body.decode("utf-8")
    pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    return dict(pairs)


async def read_form(request: Request, max_bytes: int = MAX_BYTES) -> dict[str, str]:
    """The posted form's fields; 415 for another content type, 413 over `max_bytes`, 400 for
    a body that cannot be read."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        raise HTTPException(415, f"a page's form is sent as {FORM_TYPE}, not {kind or 'nothing'}")
    body = await request.body()
    if len(body) > max_bytes:
        raise HTTPException(413, f"a form is at most {max_bytes // 1024} KiB")
    try:
        return await asyncio.to_thread(parse, body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, f"the form cannot be read: {exc}") from exc
