from django import template
from django.utils.http import urlencode

register = template.Library()


@register.inclusion_tag("tracking/_sort_header.html", takes_context=True)
def sort_header(context, label: str, key: str, query):
    """A column header that sorts by `key`, toggling the direction when it is already the sort."""
    active = query.sort == key
    descending = active and not query.descending
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
def iso_minutes(value: str) -> str:
    """'2026-11-20T12:00:00+00:00' → '2026-11-20 12:00' (for ISO strings stored in read models)."""
    return str(value or "")[:16].replace("T", " ")
