"""The body of POST /api/batches/specs, read with limits in a spec worker (off the event loop).

The body is JSON of up to MAX_SUBMISSION_BYTES: decoding it, checking its shape, decoding the
mounted files and parsing the spec are all done by read_submission() in one worker call.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from offload.api.inputs import PlainName, Text
from offload.batches.spec.limits import (
    MAX_DEPTH,
    MAX_FILES,
    MAX_FILES_BYTES,
    MAX_INTEGER_DIGITS,
    MAX_SPEC_CHARS,
    MAX_SUBMISSION_BYTES,
    MiB,
    check_text,
    forbidden_character,
)
from offload.batches.spec.model import BatchSpec, SpecErrors
from offload.batches.spec.reader import read


class SubmitSpec(BaseModel):
    """The body of POST /api/batches/specs."""

    model_config = ConfigDict(extra="forbid")

    spec: Text = Field(max_length=MAX_SPEC_CHARS)
    # Whose spec it is: the caller's own namespace by default, or an organization of theirs.
    namespace: PlainName = Field("", max_length=64)
    source: Text = Field("<spec>", max_length=4096)
    # The files and directories the steps mount, by path relative to the spec, base64.
    files: dict[str, str] = Field(default_factory=dict, max_length=MAX_FILES)
    # `offload batch preview --local`: the CLI runs the workspaces, not the executors.
    local: bool = False


class SubmissionError(ValueError):
    """A body that is not a submission: the HTTP status and the JSON `detail` to answer."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status = status
        self.detail = detail
        super().__init__(str(detail))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.detail))


@dataclass(frozen=True)
class Submission:
    """A submission's fields, its files decoded, and its spec (or what is wrong with it)."""

    text: str
    namespace: str
    source: str
    local: bool
    files: dict[str, bytes] = field(default_factory=dict)
    spec: BatchSpec | None = None
    errors: SpecErrors | None = None


def read_submission(body: bytes) -> Submission:
    """The submission in a request body; SubmissionError if the body is not one."""
    if len(body) > MAX_SUBMISSION_BYTES:
        raise SubmissionError(413, _too_large(len(body)))
    data = _json(body)
    if not isinstance(data, dict):
        raise SubmissionError(422, 'the body must be a JSON object: {"spec": "name: ..."}')
    text = data.get("spec")
    if isinstance(text, str) and len(text) > MAX_SPEC_CHARS:
        # Answered as parse_spec answers it (SpecLimitExceeded, 413), whoever sends it.
        check_text(text, "spec")
    try:
        body_model = SubmitSpec.model_validate(data)
    except ValidationError as exc:
        # As FastAPI reports a body it validated (the route words them with api.errors).
        errors = exc.errors(include_url=False, include_input=False)
        raise SubmissionError(422, [{**e, "loc": ["body", *e["loc"]]} for e in errors]) from None
    _check_names(body_model)
    decoded = {}
    for path, content in body_model.files.items():
        try:
            decoded[path] = base64.b64decode(content, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise SubmissionError(400, f"files[{path!r}]: not base64: {exc}") from None
    if sum(len(content) for content in decoded.values()) > MAX_FILES_BYTES:
        raise SubmissionError(
            413,
            f"files: the mounted files are larger than {MAX_FILES_BYTES // MiB} MiB, the limit "
            "(MAX_FILES_BYTES)",
        )
    submission = Submission(
        text=body_model.spec,
        namespace=body_model.namespace,
        source=body_model.source,
        local=body_model.local,
        files=decoded,
    )
    try:
        spec = read(body_model.spec, source=body_model.source)
    except SpecErrors as exc:
        return dataclasses.replace(submission, errors=exc)
    return dataclasses.replace(submission, spec=spec)


def _json(body: bytes) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubmissionError(
            400,
            f"the body is not UTF-8 text (byte 0x{body[exc.start]:02x} at offset {exc.start}); "
            "send the submission as JSON",
        ) from None
    try:
        return json.loads(text, parse_int=_integer)
    except json.JSONDecodeError as exc:
        message = f"the body is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise SubmissionError(400, message) from None
    except RecursionError:
        message = f"the body nests deeper than {MAX_DEPTH} levels, the limit (MAX_DEPTH)"
        raise SubmissionError(422, message) from None
    except _TooManyDigits as exc:
        raise SubmissionError(422, str(exc)) from None


class _TooManyDigits(ValueError):
    pass


def _integer(digits: str) -> int:
    # Python reads an integer in time quadratic in its digits: refuse long ones unread.
    if len(digits) > MAX_INTEGER_DIGITS:
        raise _TooManyDigits(
            f"the body holds an integer of {len(digits):,} digits; the limit is "
            f"{MAX_INTEGER_DIGITS} (MAX_INTEGER_DIGITS)"
        )
    return int(digits)


def _check_names(body: SubmitSpec) -> None:
    """Names go to the database and into messages: no control characters in them."""
    named = [("namespace", body.namespace), ("source", body.source)]
    named += [(f"files[{path!r}]", path) for path in body.files]
    for where, value in named:
        found = forbidden_character(value)
        if found is not None:
            raise SubmissionError(
                422, f"{where}: control character U+{ord(found):04X} is not allowed in a name"
            )


def _too_large(size: int) -> str:
    return (
        f"the body is {size:,} bytes; the limit is {MAX_SUBMISSION_BYTES // MiB} MiB "
        "(MAX_SUBMISSION_BYTES)"
    )
