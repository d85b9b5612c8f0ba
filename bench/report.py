"""What a benchmark reports: percentiles of its samples, medians of its runs, the result file.

Each run of a benchmark returns its figures flat (name -> value) under ``"figures"``; the
report gives the median of each over the runs. The result document goes to
``bench/results/NAME-<UTC timestamp>.json``, and most benchmarks copy it to
``NAME-latest.json``, the one a later run is compared with.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def percentile(samples: list[float], pct: float) -> float:
    """The `pct` percentile of `samples` (nearest rank)."""
    ordered = sorted(samples)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def medians(runs: list[dict[str, Any]], *, in_all: bool = False) -> dict[str, float]:
    """The median over the runs of every figure of the first run.

    With `in_all`, of every figure present in all of them instead, sorted by name: for runs
    that need not measure the same figures.
    """
    if in_all:
        keys = sorted(set.intersection(*(set(run["figures"]) for run in runs)))
    else:
        keys = list(runs[0]["figures"])
    return {key: statistics.median(run["figures"][key] for run in runs) for key in keys}


def write_results(
    document: dict[str, Any],
    name: str,
    *,
    latest: bool = True,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Write `document` as NAME-<UTC timestamp>.json (and NAME-latest.json); the former's path.

    `default` is json.dumps's: what to write for a value JSON has no type for.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{name}-{when}.json"
    text = json.dumps(document, indent=2, default=default) + "\n"
    path.write_text(text)
    if latest:
        (RESULTS / f"{name}-latest.json").write_text(text)
    return path
