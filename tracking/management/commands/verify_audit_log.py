"""`manage.py verify_audit_log [--clinic SLUG]` (DESIGN §6, §7): recomputes every chain and checks the
signed heads in AUDIT_HEAD_DIR. Exit 0 and `audit log intact: N events in K chains`, or exit 1 and one
`audit log broken: event ID (chain C, seq S): REASON` line per broken chain."""

import sys

from django.core.management.base import BaseCommand

from tracking import audit
from tracking.management.commands._base import clinic_by_slug


class Command(BaseCommand):
    help = "Verify the audit log's hash chains and the exported signed heads."

    def add_arguments(self, parser):
        parser.add_argument("--clinic", help="only this clinic's chain (slug)")

    def handle(self, *args, clinic, **options):
        only = [clinic_by_slug(clinic).slug] if clinic else None
        results = audit.verify_chains(only)
        broken = [r.broken for r in results if r.broken is not None]
        events = sum(r.events for r in results)
        if broken:
            for item in broken:
                self.stdout.write(str(item))
            sys.exit(1)
        self.stdout.write(f"audit log intact: {events} events in {len(results)} chains")
