"""Every chart of the dashboard as a Plotly figure, built with `plotly.graph_objects` from the plain dicts
the pages already read (DESIGN §2). Pure: no ORM, no clock.

A figure is returned as a plain JSON-able dict `{"data": [...], "layout": {...}, "config": {...}}`; the
page embeds it with `json_script` (see tracking/templatetags/charts.py) and static/js/charts.js hands it
to plotly.js (vendored strict build) as it is. No Plotly template is set: plotly.js draws with its own
defaults, as it did when the figures were assembled in JavaScript.

- `activity_figure(viz)`: sessions (bars) and minutes (dotted line) per patient-local day, from a
  ProgressVizSeries (DESIGN §4). It carries every day of `viz`; the page shows the last N of them (its
  14/30/90-day buttons).
- `markers_figure(timeline)`: progress markers by type over time, from `tracking.selectors.markers_timeline`.
- `outcome_figure(instrument)`: one questionnaire's totals over time with severity bands, caseness, reliable
  change and item 9, from one entry of `reports.selectors.patient_outcome_series(patient)["instruments"]`.

Charts never rely on colour alone (symbols, line styles, text labels) and each has a data table beside it
in the page. Text that comes from the game (marker descriptions) is escaped before it reaches a hover label:
plotly.js renders a small HTML subset (`<b>`, `<a href>`...) in labels.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import plotly.graph_objects as go

Figure = dict[str, Any]
"""A figure as JSON-able data: `{"data": [traces], "layout": {...}, "config": {...}}`."""
Trace = dict[str, Any]

# ----- shared look ----------------------------------------------------------------------------------------

INK = "#1f2a37"
MUTED = "#5b6675"
LINE = "#dde3ea"
GRID = "rgba(31,42,55,0.06)"
WHITE = "#ffffff"
FONT = {"family": '"DejaVu Sans", "Segoe UI", system-ui, sans-serif', "size": 12, "color": INK}
CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
}
LOCAL_FORMAT = "%Y-%m-%d %H:%M"  # the patient's local time, as the pages show it


def _figure(traces: Sequence[Trace], layout: Mapping[str, Any]) -> Figure:
    """The figure checked by plotly.py against plotly.js's schema (an unknown property or a bad value raises
    ValueError), as plain data, with the page's config. Traces are given as dicts so that they are validated
    once, by `go.Figure` (a `go.Scatter` would be validated again when put in the figure)."""
    figure = go.Figure(data=list(traces), layout=layout).to_plotly_json()
    # plotly.py adds its default template; the charts use plotly.js's own defaults (colorway included).
    figure["layout"].pop("template", None)
    return {"data": figure["data"], "layout": figure["layout"], "config": copy.deepcopy(CONFIG)}


def _axis_title(text: str) -> dict[str, Any]:
    return {"text": text, "font": {"size": 12, "color": MUTED}}


def _number(value: float) -> str:
    """A number as JavaScript prints it (3, not 3.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def signed(value: float | None) -> str:
    """+3, −2 (a real minus sign), 0, or — when there is no value."""
    if value is None:
        return "—"
    if value > 0:
        return "+" + _number(value)
    if value < 0:
        return "−" + _number(abs(value))
    return "0"


def hover_safe(text: str | None) -> str:
    """Text from outside (the game) made inert for a Plotly label: `<`, `>` and `&` become entities, which
    plotly.js shows as the characters themselves, so no tag (`<b>`, `<a href>`, `<br>`) is rendered. It is
    passed as data (customdata), never as part of a hovertemplate, so `%{...}` in it is not a placeholder."""
    return html.escape(text or "", quote=False)


# ----- activity (sessions and minutes per patient-local day) ------------------------------------------------

SESSIONS_COLOUR = "#2f6f8f"
MINUTES_COLOUR = "#b86e00"


def activity_figure(viz: Mapping[str, Any]) -> Figure:
    """Sessions per day (bars, left axis) and minutes per day (dotted line, right axis) over every day of the
    ProgressVizSeries `viz` (`time_buckets`, `series.sessions`, `series.duration_minutes`). The page draws
    the last 14, 30 or 90 of them (the loader keeps the last N points of each trace)."""
    days = list(viz["time_buckets"])
    series = viz["series"]
    traces = [
        {
            "type": "bar",
            "name": "Sessions (bars, left axis)",
            "x": days,
            "y": list(series["sessions"]),
            "marker": {"color": SESSIONS_COLOUR},
            "hovertemplate": "%{x}: %{y} session(s)<extra></extra>",
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "Minutes (dotted line, right axis)",
            "x": days,
            "y": list(series["duration_minutes"]),
            "yaxis": "y2",
            "line": {"color": MINUTES_COLOUR, "dash": "dot", "width": 2},
            "marker": {"symbol": "diamond", "size": 6},
            "hovertemplate": "%{x}: %{y} min<extra></extra>",
        },
    ]
    layout = {
        "font": FONT,
        "height": 300,
        "margin": {"l": 48, "r": 56, "t": 10, "b": 40},
        "paper_bgcolor": WHITE,
        "plot_bgcolor": WHITE,
        "bargap": 0.25,
        "showlegend": True,
        "legend": {"orientation": "h", "x": 0, "y": -0.18, "yanchor": "top"},
        "xaxis": {"type": "date", "showgrid": False, "linecolor": LINE, "tickformat": "%d %b", "automargin": True},
        "yaxis": {
            "title": _axis_title("Sessions"),
            "rangemode": "tozero",
            "dtick": 1,
            "gridcolor": GRID,
            "fixedrange": True,
        },
        "yaxis2": {
            "title": _axis_title("Minutes"),
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "tickformat": "d",
            "showgrid": False,
            "fixedrange": True,
        },
    }
    return _figure(traces, layout)


# ----- progress markers ------------------------------------------------------------------------------------

MARKER_SYMBOLS = {
    "skill_acquired": "circle",
    "breakthrough": "star",
    "insight": "diamond",
    "milestone": "square",
    "goal_achieved": "triangle-up",
    "setback_overcome": "cross",
    "therapeutic_goal": "x",
}


def _type_label(marker_type: str) -> str:
    return marker_type.replace("_", " ")


def markers_figure(timeline: Mapping[str, Any]) -> Figure:
    """One row of symbols per marker type (`timeline["types"]`, every type even without markers) over time,
    from `markers_timeline` (`points` of `type`, `at` local "YYYY-MM-DD HH:MM", `description`, `value`).
    The trace of a type is named "<type> (<count>)"; its hover label gives the time, the type, the escaped
    description and the therapeutic value."""
    types = list(timeline["types"])
    traces: list[Trace] = []
    for marker_type in types:
        points = [p for p in timeline["points"] if p["type"] == marker_type]
        label = _type_label(marker_type)
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"{label} ({len(points)})",
                "x": [p["at"] for p in points],
                "y": [label] * len(points),
                "marker": {"symbol": MARKER_SYMBOLS.get(marker_type, "circle"), "size": 9, "opacity": 0.8},
                "customdata": [[hover_safe(p["description"]), p["value"]] for p in points],
                "hovertemplate": "%{x}<br>" + label + "<br>%{customdata[0]}<br>value %{customdata[1]}<extra></extra>",
            }
        )
    layout = {
        "font": FONT,
        "height": 280,
        "margin": {"l": 130, "r": 16, "t": 10, "b": 40},
        "paper_bgcolor": WHITE,
        "plot_bgcolor": WHITE,
        "showlegend": False,
        "xaxis": {"type": "date", "showgrid": True, "gridcolor": GRID, "linecolor": LINE, "tickformat": "%d %b"},
        "yaxis": {
            "type": "category",
            "categoryorder": "array",
            "categoryarray": [_type_label(t) for t in types],
            "fixedrange": True,
        },
    }
    return _figure(traces, layout)


# ----- outcomes: one questionnaire's totals over time --------------------------------------------------------

# Light, calm tints that grow warmer with severity; each band is also named in text on the right.
BAND_FILL = {
    "minimal": "#eaf4ee",
    "mild": "#f4f3e3",
    "moderate": "#fbeedb",
    "moderately_severe": "#f9e2d6",
    "severe": "#f5d7d7",
}
OTHER_BAND_FILL = "#f1f3f5"
TOTAL_COLOUR = "#2f6f8f"
IMPROVEMENT_COLOUR = "#2e7d4f"
DETERIORATION_COLOUR = "#9a4a00"
RISK_COLOUR = "#a4262c"
ITEM_ROW_Y = -2.2  # the row of item-9 answers under the axis
EXPECTED_FILL = "rgba(47,111,143,0.14)"  # the expected-recovery band: the total's hue, faint
EXPECTED_LINE = "#6c8ea0"


def padded_range(xs: Sequence[str]) -> list[str]:
    """A date range ("YYYY-MM-DD HH:MM") with room around the first and last score: at least a week each side
    when the scores span less than two weeks (a single score would zoom the axis to milliseconds), else 4% of
    the span with at least a day."""
    times = [datetime.strptime(x[:16].replace("T", " "), LOCAL_FORMAT) for x in xs]
    low, high = min(times), max(times)
    span = high - low
    pad = max(span * 0.04, timedelta(days=7) if span < timedelta(days=14) else timedelta(days=1))
    return [(low - pad).strftime(LOCAL_FORMAT), (high + pad).strftime(LOCAL_FORMAT)]


def _risky(point: Mapping[str, Any]) -> bool:
    return bool(point["items_known"]) and (point["item9"] or 0) > 0


def _item_answer(point: Mapping[str, Any]) -> str:
    if not point["items_known"]:
        return "–"
    return f"<b>◆{point['item9']}</b>" if _risky(point) else str(point["item9"])


def _step_trace(points: Sequence[Mapping[str, Any]], *, name: str, symbol: str, colour: str, what: str) -> Trace:
    picked = [p for p in points if p["step"] == what]
    return {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": [p["x"] for p in picked],
        "y": [p["total"] for p in picked],
        "marker": {"symbol": symbol, "size": 15, "color": colour, "line": {"color": WHITE, "width": 1}},
        "hovertemplate": "%{x}<br>Reliable " + what + " from the first score<extra></extra>",
    }


def _expected_traces(band: Sequence[Mapping[str, Any]], name: str, intake_label: str) -> list[Trace]:
    """The expected-recovery reference (DESIGN §8) under the totals: the 25th–75th percentile band filled
    between two invisible edges, and the median dashed, at the start of each week since the first score."""
    if not band:
        return []
    xs = [b["x"] for b in band]
    hover = f"Week %{{customdata}}: clinic patients who started {intake_label.lower()}"
    edge = {"type": "scatter", "mode": "lines", "x": xs, "line": {"width": 0}, "customdata": [b["week"] for b in band]}
    return [
        {**edge, "name": "Expected 25th percentile", "y": [b["p25"] for b in band], "hoverinfo": "skip"},
        {
            **edge,
            "name": "Expected range (25th–75th percentile)",
            "y": [b["p75"] for b in band],
            "fill": "tonexty",
            "fillcolor": EXPECTED_FILL,
            "hovertemplate": hover + "<br>75th percentile %{y}<extra></extra>",
        },
        {
            **edge,
            "name": f"Expected {name} (median)",
            "y": [b["p50"] for b in band],
            "line": {"color": EXPECTED_LINE, "width": 1.5, "dash": "dot"},
            "hovertemplate": hover + "<br>median %{y}<extra></extra>",
        },
    ]


def outcome_figure(instrument: Mapping[str, Any]) -> Figure:
    """One instrument of `patient_outcome_series`: its totals (line and circles) over the administrations, ▼/▲
    on scores reliably below/above the first one, and for an instrument with a risk item (PHQ-9 item 9) ◆ on
    answers above 0 plus a row of every answer under the axis ("–" when not recorded). The severity bands are
    shaded and named on the right (one shape each), the caseness threshold is a dashed line (one more shape)."""
    name = instrument["name"]
    points = list(instrument["points"])
    total_max = instrument["total_max"]
    reliable = instrument["reliable_change"]
    item_name = f"Item {instrument['risk_item']}" if instrument.get("risk_item") else None
    xs = [p["x"] for p in points]
    expected = instrument.get("expected") or {}
    band = list(expected.get("band") or [])

    traces = [
        *_expected_traces(band, name, expected.get("intake_label", "")),
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": f"{name} total",
            "x": xs,
            "y": [p["total"] for p in points],
            "line": {"color": TOTAL_COLOUR, "width": 2.5},
            "marker": {"color": TOTAL_COLOUR, "size": 8, "symbol": "circle"},
            "customdata": [
                [p["band_label"], signed(p["change_from_previous"]), signed(p["change_from_first"])] for p in points
            ],
            "hovertemplate": (
                "%{x}<br><b>" + name + " %{y}</b> (%{customdata[0]})"
                "<br>Change from previous: %{customdata[1]}<br>Change from first: %{customdata[2]}<extra></extra>"
            ),
        },
        _step_trace(
            points,
            name=f"▼ Reliable improvement ({reliable}+ down from first)",
            symbol="triangle-down",
            colour=IMPROVEMENT_COLOUR,
            what="improvement",
        ),
        _step_trace(
            points,
            name=f"▲ Reliable deterioration ({reliable}+ up from first)",
            symbol="triangle-up",
            colour=DETERIORATION_COLOUR,
            what="deterioration",
        ),
    ]

    annotations: list[dict[str, Any]] = []
    if item_name:
        # Every answer to the risk item is written under its administration: "–" when not recorded.
        # Answers above 0 are also marked on the line with a diamond. A 0 is shown as 0, nothing more.
        risky = [p for p in points if _risky(p)]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"◆ {item_name} answered above 0",
                "x": [p["x"] for p in risky],
                "y": [p["total"] for p in risky],
                "marker": {"symbol": "diamond", "size": 13, "color": RISK_COLOUR, "line": {"color": WHITE, "width": 1}},
                "hovertemplate": "%{x}<br>" + item_name + " answered %{customdata} (of 3)<extra></extra>",
                "customdata": [p["item9"] for p in risky],
            }
        )
        traces.append(
            {
                "type": "scatter",
                "mode": "text",
                "name": f"{item_name} answers",
                "x": xs,
                "y": [ITEM_ROW_Y] * len(points),
                "text": [_item_answer(p) for p in points],
                "textfont": {"size": 12, "color": [RISK_COLOUR if _risky(p) else MUTED for p in points]},
                "hovertemplate": "%{x}<br>" + item_name + ": %{text}<extra></extra>",
            }
        )
        annotations.append(
            {
                "xref": "paper",
                "yref": "y",
                "x": 0,
                "y": ITEM_ROW_Y,
                "xanchor": "right",
                "xshift": -6,
                "text": item_name,
                "showarrow": False,
                "font": {"size": 11, "color": MUTED},
            }
        )

    bands = instrument["bands"]
    shapes: list[dict[str, Any]] = [
        {
            "type": "rect",
            "xref": "paper",
            "yref": "y",
            "x0": 0,
            "x1": 1,
            "layer": "below",
            "line": {"width": 0},
            "y0": 0 if band["low"] == 0 else band["low"] - 0.5,
            "y1": total_max + 0.5 if band["high"] == total_max else band["high"] + 0.5,
            "fillcolor": BAND_FILL.get(band["name"], OTHER_BAND_FILL),
        }
        for band in bands
    ]
    caseness = instrument["caseness_threshold"] - 0.5
    shapes.append(
        {
            "type": "line",
            "xref": "paper",
            "yref": "y",
            "x0": 0,
            "x1": 1,
            "y0": caseness,
            "y1": caseness,
            "line": {"color": INK, "width": 1.5, "dash": "dash"},
        }
    )
    annotations += [
        {
            "xref": "paper",
            "yref": "y",
            "x": 1,
            "xanchor": "left",
            "xshift": 6,
            "y": (band["low"] + band["high"]) / 2,
            "text": band["label"],
            "showarrow": False,
            "font": {"size": 11, "color": MUTED},
        }
        for band in bands
    ]
    annotations.append(
        {
            "xref": "paper",
            "yref": "y",
            "x": 0,
            "xanchor": "left",
            "xshift": 4,
            "y": caseness,
            "yanchor": "bottom",
            "text": f"Caseness ({instrument['caseness_threshold']}+)",
            "showarrow": False,
            "font": {"size": 11, "color": INK},
            "bgcolor": "rgba(255,255,255,0.8)",
        }
    )

    xaxis: dict[str, Any] = {
        "type": "date",
        "showgrid": False,
        "linecolor": LINE,
        "ticks": "outside",
        "tickcolor": LINE,
        "automargin": True,
    }
    if xs:
        xaxis["range"] = padded_range(xs + [f"{b['x']} 00:00" for b in band])
    layout = {
        "font": FONT,
        "height": 360,
        "margin": {"l": 56, "r": 130, "t": 12, "b": 40},
        "paper_bgcolor": WHITE,
        "plot_bgcolor": WHITE,
        "hovermode": "closest",
        # The key is HTML beside the chart (it wraps at any width and is read by screen readers).
        "showlegend": False,
        "xaxis": xaxis,
        "yaxis": {
            "title": _axis_title(f"Total (0–{total_max})"),
            "range": [-3.6 if item_name else -0.5, total_max + 0.8],
            "tickvals": list(range(0, total_max + 1, 5)),
            "gridcolor": GRID,
            "zeroline": False,
            "fixedrange": True,
        },
        "shapes": shapes,
        "annotations": annotations,
    }
    return _figure(traces, layout)
