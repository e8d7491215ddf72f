"""Shared pieces of the operator commands: clear errors and a non-zero exit on bad input."""

from django.core.management.base import CommandError

from tracking.models import Clinic


def clinic_by_slug(slug: str) -> Clinic:
    try:
        return Clinic.objects.get(slug=slug)
    except Clinic.DoesNotExist:
        raise CommandError(
            f"No clinic with slug {slug!r}. Create it with: manage.py create_clinic {slug} --name NAME"
        ) from None
