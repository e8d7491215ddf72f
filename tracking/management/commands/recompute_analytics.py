from django.core.management.base import BaseCommand, CommandError

from tracking.management.commands._base import clinic_by_slug
from tracking.models import Patient
from tracking.recompute import patients_recompute

CHUNK = 200  # patients per transaction


class Command(BaseCommand):
    help = (
        "Recompute stored analytics (summary, milestones, recommendations) in this process. By default only "
        "patients whose data changed since their last computation; --all recomputes every patient."
    )

    def add_arguments(self, parser):
        parser.add_argument("--clinic", help="clinic slug (default: every clinic)")
        parser.add_argument("--all", action="store_true", help="every patient, not only those with changed data")
        parser.add_argument("--patient", help="one player id (needs --clinic)")

    def handle(self, *args, clinic, all, patient, **options):
        patients = Patient.objects.all()
        if clinic:
            patients = patients.filter(clinic=clinic_by_slug(clinic))
        if patient:
            if not clinic:
                raise CommandError("--patient needs --clinic (player ids are unique per clinic).")
            patients = patients.filter(player_id=patient)
            if not patients.exists():
                raise CommandError(f"No patient {patient!r} in clinic {clinic}.")
        elif not all:
            patients = patients.stale_analytics()
        ids = list(patients.order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(ids), CHUNK):
            patients_recompute(ids[start : start + CHUNK])
            if len(ids) > CHUNK:
                self.stderr.write(f"{min(start + CHUNK, len(ids))}/{len(ids)} patients")
        self.stdout.write(self.style.SUCCESS(f"Recomputed analytics of {len(ids)} patient(s)."))
