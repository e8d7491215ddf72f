from django.core.management.base import BaseCommand

from tracking.management.commands._base import clinic_by_slug
from tracking.services import ingest_token_create


class Command(BaseCommand):
    help = "Create an ingest token for a clinic's game server. The token is printed once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("--clinic", required=True, help="clinic slug")
        parser.add_argument("--name", required=True, help="what the token is for, e.g. 'game-server-prod'")

    def handle(self, *args, clinic, name, **options):
        token, raw = ingest_token_create(clinic=clinic_by_slug(clinic), name=name)
        self.stderr.write(f"Token {token.name!r} for {clinic}. Store it now; it cannot be shown again:")
        self.stdout.write(raw)
