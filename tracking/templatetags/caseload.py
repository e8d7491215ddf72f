from datetime import date, datetime
from zoneinfo import ZoneInfo

from django import template
from django.utils.http import urlencode

from tracking.analytics import approach_label

DATE_FORMAT = "%Y-%m-%d"
DATETIME_FORMAT = "%Y-%m-%d %H:%M"

register = template.Library()


@register.inclusion_tag("tracking/_sort_header.html", takes_context=True)
def sort_header(context, label: str, key: str, query):
    """A column header that sorts by `key`, toggling the direction when it is already the sort. The first
    click on a column of risk puts the riskiest first."""
    active = query.sort == key
    descending = not query.descending if active else key in query.RISK_FIRST
    params = [("sort", f"-{key}" if descending else key)] + [("filter", f) for f in sorted(query.filters)]
    state = ("descending" if query.descending else "ascending") if active else "none"
    return {"label": label, "href": "?" + urlencode(params), "aria_sort": state, "active": active}


@register.simple_tag
def filter_toggle_href(query, name: str) -> str:
    filters = set(query.filters) ^ {name}
    params = [("sort", ("-" if query.descending else "") + query.sort)] + [("filter", f) for f in sorted(filters)]
    return "?" + urlencode(params)


@register.filter
def band_label(band: str) -> str:
    return band.replace("_", " ").capitalize()


@register.filter
def local(value, tz_name: str) -> str:
    """The product's one date format, in the patient's time zone: '2026-11-20 14:05', or '2026-11-20'
    for a date. Takes a datetime, a date or an ISO 8601 string (as the read models store them)."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        return value.astimezone(ZoneInfo(tz_name)).strftime(DATETIME_FORMAT)
    return value.strftime(DATE_FORMAT)


@register.filter
def approaches(names) -> str:
    """Therapeutic approaches as clinicians write them: 'CBT, mindfulness'."""
    return ", ".join(approach_label(n) for n in names or ()) or "—"
