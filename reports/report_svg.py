"""The patient report's outcome charts as inline SVG, drawn on the server: a PDF cannot run the Plotly
script of the pages, so the report (HTML and PDF alike) carries this drawing instead.

Pure: takes one instrument of `reports.selectors.patient_outcome_series` (plain data) and returns SVG
markup. No Django, no clock. Every piece of text in the markup is escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from html import escape
from typing import Any

WIDTH, HEIGHT = 700, 250
LEFT, RIGHT, TOP, BOTTOM = 38, 150, 14, 38
BAND_FILL = {
    "minimal": "#e8f3ea",
    "mild": "#f3f4e2",
    "moderate": "#fbefdc",
    "moderately_severe": "#f9e3d6",
    "severe": "#f6d9d9",
}
LINE = "#1f4e79"
IMPROVEMENT = "#1b7a3d"
DETERIORATION = "#b3261e"
REFERENCE_FILL = "#9aa5b1"


def _naive(text: str) -> datetime:
    """An ISO date or local date-time as a naive local date-time (the series gives local times)."""
    return datetime.fromisoformat(text).replace(tzinfo=None)


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _reference_band(instrument: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The weeks of the expected-recovery reference the chart draws (under `expected` or `reference`)."""
    expected = instrument.get("expected") or instrument.get("reference") or {}
    rows = expected.get("band") if isinstance(expected, Mapping) else None
    return [r for r in rows or [] if r.get("p25") is not None and r.get("p75") is not None and r.get("x")]


def outcome_chart_svg(instrument: Mapping[str, Any]) -> str:
    """One instrument's totals over time: severity bands shaded and named on the right, the caseness
    threshold dashed, the clinic's expected-recovery band (25th–75th percentile, median dashed) when the
    series has one, each total as a point on a line, and a reliable change from the first score marked
    ▼ (improvement) or ▲ (deterioration)."""
    points: Sequence[Mapping[str, Any]] = instrument["points"]
    reference = _reference_band(instrument)
    total_max = float(instrument["total_max"])
    name = str(instrument["name"])
    times = [_naive(p["administered_at"]) for p in points] + [_naive(r["x"]) for r in reference]
    start, end = (min(times), max(times)) if times else (datetime(2000, 1, 1), datetime(2000, 1, 2))
    if end - start < timedelta(days=14):  # room on either side of one score or a short series
        pad = (timedelta(days=14) - (end - start)) / 2
        start, end = start - pad, end + pad
    margin = (end - start) * 0.04  # keep the first and last points and their labels off the axes
    start, end = start - margin, end + margin
    span = (end - start).total_seconds()
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(at: datetime) -> float:
        return LEFT + plot_w * (at - start).total_seconds() / span

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / total_max)

    parts: list[str] = []
    label = f"{name} totals over time, {len(points)} score{'s' if len(points) != 1 else ''}"
    parts.append(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="report-chart" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(label)}" '
        'font-family="DejaVu Sans, sans-serif" font-size="10">'
    )
    parts.append(f"<title>{escape(label)}</title>")
    # Severity bands, each from its lowest score to one above its highest.
    for band in instrument.get("bands", []):
        top, bottom = y(min(band["high"] + 1, total_max)), y(band["low"])
        fill = BAND_FILL.get(band["name"], "#f2f2f2")
        parts.append(f'<rect x="{LEFT}" y="{_fmt(top)}" width="{plot_w}" height="{_fmt(bottom - top)}" fill="{fill}"/>')
        parts.append(
            f'<text x="{LEFT + plot_w + 6}" y="{_fmt((top + bottom) / 2 + 3)}" fill="#444">'
            f"{escape(str(band['label']))} ({band['low']}–{band['high']})</text>"
        )
    # The expected-recovery reference: the 25th–75th band and its median.
    if reference:
        upper = " ".join(f"{_fmt(x(_naive(r['x'])))},{_fmt(y(r['p75']))}" for r in reference)
        lower = " ".join(f"{_fmt(x(_naive(r['x'])))},{_fmt(y(r['p25']))}" for r in reversed(reference))
        parts.append(
            f'<polygon class="reference-band" points="{upper} {lower}" fill="{REFERENCE_FILL}" fill-opacity="0.35"/>'
        )
        median = " ".join(
            f"{_fmt(x(_naive(r['x'])))},{_fmt(y(r['p50']))}" for r in reference if r.get("p50") is not None
        )
        if median:
            parts.append(
                f'<polyline class="reference-median" points="{median}" fill="none" stroke="#5b6670" '
                'stroke-width="1.2" stroke-dasharray="2 2"/>'
            )
    # Caseness threshold.
    threshold = instrument.get("caseness_threshold")
    if threshold is not None:
        ty = _fmt(y(threshold))
        parts.append(
            f'<line x1="{LEFT}" y1="{ty}" x2="{LEFT + plot_w}" y2="{ty}" stroke="#7a1f1f" stroke-width="1" '
            'stroke-dasharray="5 3"/>'
        )
    # Axes: the y axis at the band boundaries, the x axis at the ends and up to three dates between.
    parts.append(
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#333"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#333"/>'
    )
    ticks = sorted({0, int(total_max), *(b["low"] for b in instrument.get("bands", []))})
    for tick in ticks:
        parts.append(f'<text x="{LEFT - 5}" y="{_fmt(y(tick) + 3)}" text-anchor="end" fill="#333">{tick}</text>')
    for n in range(5):
        at = start + (end - start) * n / 4
        anchor = "start" if n == 0 else "end" if n == 4 else "middle"
        parts.append(
            f'<text x="{_fmt(x(at))}" y="{TOP + plot_h + 14}" text-anchor="{anchor}" fill="#333">{at:%Y-%m-%d}</text>'
        )
    # The totals.
    coords = [(x(_naive(p["administered_at"])), y(p["total"])) for p in points]
    if len(coords) > 1:
        line = " ".join(f"{_fmt(cx)},{_fmt(cy)}" for cx, cy in coords)
        parts.append(f'<polyline class="scores" points="{line}" fill="none" stroke="{LINE}" stroke-width="2"/>')
    for (cx, cy), point in zip(coords, points, strict=True):
        parts.append(
            f'<circle class="score" cx="{_fmt(cx)}" cy="{_fmt(cy)}" r="3.5" fill="{LINE}">'
            f"<title>{escape(str(point['administered_at'])[:16])}: {point['total']}</title></circle>"
        )
        step = point.get("step")
        if step == "improvement":
            parts.append(
                f'<path class="step-improvement" d="M{_fmt(cx - 5)},{_fmt(cy + 7)} h10 l-5,8 z" fill="{IMPROVEMENT}"/>'
            )
        elif step == "deterioration":
            parts.append(
                f'<path class="step-deterioration" d="M{_fmt(cx - 5)},{_fmt(cy - 7)} h10 l-5,-8 z" '
                f'fill="{DETERIORATION}"/>'
            )
        parts.append(
            f'<text x="{_fmt(cx)}" y="{_fmt(cy - 7 if step != "deterioration" else cy - 17)}" '
            f'text-anchor="middle" fill="#111" font-size="9">{point["total"]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
