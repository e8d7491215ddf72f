from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from tracking.accounts import end_sessions
from tracking.people import PeopleError, user_deactivate


class Command(BaseCommand):
    help = "Deactivate a user: they can no longer log in, and their sessions end now. Audited."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, username, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        if not user.is_active:
            self.stdout.write(f"{username} is already deactivated; nothing changed.")
            return
        try:
            ended = user_deactivate(user=user, end_sessions=end_sessions)
        except PeopleError as error:
            raise CommandError(error.message_text) from None
        self.stdout.write(self.style.SUCCESS(f"Deactivated {username}; {ended} session(s) ended."))
