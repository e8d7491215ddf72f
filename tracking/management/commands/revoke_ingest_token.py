from django.core.management.base import BaseCommand, CommandError

from tracking.management.commands._base import clinic_by_slug
from tracking.services import ingest_token_revoke


class Command(BaseCommand):
    help = "Revoke a clinic's ingest token by name (or by its first characters, as printed when created)."

    def add_arguments(self, parser):
        parser.add_argument("--clinic", required=True, help="clinic slug")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--name", help="the token's name")
        which.add_argument("--prefix", help="the token's first characters, e.g. pt_AbC123")

    def handle(self, *args, clinic, name, prefix, **options):
        tokens = clinic_by_slug(clinic).ingest_tokens.filter(revoked_at__isnull=True)
        tokens = tokens.filter(name=name) if name else tokens.filter(prefix__startswith=prefix[:10])
        found = list(tokens)
        if not found:
            raise CommandError(
                f"No active token {'named ' + repr(name) if name else 'starting ' + repr(prefix)} in {clinic}."
            )
        if len(found) > 1:
            raise CommandError(f"{len(found)} active tokens match; give --prefix to choose one.")
        ingest_token_revoke(token=found[0])
        self.stdout.write(self.style.SUCCESS(f"Revoked token {found[0].name!r} ({found[0].prefix}…) of {clinic}."))
