import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from reports import selectors
from reports.exports import csv_text, patient_csv_header, patient_csv_row
from tracking import audit
from tracking.management.commands._base import clinic_by_slug, date_option
from tracking.models import AuditAction, Membership, Patient, Role


class Command(BaseCommand):
    help = (
        "The NHS Talking Therapies outcomes of a clinic's patients (DESIGN §5): JSON "
        '{"patients": [...], "cohort": {...}} or CSV with one row per patient.'
    )

    def add_arguments(self, parser):
        parser.add_argument("--clinic", required=True, help="clinic slug")
        parser.add_argument("--patient", metavar="PLAYER_ID", help="only this patient")
        parser.add_argument("--therapist", metavar="USERNAME", help="only this therapist's caseload")
        parser.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="responses on or after this date")
        parser.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD", help="responses on or before this date")
        parser.add_argument("--format", choices=("json", "csv"), default="json")

    def handle(self, *args, clinic, patient, therapist, date_from, date_to, format, **options):
        clinic_obj = clinic_by_slug(clinic)
        period = selectors.Period(
            date_from=date_option(date_from) if date_from else None, date_to=date_option(date_to) if date_to else None
        )
        if period.date_from and period.date_to and period.date_from > period.date_to:
            raise CommandError(f"--from {period.date_from} is after --to {period.date_to}.")
        if patient is not None and not Patient.objects.filter(clinic=clinic_obj, player_id=patient).exists():
            raise CommandError(f"No patient {patient!r} in clinic {clinic_obj.slug}.")
        therapist_user = self._therapist(clinic_obj, therapist) if therapist else None

        report = selectors.effectiveness_report(clinic_obj, period=period, player_id=patient, therapist=therapist_user)
        # An export of the patients it names (DESIGN §7), recorded before anything is written out.
        audit.audit_record(
            chain=clinic_obj.slug,
            actor=audit.SYSTEM_ACTOR,
            action=AuditAction.EXPORT,
            patients=[row["player_id"] for row in report["patients"]],
            detail={
                "command": "effectiveness_report",
                "format": format,
                "from": date_from,
                "to": date_to,
                "therapist": therapist,
                "patient": patient,
            },
        )
        if format == "json":
            self.stdout.write(json.dumps(report, indent=2))
            return
        # Written as the web export writes it (reports/exports.py): formulas guarded, and RFC 4180 line
        # ends, so a stray carriage return inside a value is quoted rather than splitting the row.
        rows = [patient_csv_header(), *(patient_csv_row(row) for row in report["patients"])]
        self.stdout.write(csv_text(rows), ending="")

    @staticmethod
    def _therapist(clinic, username: str):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user {username!r}.")
        membership = Membership.objects.filter(clinic=clinic, user=user).first()
        if membership is None or membership.role != Role.THERAPIST:
            raise CommandError(f"{username!r} is not a therapist of clinic {clinic.slug}.")
        return user
