from django.core.management.base import BaseCommand, CommandError

from tracking.management.commands._base import clinic_by_slug
from tracking.models import Membership, Patient, Role
from tracking.services import patient_assign


class Command(BaseCommand):
    help = "Assign a patient (by the game's player id) to a therapist of the same clinic."

    def add_arguments(self, parser):
        parser.add_argument("player_id")
        parser.add_argument("username")
        parser.add_argument("--clinic", required=True, help="clinic slug")

    def handle(self, *args, player_id, username, clinic, **options):
        clinic_obj = clinic_by_slug(clinic)
        patient = Patient.objects.filter(clinic=clinic_obj, player_id=player_id).first()
        if patient is None:
            raise CommandError(
                f"No patient {player_id!r} in clinic {clinic_obj.slug}. Patients appear when the game first posts them."
            )
        membership = (
            Membership.objects.filter(clinic=clinic_obj, user__username=username).select_related("user").first()
        )
        if membership is None:
            raise CommandError(f"{username!r} is not a member of clinic {clinic_obj.slug}.")
        if membership.role != Role.THERAPIST:
            raise CommandError(f"{username!r} is a {membership.role}; only therapists can be assigned patients.")
        patient_assign(patient=patient, therapist=membership.user)
        self.stdout.write(self.style.SUCCESS(f"Assigned {player_id} to {username}."))
