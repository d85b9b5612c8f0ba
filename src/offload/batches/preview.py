"""How `offload batch preview` shows a finished preview: what to do next, and the changesets
with their rendered title, body and diff (`--diff`), colored on a terminal and paged.

Diffs are written as the bytes git wrote (a file need not be UTF-8), so that what a pipe
receives is exactly the diff that apply will push.
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The workspace states that leave a workspace without its changesets.
FAILED_STATES = ("failed", "errored", "canceled")

# The styles of a diff's lines on a terminal, as `git diff --color` has them.
_RESET = "\x1b[m"
_STYLES = (
    ("diff --git ", "\x1b[1m"),
    ("+++ ", "\x1b[1m"),
    ("--- ", "\x1b[1m"),
    ("@@", "\x1b[36m"),
    ("+", "\x1b[32m"),
    ("-", "\x1b[31m"),
)
_HEADER = "\x1b[1;33m"
# Control characters besides tab and newline: a step's output (in a body or a diff) could
# otherwise move the cursor, retitle the window or hide text on the user's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def failed_count(states: Mapping[str, int]) -> int:
    """How many workspaces failed (or were canceled) and so have no changesets."""
    return sum(states.get(s, 0) for s in FAILED_STATES)


def failure_lines(
    view: Mapping[str, Any], namespace: str | None, *, local: bool, spec_file: str
) -> list[str]:
    """How many workspaces failed, and the exact commands that show their logs and retry them
    (`local`: the spec ran on this machine, where only a new preview runs them again)."""
    states: Mapping[str, int] = view["states"]
    failed = failed_count(states)
    if not failed:
        return []
    by_state = ", ".join(f"{states[s]} {s}" for s in FAILED_STATES if states.get(s))
    plural = "s" if view["workspaces"] != 1 else ""
    owner = f" --namespace {shlex.quote(namespace)}" if namespace else ""
    target = f"{shlex.quote(str(view['name']))}{owner} --spec {view['id']}"
    lines = [
        f"{failed} of {view['workspaces']} workspace{plural} did not finish ({by_state}); "
        "they have no changesets in this preview",
        f"  see why:        offload batch logs {target}",
    ]
    if local:
        lines.append(
            f"  run them again: offload batch preview -f {shlex.quote(spec_file)}{owner} --local"
            "   (the step cache answers the workspaces that finished)"
        )
    else:
        lines.append(f"  run them again: offload batch retry {target}")
    return lines


def next_step(view: Mapping[str, Any]) -> str:
    """What the user can do with the preview: apply it, or why there is nothing to apply."""
    operations: Sequence[Mapping[str, Any]] = view["operations"]
    failed = failed_count(view["states"])
    workspaces = int(view["workspaces"])
    apply = f"offload batch apply --spec {view['id']}"
    if not operations:
        if workspaces == 0:
            return (
                "nothing to apply: the spec matched no repository; check its `on:` "
                "(`offload repos list` shows the repositories)"
            )
        if failed == workspaces:
            return "nothing to apply: every workspace failed"
        states: Mapping[str, int] = view["states"]
        if states.get("ignored", 0) + states.get("skipped", 0) == workspaces:
            return "nothing to apply: every workspace was ignored (.batchignore) or skipped"
        if failed:
            return "nothing to apply: the workspaces that finished changed nothing"
        return "nothing to apply: no workspace changed anything"
    if all(list(op["actions"]) == ["none"] for op in operations):
        return f"nothing to apply: every changeset is as batch change {view['name']} has it"
    if failed:
        return f"apply it with: {apply}   (the workspaces that failed get no changeset)"
    return f"apply it with: {apply}"


def _styled(line: str) -> str:
    for prefix, style in _STYLES:
        if line.startswith(prefix):
            return f"{style}{line}{_RESET}"
    return line


def _diff_bytes(changeset: Mapping[str, Any]) -> bytes:
    if changeset.get("diffBase64"):
        return base64.b64decode(changeset["diffBase64"])
    return str(changeset.get("diff") or "").encode("utf-8")


def changeset_text(
    operations: Sequence[Mapping[str, Any]],
    changesets: Mapping[int, Mapping[str, Any]],
    *,
    terminal: bool,
    color: bool,
) -> Iterable[bytes]:
    """Each operation's changeset: its header, rendered title, commit message and body, then
    its diff; `changesets` by spec id, as the changesets route gives them. For a `terminal`,
    control characters are shown escaped; elsewhere the diff is its exact bytes."""
    for n, op in enumerate(operations):
        parts = [f"{op['repo']}  {op['branch']}  {','.join(op['actions'])}\n"]
        changeset = changesets.get(op["specId"]) if op.get("specId") is not None else None
        diff = b""
        if changeset is None:
            parts.append(f"no longer in the spec; apply does: {', '.join(op['actions'])}\n")
        elif changeset["kind"] == "existing":
            parts.append(f"imports pull request #{changeset['externalId']}\n")
        else:
            author = changeset["author"]
            parts += [
                f"title:  {changeset['title']}\n",
                f"base:   {changeset['baseRef']} ({changeset['baseRev'][:12]})\n",
                f"author: {author['name']} <{author['email']}>\n",
                "commit:\n",
                *(f"    {line}\n" for line in str(changeset["commitMessage"]).splitlines()),
                "body:\n",
                *(f"    {line}\n" for line in str(changeset["body"]).splitlines()),
                "\n",
            ]
            diff = _diff_bytes(changeset)
        gap = b"\n" if n else b""
        if not terminal:
            yield gap + "".join(parts).encode("utf-8") + diff
            continue
        lines = [_visible(part) for part in parts]
        if color:
            lines[0] = f"{_HEADER}{lines[0][:-1]}{_RESET}\n"
        text = _visible(diff.decode("utf-8", errors="replace")).removesuffix("\n")
        paint = _styled if color else str
        lines += [paint(line) + "\n" for line in text.split("\n")] if text else []
        yield gap + "".join(lines).encode("utf-8")


def pager_command(env: Mapping[str, str]) -> str | None:
    """The pager the user set: OFFLOAD_PAGER, else PAGER; None when neither is (or is empty)."""
    for name in ("OFFLOAD_PAGER", "PAGER"):
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def page(chunks: Iterable[bytes], command: str, env: Mapping[str, str]) -> int:
    """Write `chunks` through the pager `command` (run by the shell, as git runs $PAGER); its
    exit status. Quitting the pager early is not an error."""
    # As git does: less passes colors through and quits when the text fits on one screen.
    pager_env = {**env, "LESS": env.get("LESS", "FRX"), "LV": env.get("LV", "-c")}
    process = subprocess.Popen(command, shell=True, stdin=subprocess.PIPE, env=pager_env)
    assert process.stdin is not None
    try:
        for chunk in chunks:
            process.stdin.write(chunk)
        process.stdin.close()
    except BrokenPipeError:
        pass
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue  # as git does: Ctrl-C is the pager's to handle while it runs


def write(chunks: Iterable[bytes], stream: Any) -> None:
    """Write `chunks` to a binary stream (stdout's buffer), flushing at the end."""
    for chunk in chunks:
        stream.write(chunk)
    stream.flush()
