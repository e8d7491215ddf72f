"""The patient page's break-glass banner: the reason of the therapist's active grant, and its end."""

from zoneinfo import ZoneInfo

from django import template

from tracking import access

register = template.Library()


@register.simple_tag
def break_glass_reason(user, patient) -> str:
    """The reason the user gave for their emergency access to this patient, while it lasts (one query;
    asked only on a page opened through break-glass)."""
    grant = access.active_break_glass(user, patient)
    return grant.reason if grant else ""


@register.filter
def clock(value, tz_name: str) -> str:
    """'14:05' in the time zone `tz_name`."""
    return value.astimezone(ZoneInfo(tz_name)).strftime("%H:%M") if value else ""
