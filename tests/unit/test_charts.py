"""The Plotly figures of tracking/charts.py (DESIGN §2): traces, point counts, colours, labels, shapes and
annotations, and game text escaped in hover labels. Pure: no database, no browser (the browser tests check
that plotly.js draws them)."""

import json
from pathlib import Path

import pytest
from django.template import Context, Template
from plotly.offline import get_plotlyjs_version

from reports.instruments import GAD7, PHQ9
from tracking import charts

MARKER_TYPES = [
    "milestone",
    "breakthrough",
    "skill_acquired",
    "goal_achieved",
    "setback_overcome",
    "insight",
    "therapeutic_goal",
]
HOSTILE = "<b>bold</b> <a href=x>link</a> %{x}"


def instrument(definition, scores):
    """One instrument as reports.selectors.patient_outcome_series gives it; `scores` = (x, total, item9),
    item9 None for a total-only response. Change and reliable change are from the first score."""
    points, first, previous = [], None, None
    for x, total, item9 in scores:
        step = None
        if first is not None and abs(total - first) >= definition.reliable_change:
            step = "improvement" if total < first else "deterioration"
        band = next(b for b in definition.bands if b.low <= total <= b.high)
        points.append(
            {
                "x": x,
                "administered_at": x.replace(" ", "T") + ":00+00:00",
                "total": total,
                "band": band.name,
                "band_label": band.label,
                "at_caseness": total >= definition.caseness_threshold,
                "change_from_previous": None if previous is None else total - previous,
                "change_from_first": None if first is None else total - first,
                "step": step,
                "items_known": item9 is not None,
                "item9": item9,
            }
        )
        first = total if first is None else first
        previous = total
    return {
        "code": definition.code,
        "name": definition.name,
        "total_max": definition.total_max,
        "caseness_threshold": definition.caseness_threshold,
        "reliable_change": definition.reliable_change,
        "risk_item": definition.risk_item,
        "bands": [{"name": b.name, "label": b.label, "low": b.low, "high": b.high} for b in definition.bands],
        "points": points,
    }


# The PHQ-9 of the browser test: 19 → 17 (item 9 = 1) → 9 → 12 (total only) → 5.
PHQ9_SCORES = [
    ("2026-01-05 09:00", 19, 0),
    ("2026-01-19 09:00", 17, 1),
    ("2026-02-02 09:00", 9, 0),
    ("2026-02-16 09:00", 12, None),
    ("2026-03-16 09:00", 5, 0),
]
GAD7_SCORES = [("2026-01-05 09:05", 15, None), ("2026-02-02 09:05", 11, None), ("2026-03-16 09:05", 6, None)]


def by_name(figure, name):
    return next(t for t in figure["data"] if t["name"] == name)


def viz(days=90):
    buckets = [f"2026-{1 + d // 28:02d}-{1 + d % 28:02d}" for d in range(days)]
    return {
        "time_buckets": buckets,
        "series": {
            "sessions": [d % 3 for d in range(days)],
            "duration_minutes": [10.5 * (d % 3) for d in range(days)],
            "skills_acquired": [0] * days,
            "markers": [0] * days,
        },
        "meta": {"period_days": days, "timezone": "Europe/London", "units": {"duration_minutes": "minutes"}},
    }


def timeline(points):
    return {"types": MARKER_TYPES, "points": points, "truncated": False}


def marker(marker_type, at, description="", value=0.5):
    return {"type": marker_type, "at": at, "description": description, "value": value}


# ----- every figure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "figure",
    [
        pytest.param(lambda: charts.activity_figure(viz()), id="activity"),
        pytest.param(lambda: charts.markers_figure(timeline([marker("insight", "2026-02-01 18:00")])), id="markers"),
        pytest.param(lambda: charts.outcome_figure(instrument(PHQ9, PHQ9_SCORES)), id="phq9"),
        pytest.param(lambda: charts.outcome_figure(instrument(GAD7, GAD7_SCORES)), id="gad7"),
    ],
)
def test_a_figure_is_plain_json_with_the_page_config_and_no_plotly_py_template(figure):
    figure = figure()
    assert set(figure) == {"data", "layout", "config"}
    assert json.loads(json.dumps(figure)) == figure  # plain JSON types only
    assert "template" not in figure["layout"]  # plotly.js's own defaults (colorway), as before
    assert figure["config"] == {
        "displaylogo": False,
        "responsive": True,
        "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d", "toggleSpikelines"],
    }
    assert figure["layout"]["font"] == {
        "family": '"DejaVu Sans", "Segoe UI", system-ui, sans-serif',
        "size": 12,
        "color": "#1f2a37",
    }
    assert figure["layout"]["paper_bgcolor"] == figure["layout"]["plot_bgcolor"] == "#ffffff"
    assert all(t["hovertemplate"].endswith("<extra></extra>") for t in figure["data"])


def test_plotly_py_checks_every_figure_against_the_plotly_js_schema():
    with pytest.raises(ValueError, match="markr"):
        charts._figure([{"type": "scatter", "markr": {"size": 3}}], {})
    with pytest.raises(ValueError, match="symbol"):
        charts._figure([{"type": "scatter", "marker": {"symbol": "no-such-symbol"}}], {})


def test_the_vendored_plotly_js_is_the_version_plotly_py_builds_figures_for():
    root = Path(__file__).resolve().parents[2]
    name = f"plotly-strict-{get_plotlyjs_version()}.min.js"
    assert (root / "static" / "vendor" / name).is_file()
    assert f"vendor/{name}" in (root / "templates" / "reports" / "_chart_scripts.html").read_text()


# ----- activity ---------------------------------------------------------------------------------------------


def test_activity_has_sessions_bars_and_a_dotted_minutes_line_on_the_right_axis_for_every_day():
    data = viz(90)
    figure = charts.activity_figure(data)
    bars, minutes = figure["data"]
    assert bars["type"] == "bar" and bars["name"] == "Sessions (bars, left axis)"
    assert bars["x"] == data["time_buckets"] and bars["y"] == data["series"]["sessions"]
    assert bars["marker"] == {"color": "#2f6f8f"}
    assert bars["hovertemplate"] == "%{x}: %{y} session(s)<extra></extra>"
    assert minutes["type"] == "scatter" and minutes["mode"] == "lines+markers"
    assert minutes["name"] == "Minutes (dotted line, right axis)"
    assert len(minutes["x"]) == len(minutes["y"]) == 90 and minutes["y"][2] == 21
    assert minutes["yaxis"] == "y2"
    assert minutes["line"] == {"color": "#b86e00", "dash": "dot", "width": 2}
    assert minutes["marker"] == {"symbol": "diamond", "size": 6}
    assert minutes["hovertemplate"] == "%{x}: %{y} min<extra></extra>"

    layout = figure["layout"]
    assert layout["height"] == 300 and layout["bargap"] == 0.25 and layout["showlegend"] is True
    assert layout["margin"] == {"l": 48, "r": 56, "t": 10, "b": 40}
    assert layout["legend"] == {"orientation": "h", "x": 0, "y": -0.18, "yanchor": "top"}
    assert layout["xaxis"] == {
        "type": "date",
        "showgrid": False,
        "linecolor": "#dde3ea",
        "tickformat": "%d %b",
        "automargin": True,
    }
    assert layout["yaxis"]["title"] == {"text": "Sessions", "font": {"size": 12, "color": "#5b6675"}}
    assert layout["yaxis"]["dtick"] == 1 and layout["yaxis"]["rangemode"] == "tozero"
    assert layout["yaxis2"]["title"]["text"] == "Minutes"
    assert layout["yaxis2"]["overlaying"] == "y" and layout["yaxis2"]["side"] == "right"
    assert layout["yaxis2"]["tickformat"] == "d" and layout["yaxis2"]["showgrid"] is False


def test_activity_of_a_shorter_series_has_as_many_points():
    figure = charts.activity_figure(viz(14))
    assert [len(t["x"]) for t in figure["data"]] == [14, 14]


# ----- progress markers -------------------------------------------------------------------------------------


def test_markers_have_one_row_per_type_named_with_its_count():
    points = [marker("skill_acquired" if n % 2 else "insight", f"2026-02-{n + 1:02d} 18:00") for n in range(20)]
    figure = charts.markers_figure(timeline(points))
    assert [t["name"] for t in figure["data"]] == [
        "milestone (0)",
        "breakthrough (0)",
        "skill acquired (10)",
        "goal achieved (0)",
        "setback overcome (0)",
        "insight (10)",
        "therapeutic goal (0)",
    ]
    assert sum(len(t["x"]) for t in figure["data"]) == 20
    skills = by_name(figure, "skill acquired (10)")
    assert skills["x"][0] == "2026-02-02 18:00" and set(skills["y"]) == {"skill acquired"}
    assert skills["mode"] == "markers"
    assert skills["marker"] == {"symbol": "circle", "size": 9, "opacity": 0.8}
    assert "color" not in skills["marker"]  # plotly.js's default colorway, one colour per type
    assert [t["marker"]["symbol"] for t in figure["data"]] == [
        "square",
        "star",
        "circle",
        "triangle-up",
        "cross",
        "diamond",
        "x",
    ]
    assert skills["hovertemplate"] == (
        "%{x}<br>skill acquired<br>%{customdata[0]}<br>value %{customdata[1]}<extra></extra>"
    )
    assert skills["customdata"][0] == ["", 0.5]
    empty = by_name(figure, "milestone (0)")
    assert empty["x"] == [] and empty["y"] == []

    layout = figure["layout"]
    assert layout["height"] == 280 and layout["showlegend"] is False
    assert layout["margin"] == {"l": 130, "r": 16, "t": 10, "b": 40}
    assert layout["yaxis"] == {
        "type": "category",
        "categoryorder": "array",
        "categoryarray": [t.replace("_", " ") for t in MARKER_TYPES],
        "fixedrange": True,
    }
    assert layout["xaxis"]["type"] == "date" and layout["xaxis"]["showgrid"] is True


def test_a_marker_description_is_escaped_in_the_hover_label_and_never_a_template():
    figure = charts.markers_figure(
        timeline(
            [marker("breakthrough", "2026-02-01 18:00", HOSTILE, 0.9), marker("insight", "2026-02-02 18:00", None)]
        )
    )
    breakthrough = by_name(figure, "breakthrough (1)")
    description, value = breakthrough["customdata"][0]
    assert description == "&lt;b&gt;bold&lt;/b&gt; &lt;a href=x&gt;link&lt;/a&gt; %{x}"
    assert "<" not in description and ">" not in description
    assert value == 0.9
    # The description is data the template points at, never part of the template itself.
    assert "bold" not in breakthrough["hovertemplate"] and breakthrough["hovertemplate"].count("%{") == 3
    assert by_name(figure, "insight (1)")["customdata"][0][0] == ""  # no description


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("Finished the breathing exercise", "Finished the breathing exercise"),
        ("a & b", "a &amp; b"),
        ("&lt;b&gt;", "&amp;lt;b&amp;gt;"),  # an entity in the text stays text
        ('"quoted" it\'s', '"quoted" it\'s'),  # quotes are harmless in a label (no &quot;: plotly shows it raw)
        ("line<br>break", "line&lt;br&gt;break"),
        (None, ""),
    ],
)
def test_hover_safe(text, escaped):
    assert charts.hover_safe(text) == escaped


# ----- outcomes ---------------------------------------------------------------------------------------------


def test_phq9_traces_points_and_item9_row():
    figure = charts.outcome_figure(instrument(PHQ9, PHQ9_SCORES))
    assert [t["name"] for t in figure["data"]] == [
        "PHQ-9 total",
        "▼ Reliable improvement (6+ down from first)",
        "▲ Reliable deterioration (6+ up from first)",
        "◆ Item 9 answered above 0",
        "Item 9 answers",
    ]
    total = by_name(figure, "PHQ-9 total")
    assert total["mode"] == "lines+markers"
    assert total["x"] == [x for x, _, _ in PHQ9_SCORES] and total["y"] == [19, 17, 9, 12, 5]
    assert total["line"] == {"color": "#2f6f8f", "width": 2.5}
    assert total["marker"] == {"color": "#2f6f8f", "size": 8, "symbol": "circle"}
    assert total["customdata"] == [
        ["Moderately severe", "—", "—"],
        ["Moderately severe", "−2", "−2"],
        ["Mild", "−8", "−10"],
        ["Moderate", "+3", "−7"],
        ["Mild", "−7", "−14"],
    ]
    assert total["hovertemplate"] == (
        "%{x}<br><b>PHQ-9 %{y}</b> (%{customdata[0]})<br>Change from previous: %{customdata[1]}"
        "<br>Change from first: %{customdata[2]}<extra></extra>"
    )

    improved = by_name(figure, "▼ Reliable improvement (6+ down from first)")
    assert improved["x"] == [x for x, _, _ in PHQ9_SCORES[2:]] and improved["y"] == [9, 12, 5]
    assert improved["marker"] == {
        "symbol": "triangle-down",
        "size": 15,
        "color": "#2e7d4f",
        "line": {"color": "#ffffff", "width": 1},
    }
    assert improved["hovertemplate"] == "%{x}<br>Reliable improvement from the first score<extra></extra>"
    worsened = by_name(figure, "▲ Reliable deterioration (6+ up from first)")
    assert worsened["x"] == worsened["y"] == []
    assert worsened["marker"]["symbol"] == "triangle-up" and worsened["marker"]["color"] == "#9a4a00"

    risky = by_name(figure, "◆ Item 9 answered above 0")
    assert risky["x"] == ["2026-01-19 09:00"] and risky["y"] == [17] and risky["customdata"] == [1]
    assert risky["marker"]["symbol"] == "diamond" and risky["marker"]["color"] == "#a4262c"
    assert risky["hovertemplate"] == "%{x}<br>Item 9 answered %{customdata} (of 3)<extra></extra>"

    answers = by_name(figure, "Item 9 answers")
    assert answers["mode"] == "text"
    assert answers["text"] == ["0", "<b>◆1</b>", "0", "–", "0"]
    assert answers["y"] == [-2.2] * 5
    assert answers["textfont"] == {"size": 12, "color": ["#5b6675", "#a4262c", "#5b6675", "#5b6675", "#5b6675"]}
    assert answers["hovertemplate"] == "%{x}<br>Item 9: %{text}<extra></extra>"


def test_phq9_bands_caseness_line_and_labels():
    layout = charts.outcome_figure(instrument(PHQ9, PHQ9_SCORES))["layout"]
    shapes = layout["shapes"]
    assert len(shapes) == 6  # 5 bands + the caseness line
    bands = [(s["y0"], s["y1"], s["fillcolor"]) for s in shapes[:5]]
    assert bands == [
        (0, 4.5, "#eaf4ee"),
        (4.5, 9.5, "#f4f3e3"),
        (9.5, 14.5, "#fbeedb"),
        (14.5, 19.5, "#f9e2d6"),
        (19.5, 27.5, "#f5d7d7"),
    ]
    assert all(s["type"] == "rect" and s["layer"] == "below" and s["line"] == {"width": 0} for s in shapes[:5])
    assert all((s["xref"], s["x0"], s["x1"], s["yref"]) == ("paper", 0, 1, "y") for s in shapes)
    assert shapes[5] == {
        "type": "line",
        "xref": "paper",
        "yref": "y",
        "x0": 0,
        "x1": 1,
        "y0": 9.5,
        "y1": 9.5,
        "line": {"color": "#1f2a37", "width": 1.5, "dash": "dash"},
    }

    notes = layout["annotations"]
    assert [a["text"] for a in notes] == [
        "Item 9",
        "Minimal",
        "Mild",
        "Moderate",
        "Moderately severe",
        "Severe",
        "Caseness (10+)",
    ]
    assert notes[0]["y"] == -2.2 and notes[0]["xanchor"] == "right" and notes[0]["x"] == 0
    assert [a["y"] for a in notes[1:6]] == [2, 7, 12, 17, 23.5]
    assert all(a["x"] == 1 and a["xanchor"] == "left" and a["showarrow"] is False for a in notes[1:6])
    caseness = notes[6]
    assert caseness["y"] == 9.5 and caseness["yanchor"] == "bottom" and caseness["bgcolor"] == "rgba(255,255,255,0.8)"

    assert layout["height"] == 360 and layout["showlegend"] is False and layout["hovermode"] == "closest"
    assert layout["margin"] == {"l": 56, "r": 130, "t": 12, "b": 40}
    assert layout["yaxis"]["title"]["text"] == "Total (0–27)"
    assert layout["yaxis"]["range"] == [-3.6, 27.8]  # room for the item-9 row under the axis
    assert layout["yaxis"]["tickvals"] == [0, 5, 10, 15, 20, 25]
    assert layout["yaxis"]["zeroline"] is False and layout["yaxis"]["fixedrange"] is True
    # 70 days of scores: 4% of the span (2 days 19:12) on each side.
    assert layout["xaxis"]["range"] == ["2026-01-02 13:48", "2026-03-19 04:12"]
    assert layout["xaxis"]["type"] == "date" and layout["xaxis"]["ticks"] == "outside"


def test_gad7_has_no_item_row():
    figure = charts.outcome_figure(instrument(GAD7, GAD7_SCORES))
    assert [t["name"] for t in figure["data"]] == [
        "GAD-7 total",
        "▼ Reliable improvement (4+ down from first)",
        "▲ Reliable deterioration (4+ up from first)",
    ]
    assert len(by_name(figure, "▼ Reliable improvement (4+ down from first)")["x"]) == 2  # 15 → 11, 15 → 6
    layout = figure["layout"]
    assert len(layout["shapes"]) == 5  # 4 bands + the caseness line
    assert [a["text"] for a in layout["annotations"]] == ["Minimal", "Mild", "Moderate", "Severe", "Caseness (8+)"]
    assert layout["yaxis"]["range"] == [-0.5, 21.8]
    assert layout["yaxis"]["title"]["text"] == "Total (0–21)"


def test_a_single_score_gets_a_week_either_side_and_a_deterioration_is_marked():
    one = charts.outcome_figure(instrument(GAD7, [("2026-01-05 09:00", 8, None)]))
    assert one["layout"]["xaxis"]["range"] == ["2025-12-29 09:00", "2026-01-12 09:00"]
    assert len(by_name(one, "GAD-7 total")["x"]) == 1

    worse = charts.outcome_figure(instrument(PHQ9, [("2026-01-05 09:00", 5, 0), ("2026-01-09 13:37", 14, 3)]))
    assert by_name(worse, "▲ Reliable deterioration (6+ up from first)")["y"] == [14]
    assert by_name(worse, "PHQ-9 total")["customdata"][1] == ["Moderate", "+9", "+9"]
    assert by_name(worse, "Item 9 answers")["text"] == ["0", "<b>◆3</b>"]
    assert worse["layout"]["xaxis"]["range"] == ["2025-12-29 09:00", "2026-01-16 13:37"]


@pytest.mark.parametrize(("value", "text"), [(None, "—"), (3, "+3"), (-2, "−2"), (0, "0"), (1.5, "+1.5"), (-4.0, "−4")])
def test_signed(value, text):
    assert charts.signed(value) == text


# ----- the template filters ---------------------------------------------------------------------------------


def test_the_template_filters_embed_the_figures_as_json_script():
    template = Template(
        '{% load charts %}{{ viz|activity_figure|json_script:"a" }}{{ markers|markers_figure|json_script:"m" }}'
        '{{ outcome|outcome_figure|json_script:"o" }}'
    )
    html = template.render(
        Context(
            {
                "viz": viz(30),
                "markers": timeline([marker("insight", "2026-02-01 18:00", HOSTILE)]),
                "outcome": instrument(PHQ9, PHQ9_SCORES),
            }
        )
    )
    assert html.count('type="application/json"') == 3
    assert "<b>" not in html and "<a " not in html  # json_script escapes < > & as well
    assert '"Sessions (bars, left axis)"' in html and '"PHQ-9 total"' in html
