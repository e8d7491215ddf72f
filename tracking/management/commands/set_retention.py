from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tracking import retention
from tracking.management.commands._base import clinic_by_slug
from tracking.models import RetentionCategory


class Command(BaseCommand):
    help = "Set (--days N) or clear (--clear: keep forever) a clinic's retention policy for one category."

    def add_arguments(self, parser):
        parser.add_argument("--clinic", required=True, help="clinic slug")
        parser.add_argument("--category", required=True, help=f"one of: {', '.join(RetentionCategory.values)}")
        how = parser.add_mutually_exclusive_group(required=True)
        how.add_argument("--days", type=int, help="keep rows this many days")
        how.add_argument("--clear", action="store_true", help="remove the policy: the category is kept")

    def handle(self, *args, clinic, category, days, clear, **options):
        if category not in RetentionCategory.values:
            raise CommandError(
                f"Unknown category {category!r}; expected one of: {', '.join(RetentionCategory.values)}."
            )
        target = clinic_by_slug(clinic)
        if clear:
            if retention.policy_clear(clinic=target, category=category):
                self.stdout.write(self.style.SUCCESS(f"{clinic} {category}: policy cleared, kept forever."))
            else:
                self.stdout.write(f"{clinic} {category}: had no policy, kept forever.")
            return
        try:
            retention.policy_set(clinic=target, category=category, days=days)
        except ValidationError as error:
            messages = error.message_dict if hasattr(error, "error_dict") else {"days": error.messages}
            raise CommandError(" ".join(f"--{key}: {'; '.join(value)}" for key, value in messages.items())) from None
        self.stdout.write(self.style.SUCCESS(f"{clinic} {category}: kept {days} days."))
