from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tracking.management.commands._base import clinic_by_slug
from tracking.models import Role
from tracking.people import PeopleError, role_set


class Command(BaseCommand):
    help = "Set a user's role in a clinic (they join the clinic if they were not a member). Audited."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--clinic", required=True, help="clinic slug")
        parser.add_argument("--role", required=True, help=f"one of {', '.join(Role.values)}")

    def handle(self, *args, username, clinic, role, **options):
        if role not in Role.values:
            raise CommandError(f"Unknown role {role!r}; choose one of {', '.join(Role.values)}.")
        clinic_obj = clinic_by_slug(clinic)
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(
                f"No user named {username!r}. Create one with: "
                f"manage.py create_user {username} --clinic {clinic} --role {role}"
            )
        before = user.memberships.filter(clinic=clinic_obj).values_list("role", flat=True).first()
        try:
            role_set(clinic=clinic_obj, user=user, role=role)
        except PeopleError as error:
            raise CommandError(error.message_text) from None
        if before == role:
            self.stdout.write(f"{username} is already {role} in {clinic_obj.slug}; nothing changed.")
        else:
            self.stdout.write(self.style.SUCCESS(f"{username}: {before or 'no role'} → {role} in {clinic_obj.slug}."))
