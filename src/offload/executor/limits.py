"""How a step's limits read to users: in the failure of a step that hit one, and in the
executor's start line. Each names the limit, its value and the setting that changes it."""

from __future__ import annotations

from offload.executor.config import size_text
from offload.executor.runtimes.base import Limits

# Limit kind -> (what users call it, the EXECUTOR_* setting that sets it).
NAMES: dict[str, tuple[str, str]] = {
    "cpu": ("cpu", "EXECUTOR_JOB_NUM_CPUS"),
    "memory": ("memory", "EXECUTOR_JOB_MEMORY"),
    "pids": ("pids", "EXECUTOR_JOB_PIDS"),
    "disk": ("disk", "EXECUTOR_JOB_DISK"),
    "tmp": ("/tmp", "EXECUTOR_JOB_TMP_SIZE"),
    "output": ("output", "EXECUTOR_JOB_OUTPUT_LIMIT"),
    "time": ("time", "EXECUTOR_MAXIMUM_RUNTIME_PER_JOB"),
}


def value_text(kind: str, value: float) -> str:
    """The value of a limit as its setting writes it: 2G, 1024, 1.5 CPUs, 30m."""
    if kind == "cpu":
        return f"{value:g} CPU" + ("" if value == 1 else "s")
    if kind == "pids":
        return f"{value:.0f}"
    if kind == "time":
        return duration_text(value)
    return size_text(value)


def named(kind: str, value: float) -> str:
    """`memory limit 2G (EXECUTOR_JOB_MEMORY)`: the limit, its value and its setting."""
    name, setting = NAMES[kind]
    return f"{name} limit {value_text(kind, value)} ({setting})"


def of(kind: str, limits: Limits) -> float:
    """The value of the limit `kind` in `limits`."""
    values = {
        "cpu": limits.cpus,
        "memory": limits.memory_bytes,
        "pids": limits.pids,
        "disk": limits.disk_bytes,
        "tmp": limits.tmp_bytes,
        "output": limits.output_bytes,
    }
    return values[kind]


def duration_text(seconds: float) -> str:
    """A duration the way settings write it: 30m, 2h, 45s."""
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= scale and seconds % scale == 0:
            return f"{seconds / scale:g}{unit}"
    return f"{seconds:g}s"


def reported(
    limits: Limits, max_runtime: float | None, *, disk: bool, confined: bool = True
) -> dict[str, str]:
    """The limits each job runs under, kind -> value ("none" where there is none), as the
    heartbeat reports them to the executors page. `disk`: workspaces are size-limited;
    `confined`: the runtime enforces cpu, memory, pids and /tmp (the shell runtime does not)."""

    def text(kind: str, value: float, holds: bool = True) -> str:
        return value_text(kind, value) if holds and value > 0 else "none"

    return {
        "memory": text("memory", limits.memory_bytes, confined),
        "cpus": f"{limits.cpus:g}" if confined and limits.cpus > 0 else "none",
        "pids": text("pids", limits.pids, confined),
        "disk": text("disk", limits.disk_bytes, confined and disk),
        "tmp": text("tmp", limits.tmp_bytes, confined),
        "output": text("output", limits.output_bytes),
        "time": text("time", max_runtime or 0),
    }


def summary(limits: Limits, max_runtime: float | None, disk: str) -> str:
    """`limits: 1 CPU, memory 2G, 1024 pids, ...` for the start line; `disk` says how the
    workspace's size is limited (or why it is not)."""
    parts = [
        value_text("cpu", limits.cpus) if limits.cpus > 0 else "no cpu limit",
        f"memory {size_text(limits.memory_bytes)}"
        if limits.memory_bytes > 0
        else "no memory limit",
        f"{limits.pids} pids" if limits.pids > 0 else "no pids limit",
        disk,
        f"/tmp {size_text(limits.tmp_bytes)}" if limits.tmp_bytes > 0 else "no /tmp limit",
        f"output {size_text(limits.output_bytes)}" if limits.output_bytes else "no output limit",
        f"{duration_text(max_runtime)} per job" if max_runtime else "no time limit",
    ]
    if limits.uid is not None:
        parts.append(f"steps as uid {limits.uid}")
    return "limits: " + ", ".join(parts)
