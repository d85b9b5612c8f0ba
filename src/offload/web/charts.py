"""Charts drawn by the server as SVG: no chart library in the browser, nothing to run, and
the page reads the same without JavaScript. Colors come from the stylesheet's classes (the
Content-Security-Policy allows no inline style); every chart has a table of its numbers."""

from __future__ import annotations

from dataclasses import dataclass

from offload.batches.burndown import Burndown

WIDTH, HEIGHT = 640, 220
# Room for the axes' labels: left for counts, bottom for dates.
LEFT, BOTTOM, TOP, RIGHT = 48, 28, 10, 10


@dataclass(frozen=True)
class Line:
    """One series as an SVG polyline."""

    name: str
    points: str
    last: int


@dataclass(frozen=True)
class Tick:
    """A label on an axis, at `at` along it."""

    at: float
    label: str
    anchor: str = "middle"


@dataclass(frozen=True)
class LineChart:
    """What the `_burndown.html` partial draws."""

    width: int
    height: int
    lines: list[Line]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    plot: tuple[int, int, int, int]  # left, top, right, bottom


def _nice_max(value: int) -> int:
    """The least of 1, 2 or 5 times a power of ten that is at least `value` (round numbers)."""
    top = 1
    while True:
        for factor in (1, 2, 5):
            if top * factor >= value:
                return top * factor
        top *= 10


def burndown_chart(data: Burndown) -> LineChart:
    """The burndown as lines over time, scaled to the chart's box."""
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    high = _nice_max(max([1, *(max(v) for v in data.series.values() if v)]))
    n = len(data.times)

    def x(i: int) -> float:
        return LEFT + (right - LEFT) * (i / (n - 1) if n > 1 else 1.0)

    def y(v: int) -> float:
        return bottom - (bottom - TOP) * v / high

    lines = [
        Line(
            name=name,
            points=" ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values)),
            last=values[-1] if values else 0,
        )
        for name, values in data.series.items()
    ]
    y_ticks = [Tick(at=y(high * k // 4), label=str(high * k // 4)) for k in range(5)]
    span = data.times[-1] - data.times[0]
    seconds = span.total_seconds()
    fmt = "%H:%M:%S" if seconds < 3600 else "%H:%M" if seconds < 2 * 86400 else "%b %d"
    picks = sorted({0, n // 3, 2 * n // 3, n - 1}) if n > 1 else [0]
    # The first and last labels stand inside the chart, not half outside it.
    anchors = {0: "start", n - 1: "end"}
    x_ticks = [
        Tick(at=x(i), label=data.times[i].strftime(fmt), anchor=anchors.get(i, "middle"))
        for i in picks
    ]
    return LineChart(
        width=WIDTH,
        height=HEIGHT,
        lines=lines,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        plot=(LEFT, TOP, right, bottom),
    )
