"""What `offload batch preview` prints after its table, and `--diff`'s changesets."""

from __future__ import annotations

import base64
from typing import Any

from offload.batches.preview import changeset_text, failure_lines, next_step

DIFF = b"diff --git a a\n--- a\n+++ a\n@@ -1 +1 @@\n-caf\xe9\n+\x1b]0;pwned\x07tea\n"
OPERATION = {"repo": "r", "branch": "batch/x", "actions": ["create"], "specId": 1}
CHANGESET: dict[str, Any] = {
    "kind": "branch",
    "title": "T\x1b[2J",
    "body": "line one\n\nline three",
    "commitMessage": "msg",
    "baseRef": "main",
    "baseRev": "0123456789abcdef",
    "author": {"name": "A", "email": "a@example.com"},
    "diff": DIFF.decode("utf-8", errors="replace"),
    "diffBase64": base64.b64encode(DIFF).decode(),
}


def view(**given: Any) -> dict[str, Any]:
    return {"id": "abc", "name": "fix it", "workspaces": 3, "states": {}, "operations": []} | given


def test_a_pipe_gets_the_exact_diff_bytes_and_a_terminal_no_control_characters() -> None:
    piped = b"".join(changeset_text([OPERATION], {1: CHANGESET}, terminal=False, color=False))
    assert piped.endswith(b"body:\n    line one\n    \n    line three\n\n" + DIFF)
    shown = b"".join(changeset_text([OPERATION], {1: CHANGESET}, terminal=True, color=True))
    text = shown.decode()
    assert "\x07" not in text and "\x1b]" not in text and "\x1b[2J" not in text
    assert "title:  T\\x1b[2J\n" in text
    assert "\x1b[32m+\\x1b]0;pwned\\x07tea\x1b[m\n" in text
    assert "\x1b[31m-caf\ufffd\x1b[m\n" in text and "\x1b[36m@@ -1 +1 @@\x1b[m\n" in text


def test_failures_name_the_exact_commands_and_no_apply_without_changesets() -> None:
    failed = view(states={"completed": 1, "failed": 1, "canceled": 1})
    assert failure_lines(failed, "acme", local=False, spec_file="-") == [
        "2 of 3 workspaces did not finish (1 failed, 1 canceled); "
        "they have no changesets in this preview",
        "  see why:        offload batch logs 'fix it' --namespace acme --spec abc",
        "  run them again: offload batch retry 'fix it' --namespace acme --spec abc",
    ]
    assert failure_lines(view(states={"completed": 3}), None, local=False, spec_file="-") == []
    assert next_step(failed) == "nothing to apply: the workspaces that finished changed nothing"
    assert next_step(view(states={"failed": 3})) == "nothing to apply: every workspace failed"
    assert next_step(view(workspaces=0)).startswith("nothing to apply: the spec matched no")
    unchanged = view(states={"cached": 3}, operations=[{"actions": ["none"]}])
    assert (
        next_step(unchanged) == "nothing to apply: every changeset is as batch change fix it has it"
    )
    assert next_step(view(operations=[{"actions": ["create"]}])) == (
        "apply it with: offload batch apply --spec abc"
    )
