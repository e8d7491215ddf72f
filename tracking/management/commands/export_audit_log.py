"""`manage.py export_audit_log --clinic SLUG [--from DATE] [--to DATE] --format jsonl|csv` (DESIGN §6):
the chain's events to standard output, one per line or row, with the fields of DESIGN §7. `--clinic
system` exports the system chain. The export is itself audited."""

import csv
import json

from django.core.management.base import BaseCommand, CommandError

from reports.exports import safe_text
from tracking import audit
from tracking.management.commands._base import clinic_by_slug, date_option
from tracking.models import AuditAction


class Command(BaseCommand):
    help = "Export one chain of the audit log as JSON lines or CSV."

    def add_arguments(self, parser):
        parser.add_argument("--clinic", required=True, help="clinic slug, or 'system'")
        parser.add_argument("--from", dest="date_from", metavar="YYYY-MM-DD", help="events on or after this UTC date")
        parser.add_argument("--to", dest="date_to", metavar="YYYY-MM-DD", help="events on or before this UTC date")
        parser.add_argument("--format", choices=("jsonl", "csv"), required=True)

    def handle(self, *args, clinic, date_from, date_to, format, **options):
        chain = audit.SYSTEM_CHAIN if clinic == audit.SYSTEM_CHAIN else clinic_by_slug(clinic).slug
        start = date_option(date_from) if date_from else None
        end = date_option(date_to) if date_to else None
        if start and end and start > end:
            raise CommandError(f"--from {start} is after --to {end}.")
        count = 0
        writer = csv.writer(self.stdout, lineterminator="\r\n") if format == "csv" else None
        if writer:
            writer.writerow(audit.EXPORT_FIELDS)
        for event in audit.events_between(chain, start, end):
            fields = audit.event_fields(event)
            if writer:
                writer.writerow([_csv_cell(fields[name]) for name in audit.EXPORT_FIELDS])
            else:
                self.stdout.write(json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
            count += 1
        audit.audit_record(
            chain=chain,
            actor=audit.SYSTEM_ACTOR,
            action=AuditAction.AUDIT_EXPORT,
            detail={"command": "export_audit_log", "format": format, "from": date_from, "to": date_to, "events": count},
        )


def _csv_cell(value):
    cell = audit.export_cell(value)
    return safe_text(cell) if isinstance(cell, str) else cell
