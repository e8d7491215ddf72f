"""`manage.py export_audit_head` (DESIGN §6, §7): writes the signed head of every chain to AUDIT_HEAD_DIR,
outside the database, so that a tail cut off the log can be seen later. Beat runs it each night."""

from django.core.management.base import BaseCommand

from tracking import audit


class Command(BaseCommand):
    help = "Write every audit chain's head (chain, seq, hash, at), signed with AUDIT_SIGNING_KEY."

    def handle(self, *args, **options):
        path = audit.export_heads()
        self.stdout.write(f"wrote the signed heads of {len(audit.chains())} chains to {path}")
