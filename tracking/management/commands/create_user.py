import getpass
import os

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tracking.management.commands._base import clinic_by_slug
from tracking.models import Role
from tracking.services import user_create


class Command(BaseCommand):
    help = "Create a staff user with one role in one clinic. Password from $NEW_USER_PASSWORD or a prompt."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--clinic", required=True, help="clinic slug")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--email", default="")

    def handle(self, *args, username, clinic, role, email, **options):
        clinic_obj = clinic_by_slug(clinic)
        if get_user_model().objects.filter(username=username).exists():
            raise CommandError(f"A user named {username!r} already exists.")
        password = os.environ.get("NEW_USER_PASSWORD") or self._prompt_password()
        try:
            password_validation.validate_password(password, get_user_model()(username=username, email=email))
        except ValidationError as error:
            raise CommandError("Password rejected: " + " ".join(error.messages)) from None
        user_create(username=username, clinic=clinic_obj, role=role, password=password, email=email)
        self.stdout.write(self.style.SUCCESS(f"Created {role} {username} in {clinic_obj.slug}."))

    def _prompt_password(self) -> str:
        try:
            first = getpass.getpass("Password: ")
            second = getpass.getpass("Password (again): ")
        except (EOFError, KeyboardInterrupt):
            raise CommandError("No password: set NEW_USER_PASSWORD or run interactively.") from None
        if not first or first != second:
            raise CommandError("Passwords were empty or did not match.")
        return first
