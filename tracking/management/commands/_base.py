"""Shared pieces of the operator commands: clear errors and a non-zero exit on bad input."""

from collections.abc import Iterable
from datetime import date

from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Model

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


def refresh_statistics(models: Iterable[type[Model]], *, vacuum: bool = False) -> None:
    """ANALYZE (with `vacuum`, VACUUM (ANALYZE)) these models' tables on PostgreSQL, as autovacuum would,
    which may be off or late (FINDINGS). VACUUM runs only outside a transaction."""
    if connection.vendor != "postgresql":
        return
    tables = ", ".join(connection.ops.quote_name(m._meta.db_table) for m in models)
    with connection.cursor() as cursor:
        cursor.execute(f"{'VACUUM (ANALYZE)' if vacuum else 'ANALYZE'} {tables}")
