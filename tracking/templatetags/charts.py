"""The pages' Plotly figures (tracking/charts.py), for embedding with json_script:
`{% load charts %}{{ viz|activity_figure|json_script:"activity-figure" }}`. static/js/charts.js draws them."""

from typing import Any

from django import template

from tracking import charts

register = template.Library()


@register.filter
def activity_figure(viz: dict[str, Any]) -> charts.Figure:
    """The activity chart of a ProgressVizSeries (every day of it; the page shows the last 14/30/90)."""
    return charts.activity_figure(viz)


@register.filter
def markers_figure(timeline: dict[str, Any]) -> charts.Figure:
    """The progress-marker timeline of `tracking.selectors.markers_timeline`."""
    return charts.markers_figure(timeline)


@register.filter
def outcome_figure(instrument: dict[str, Any]) -> charts.Figure:
    """The chart of one instrument of `reports.selectors.patient_outcome_series(patient)["instruments"]`."""
    return charts.outcome_figure(instrument)
