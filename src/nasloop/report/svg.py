"""Inline SVG charts, generated in Python so a report needs no JavaScript library and no network.

A `Chart` has line, step and point `Series` on shared linear axes, and optional `Strip`s: rows of
markers under the plot for events that have no y value (a failed candidate has no score, so it is drawn
in a strip, not at a made-up height). Every piece of text is HTML-escaped. Elements carry CSS classes
(`css_class`) so pages can style them and tests can count them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Literal

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
GREY = "#8a8a8a"

_MARGIN_LEFT = 72
_MARGIN_RIGHT = 20
_MARGIN_TOP = 34  # room for the legend
_MARGIN_BOTTOM = 46  # tick labels and the x-axis label
_STRIP_HEIGHT = 18
_CHAR_WIDTH = 6.6  # approximate width of one 11 px character, for laying out the legend


def format_number(value: float) -> str:
    """Compact, human-readable number: 0.7342, 12.5, 48.2k, 1.31M."""
    if not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.4g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (steps of 1, 2 or 5 times a power of ten) covering [low, high]."""
    if high < low:
        low, high = high, low
    if high == low:
        return [low]
    raw_step = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw_step))
    step = next(multiple * power for multiple in (1, 2, 5, 10) if multiple * power >= raw_step)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else round(value, 12))
        value += step
    return ticks


@dataclass(frozen=True)
class Series:
    """One data series. `ys` may hold None (a gap: lines break there, no point is drawn)."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str
    style: Literal["line", "step", "points"] = "line"
    css_class: str = ""
    titles: Sequence[str] | None = None  # one tooltip per point, for the points style
    dashed: bool = False
    radius: float = 3.0
    width: float = 2.0
    in_legend: bool = True


@dataclass(frozen=True)
class Strip:
    """A row of markers under the plot, one per x, each with a tooltip."""

    label: str
    xs: Sequence[float]
    color: str
    symbol: Literal["cross", "triangle", "ring"]
    css_class: str
    titles: Sequence[str]


@dataclass(frozen=True)
class Chart:
    """A chart with shared linear axes; `x_range` / `y_range` fix an axis, else it fits the data."""

    chart_id: str
    title: str
    x_label: str
    y_label: str
    series: Sequence[Series]
    strips: Sequence[Strip] = ()
    x_range: tuple[float, float] | None = None
    y_range: tuple[float, float] | None = None
    width: int = 760
    height: int = 300
    notes: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class _Frame:
    """Pixel geometry of the plot area and the data-to-pixel mapping."""

    left: float
    top: float
    right: float
    bottom: float
    x_low: float
    x_high: float
    y_low: float
    y_high: float

    def x(self, value: float) -> float:
        return self.left + (value - self.x_low) / (self.x_high - self.x_low) * (self.right - self.left)

    def y(self, value: float) -> float:
        return self.bottom - (value - self.y_low) / (self.y_high - self.y_low) * (self.bottom - self.top)


def _span(values: list[float], fixed: tuple[float, float] | None, pad: float) -> tuple[float, float]:
    if fixed is not None:
        return fixed
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    if low == high:
        return low - 1.0, high + 1.0
    margin = (high - low) * pad
    return low - margin, high + margin


def _frame(chart: Chart) -> _Frame:
    xs = [float(x) for s in chart.series for x, y in zip(s.xs, s.ys, strict=True) if y is not None]
    xs += [float(x) for strip in chart.strips for x in strip.xs]
    ys = [float(y) for s in chart.series for y in s.ys if y is not None]
    x_low, x_high = _span(xs, chart.x_range, 0.02)
    y_low, y_high = _span(ys, chart.y_range, 0.06)
    bottom = chart.height - _MARGIN_BOTTOM - _STRIP_HEIGHT * len(chart.strips)
    return _Frame(_MARGIN_LEFT, _MARGIN_TOP, chart.width - _MARGIN_RIGHT, bottom, x_low, x_high, y_low, y_high)


def _axes(chart: Chart, frame: _Frame) -> list[str]:
    parts = [
        f'<rect class="plot-area" x="{frame.left}" y="{frame.top}" width="{frame.right - frame.left}" '
        f'height="{frame.bottom - frame.top}" fill="#fff" stroke="#bbb"/>'
    ]
    axis_bottom = chart.height - _MARGIN_BOTTOM
    for tick in nice_ticks(frame.y_low, frame.y_high):
        y = frame.y(tick)
        parts.append(f'<line x1="{frame.left}" x2="{frame.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(
            f'<text class="tick y-tick" x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(format_number(tick))}</text>"
        )
    for tick in nice_ticks(frame.x_low, frame.x_high, count=8):
        x = frame.x(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{frame.top}" y2="{axis_bottom}" stroke="#f2f2f2"/>')
        parts.append(
            f'<text class="tick x-tick" x="{x:.1f}" y="{axis_bottom + 15}" text-anchor="middle">'
            f"{escape(format_number(tick))}</text>"
        )
    parts.append(
        f'<text class="axis-label x-label" x="{(frame.left + frame.right) / 2:.1f}" y="{chart.height - 8}" '
        f'text-anchor="middle">{escape(chart.x_label)}</text>'
    )
    middle = (frame.top + frame.bottom) / 2
    parts.append(
        f'<text class="axis-label y-label" x="16" y="{middle:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {middle:.1f})">{escape(chart.y_label)}</text>'
    )
    return parts


def _segments(series: Series, frame: _Frame) -> list[list[tuple[float, float]]]:
    """Pixel polylines of a line or step series, broken at gaps."""
    segments: list[list[tuple[float, float]]] = [[]]
    previous: float | None = None
    for x, y in zip(series.xs, series.ys, strict=True):
        if y is None:
            if segments[-1]:
                segments.append([])
            previous = None
            continue
        if series.style == "step" and previous is not None and previous != y:
            segments[-1].append((frame.x(x), frame.y(previous)))
        segments[-1].append((frame.x(x), frame.y(y)))
        previous = y
    return [segment for segment in segments if segment]


def _series(series: Series, frame: _Frame) -> list[str]:
    css = escape(series.css_class)
    if series.style == "points":
        parts = [f'<g class="series series-{css}">']
        titles = series.titles or [""] * len(series.xs)
        for x, y, title in zip(series.xs, series.ys, titles, strict=True):
            if y is None:
                continue
            tooltip = f"<title>{escape(title)}</title>" if title else ""
            parts.append(
                f'<circle class="{css}" cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="{series.radius}" '
                f'fill="{series.color}" fill-opacity="0.75">{tooltip}</circle>'
            )
        return [*parts, "</g>"]
    dash = ' stroke-dasharray="6 4"' if series.dashed else ""
    parts = []
    for segment in _segments(series, frame):
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
        parts.append(
            f'<polyline class="{css}" points="{points}" fill="none" stroke="{series.color}" '
            f'stroke-width="{series.width}"{dash}/>'
        )
    return parts


def _marker(symbol: str, x: float, y: float, color: str, css: str, title: str) -> str:
    tooltip = f"<title>{escape(title)}</title>"
    if symbol == "cross":
        path = f"M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}M{x - 4:.1f},{y + 4:.1f}L{x + 4:.1f},{y - 4:.1f}"
        return f'<path class="{css}" d="{path}" stroke="{color}" stroke-width="2">{tooltip}</path>'
    if symbol == "triangle":
        points = f"{x:.1f},{y - 4:.1f} {x - 4:.1f},{y + 4:.1f} {x + 4:.1f},{y + 4:.1f}"
        return f'<polygon class="{css}" points="{points}" fill="{color}">{tooltip}</polygon>'
    return f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="none" stroke="{color}">{tooltip}</circle>'


def _strips(chart: Chart, frame: _Frame) -> list[str]:
    parts = []
    for row, strip in enumerate(chart.strips):
        y = frame.bottom + _STRIP_HEIGHT * row + _STRIP_HEIGHT / 2 + 2
        css = escape(strip.css_class)
        parts.append(
            f'<text class="strip-label" x="{frame.left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(strip.label)}</text>"
        )
        parts.append(f'<g class="strip strip-{css}">')
        for x, title in zip(strip.xs, strip.titles, strict=True):
            parts.append(_marker(strip.symbol, frame.x(x), y, strip.color, css, title))
        parts.append("</g>")
    return parts


def _legend(chart: Chart) -> list[str]:
    entries: list[tuple[str, str, str]] = [(s.label, s.color, s.style) for s in chart.series if s.in_legend]
    entries += [(strip.label, strip.color, strip.symbol) for strip in chart.strips]
    parts = ['<g class="legend">']
    x = float(_MARGIN_LEFT)
    for label, color, style in entries:
        if style == "points":
            parts.append(f'<circle cx="{x + 6:.1f}" cy="16" r="4" fill="{color}"/>')
        elif style in ("cross", "triangle", "ring"):
            parts.append(_marker(style, x + 6, 16, color, "legend-marker", label))
        else:
            parts.append(f'<line x1="{x:.1f}" x2="{x + 14:.1f}" y1="16" y2="16" stroke="{color}" stroke-width="3"/>')
        parts.append(f'<text class="legend-label" x="{x + 18:.1f}" y="20">{escape(label)}</text>')
        x += 30 + _CHAR_WIDTH * len(label)
    return [*parts, "</g>"]


def render(chart: Chart) -> str:
    """The chart as an inline `<svg>` element (scales to its container's width)."""
    frame = _frame(chart)
    has_data = any(y is not None for s in chart.series for y in s.ys) or any(strip.xs for strip in chart.strips)
    parts = [
        f'<svg id="{escape(chart.chart_id)}" class="chart" viewBox="0 0 {chart.width} {chart.height}" '
        f'role="img" aria-label="{escape(chart.title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(chart.title)}</title>",
        *_axes(chart, frame),
    ]
    if not has_data:
        parts.append(
            f'<text class="no-data" x="{(frame.left + frame.right) / 2:.1f}" y="{(frame.top + frame.bottom) / 2:.1f}"'
            ' text-anchor="middle">no data yet</text>'
        )
    for series in chart.series:
        parts.extend(_series(series, frame))
    parts.extend(_strips(chart, frame))
    parts.extend(_legend(chart))
    parts.append("</svg>")
    return "\n".join(parts)
