"""Host tools: the only programs a job's cli steps may run on the executor host.

A cli step runs outside the runtime, so what it may run is decided here, not by the server:
its `command` names a tool of HOST_TOOLS, and the rest of it are that tool's arguments.
Neither the arguments nor the step's env may choose another program: the tool is found on
the executor's own PATH, and the env may not set what decides which code a tool loads.

A tool is a program (an argv prefix) or a function of the offload package that runs inside
the executor's process (`InProcess`): a batch workspace runs two helper steps per spec step,
and starting an interpreter for each cost more CPU than the rest of the workspace together.
"""

from __future__ import annotations

import importlib
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from offload.protocol.wire import CliStep


class InProcessTool(Protocol):
    """A host tool run in the executor's process, in a thread: its exit code."""

    def __call__(
        self,
        args: list[str],
        *,
        workspace: Path,
        host: Path,
        env: Mapping[str, str],
        write: Callable[[str], None],
    ) -> int:
        """Run with the tool's arguments, the job's workspace and host directory, the step's
        env; `write` takes each line of output."""
        ...


@dataclass(frozen=True)
class InProcess:
    """A host tool that is `function` of `module`, imported when a step first needs it."""

    module: str
    function: str

    def load(self) -> InProcessTool:
        """The tool's function."""
        tool: InProcessTool = getattr(importlib.import_module(self.module), self.function)
        return tool


# Tool name -> what it stands for. To add a tool, add it here; nothing else runs.
HOST_TOOLS: dict[str, list[str] | InProcess] = {
    "batch-helper": InProcess("offload.batches.helper", "run_in_process"),
    # Read-only and argument-checked (see GIT_ARGUMENTS): git runs programs its arguments
    # (-c alias.x=!cmd, --upload-pack=) or a repository's config (hooks, fsmonitor) name.
    "git": ["git"],
}

# The only git invocations a cli step may make: `git --version`, and `git -C DIR rev-parse`
# of revisions and these flags (rev-parse reads refs and objects; it runs no hook, no
# fsmonitor, no filter, no alias).
_REV_PARSE_FLAGS = frozenset({"--show-toplevel", "--verify", "--short", "--abbrev-ref", "--"})
_REVISION = re.compile(r"^(HEAD|[0-9a-f]{4,64}|[A-Za-z0-9_][A-Za-z0-9_./-]*)$")


def git_arguments_allowed(args: list[str]) -> bool:
    """Whether `git ARGS` is one of the read-only invocations cli steps may make."""
    if args == ["--version"]:
        return True
    if len(args) < 3 or args[0] != "-C" or args[2] != "rev-parse" or args[1].startswith("-"):
        return False
    return all(a in _REV_PARSE_FLAGS or _REVISION.match(a) for a in args[3:])


# Environment a cli step may not set: each one can make a tool run other code.
RESERVED_ENV = frozenset(
    {
        "PATH", "HOME", "XDG_CONFIG_HOME", "IFS", "ENV", "BASH_ENV", "SHELL",
        "EDITOR", "VISUAL", "PAGER", "SSH_ASKPASS", "OFFLOAD_HOST_DIR", "OFFLOAD_WORKSPACE",
    }
)  # fmt: skip
RESERVED_PREFIXES = ("LD_", "DYLD_", "PYTHON", "GIT_")


class HostToolRefused(ValueError):
    """A cli step asks for a tool or an environment this executor does not allow."""


@dataclass(frozen=True)
class HostCommand:
    """A cli step as the host runs it: the argv (the arguments, for an in-process tool), the
    step's own environment, and the function of an in-process tool."""

    argv: list[str]
    env: dict[str, str]
    in_process: InProcessTool | None = None


def host_command(
    step: CliStep, key: str, tools: Mapping[str, list[str] | InProcess] = HOST_TOOLS
) -> HostCommand:
    """The host command of cli step `key`; HostToolRefused for an unknown tool or reserved env."""
    name = step.commands[0] if step.commands else ""
    if name not in tools:
        raise HostToolRefused(
            f"cli step {key} asks for host tool {name or '(none)'}; "
            f"this executor runs only: {', '.join(sorted(tools))}"
        )
    env: dict[str, str] = {}
    for pair in step.env:
        if "=" not in pair:
            continue  # as for docker steps: only NAME=value items are env
        var, _, value = pair.partition("=")
        if var in RESERVED_ENV or var.startswith(RESERVED_PREFIXES):
            raise HostToolRefused(
                f"cli step {key} sets {var} in its env, which host tools take from the "
                "executor only; rename the variable"
            )
        env[var] = value
    if name == "git" and not git_arguments_allowed(step.commands[1:]):
        raise HostToolRefused(
            f"cli step {key} runs git {' '.join(step.commands[1:])}; host steps may only run "
            "`git --version` and `git -C DIR rev-parse REV...`"
        )
    tool = tools[name]
    if isinstance(tool, InProcess):
        return HostCommand(list(step.commands[1:]), env, tool.load())
    return HostCommand([program(tool[0]), *tool[1:], *step.commands[1:]], env)


def program(name: str) -> str:
    """`name` as an absolute path on the executor's PATH (so no step env can redirect it)."""
    if Path(name).is_absolute():
        return name
    found = shutil.which(name)
    if found is None:
        raise HostToolRefused(f"host tool program {name} is not installed on this executor")
    return found
