"""Display of outcome values: rates with their counts, unknown as unknown, never colour alone."""

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from reports.selectors import REPORT_INSTRUMENTS

register = template.Library()


@register.filter
def percent(rate) -> str:
    """0.5333 → "53.3%"; None (no denominator) → "—"; a suppressed cell ("<5") as it is."""
    if isinstance(rate, str):
        return rate
    return "—" if rate is None else f"{rate * 100:.1f}%"


@register.filter
def signed(value) -> str:
    """A change with its sign: −6, +4, 0; None → "—". Uses a true minus sign. A suppressed cell as it is."""
    if isinstance(value, str):
        return value
    if value is None:
        return "—"
    text = f"{abs(value):.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(abs(value))
    return ("−" if value < 0 else "+" if value > 0 else "") + text


@register.filter
def decimal(value, places: int = 1) -> str:
    if isinstance(value, str):  # a suppressed cell ("<5")
        return value
    if value is None:
        return "—"
    return f"{value:.{int(places)}f}".replace("-", "−")


@register.filter
def band(name) -> str:
    """moderately_severe → "Moderately severe"; None → "—"."""
    return "—" if name is None else name.replace("_", " ").capitalize()


@register.simple_tag
def flag(value, tone: str = "") -> str:
    """Yes / No / Unknown as text (a badge for yes when `tone` is good, bad or risk)."""
    if value is None:
        return format_html('<span class="flag flag--unknown" title="{}">Unknown</span>', "Not enough scores to tell")
    if value:
        css = {"good": "badge badge--ok", "bad": "badge badge--warn", "risk": "badge badge--risk"}.get(tone, "flag")
        return format_html('<span class="{}">Yes</span>', css)
    return mark_safe('<span class="flag">No</span>')  # noqa: S308 (a constant)


@register.simple_tag
def measure_rows(outcome) -> list[tuple[str, dict]]:
    """[(instrument name, that measure's classification)] in report order."""
    return [(instrument.name, outcome[instrument.code]) for instrument in REPORT_INSTRUMENTS]
