"""Shared pieces of the operator commands: clear errors and a non-zero exit on bad input."""

from datetime import date

from django.core.management.base import CommandError

from tracking.models import Clinic


def clinic_by_slug(slug: str) -> Clinic:
    try:
        return Clinic.objects.get(slug=slug)
    except Clinic.DoesNotExist:
        raise CommandError(
            f"No clinic with slug {slug!r}. Create it with: manage.py create_clinic {slug} --name NAME"
        ) from None


def percentile(samples: list[float], q: float) -> float:
    """The benchmarks' percentile: the sample at rank q (0–1) of the ordered samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def date_option(value: str) -> date:
    """A --from/--to value: YYYY-MM-DD, or a clear error."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date; expected YYYY-MM-DD.") from None
