from django.core.management.base import BaseCommand, CommandError

from tracking.assignment import patient_unassign
from tracking.management.commands._base import clinic_by_slug
from tracking.models import Membership, Patient


class Command(BaseCommand):
    help = (
        "End a therapist's assignment to a patient (by the game's player id): the patient leaves their "
        "caseload. Audited (assignment.change)."
    )

    def add_arguments(self, parser):
        parser.add_argument("player_id")
        parser.add_argument("username")
        parser.add_argument("--clinic", required=True, help="clinic slug")

    def handle(self, *args, player_id, username, clinic, **options):
        clinic_obj = clinic_by_slug(clinic)
        patient = Patient.objects.filter(clinic=clinic_obj, player_id=player_id).select_related("clinic").first()
        if patient is None:
            raise CommandError(f"No patient {player_id!r} in clinic {clinic_obj.slug}.")
        membership = (
            Membership.objects.filter(clinic=clinic_obj, user__username=username).select_related("user").first()
        )
        if membership is None:
            raise CommandError(f"{username!r} is not a member of clinic {clinic_obj.slug}.")
        if not patient_unassign(patient=patient, therapist=membership.user):
            raise CommandError(f"{username!r} is not assigned to {player_id}; nothing changed.")
        self.stdout.write(self.style.SUCCESS(f"Unassigned {player_id} from {username}."))
