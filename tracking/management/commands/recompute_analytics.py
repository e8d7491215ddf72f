from django.core.management.base import BaseCommand, CommandError

from tracking.management.commands._base import clinic_by_slug
from tracking.models import Patient
from tracking.progress import patient_recompute


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
        for n, patient_id in enumerate(ids, start=1):
            patient_recompute(patient_id)
            if n % 500 == 0:
                self.stderr.write(f"{n}/{len(ids)} patients")
        self.stdout.write(self.style.SUCCESS(f"Recomputed analytics of {len(ids)} patient(s)."))
