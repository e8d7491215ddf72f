from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tracking.models import Clinic
from tracking.services import clinic_create


class Command(BaseCommand):
    help = "Create a clinic (the tenant boundary)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--timezone", default="UTC", help="IANA time zone, e.g. Europe/London (default UTC)")

    def handle(self, *args, slug, name, timezone, **options):
        if Clinic.objects.filter(slug=slug).exists():
            raise CommandError(f"A clinic with slug {slug!r} already exists.")
        try:
            clinic = clinic_create(slug=slug, name=name, timezone_name=timezone)
        except ValidationError as error:
            raise CommandError("; ".join(f"{f}: {' '.join(m)}" for f, m in error.message_dict.items())) from None
        self.stdout.write(self.style.SUCCESS(f"Created clinic {clinic.slug} ({clinic.name}, {clinic.timezone})."))
