"""The API's error answers: one body for every 4xx, described once, named by each route.

A route lists the errors it can give with `responses=documented(...)`, so that the OpenAPI
document says every status a client may see (the hostile test suite fuzzes the API and fails
on any status the document does not list).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from offload.api.inputs import PATTERN_MEANINGS


class Problem(BaseModel):
    """One thing wrong with a request: where (`loc`, e.g. body.username), what, and its kind."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """A 4xx answer: a sentence saying what was wrong and what to do (some add fields)."""

    model_config = ConfigDict(extra="allow")

    detail: str


class ProtocolError(BaseModel):
    """A 4xx of the executor protocol: `error` (its own answers) or `detail` (the server's)."""

    model_config = ConfigDict(extra="allow")

    error: str | None = None
    detail: str | None = None


class InvalidBody(BaseModel):
    """A 422 answer: each problem with the parameters or the body (or one sentence)."""

    detail: list[Problem] | str


MEANINGS: dict[int, str] = {
    400: "The request is malformed: its body is not readable JSON, or a value is impossible",
    401: "No credential, or one that is unknown, expired or revoked",
    403: "The caller may not do this",
    404: "Not found, or not visible to the caller",
    409: "The request conflicts with the current state",
    413: "The request body is larger than the server accepts",
    422: "A parameter or the body is invalid; each problem names its place",
    429: "Too many attempts; the Retry-After header says when to try again",
    503: "The server cannot do this now (a part it needs failed); the detail says which",
}

# What every route that reads a JSON body may answer besides its own errors.
BODY = (400, 413, 422)


def documented(*codes: int, protocol: bool = False) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that may answer `codes`; `protocol`: an executor protocol
    route (its 400s for an invalid body are text, its own errors say `error`)."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model = ProtocolError if protocol else InvalidBody if code == 422 else ErrorBody
        responses[code] = {"model": model, "description": MEANINGS[code]}
        if code == 400 and protocol:
            responses[code]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    return responses


def text_answer(code: int, description: str) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry of a route that answers `code` with plain text (its errors stay
    JSON: give the route `response_class=Response`)."""
    return {
        code: {
            "description": description,
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    }


def problems(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic's validation errors as JSON, without the input they refused (which may be
    large, or bytes, and was the caller's anyway)."""
    out = []
    for error in errors:
        message = str(error.get("msg", "invalid"))
        context = error.get("ctx") or {}
        if error.get("type") == "string_pattern_mismatch":
            message = PATTERN_MEANINGS.get(str(context.get("pattern")), message)
        elif error.get("type") == "json_invalid" and context.get("error"):
            message = f"the body is not valid JSON: {context['error']}"
        where = [p if isinstance(p, int) else str(p) for p in error.get("loc", ())]
        out.append({"loc": where, "msg": message, "type": str(error.get("type", "invalid"))})
    return out


def unreadable_body(cause: BaseException | None) -> str:
    """What was wrong with a body that FastAPI could not parse (it says only that it could not)."""
    if isinstance(cause, UnicodeDecodeError):
        return f"the body is not UTF-8 (byte {cause.start}: {cause.reason}); send JSON in UTF-8"
    if isinstance(cause, RecursionError):
        return "the JSON body is nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return f"the JSON body has an integer of more than {sys.get_int_max_str_digits()} digits"
    if isinstance(cause, ValueError):
        return f"the body is not valid JSON: {cause}"
    return "the body cannot be read as JSON"
