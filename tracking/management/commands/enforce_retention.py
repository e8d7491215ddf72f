from django.core.management.base import BaseCommand, CommandError

from tracking import retention
from tracking.management.commands._base import clinic_by_slug


class Command(BaseCommand):
    help = "Remove what aged out under each clinic's retention policies (--dry-run: only count it)."

    def add_arguments(self, parser):
        parser.add_argument("--clinic", help="only this clinic (slug)")
        parser.add_argument("--dry-run", action="store_true", help="count what would be removed; remove nothing")

    def handle(self, *args, clinic, dry_run, **options):
        clinics = [clinic_by_slug(clinic)] if clinic else retention.clinics_with_policies()
        refused = []
        for target in clinics:
            run = retention.enforce_clinic(target, dry_run=dry_run)
            for category, count in sorted(run.counts.items()):
                verb = "would be removed" if dry_run else "removed"
                self.stdout.write(f"{target.slug} {category}: {count} rows {verb}")
            for category, reason in sorted(run.refused.items()):
                refused.append(f"{target.slug} {category}: policy refused, nothing removed: {reason}")
        for line in refused:
            self.stderr.write(line)
        if refused:
            raise CommandError(f"{len(refused)} polic{'y' if len(refused) == 1 else 'ies'} refused (see above).")
