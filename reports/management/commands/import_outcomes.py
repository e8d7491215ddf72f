from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from reports.importing import COLUMNS, ImportInvalid, outcome_rows_parse
from tracking.ingest import IngestRejected, outcomes_import
from tracking.management.commands._base import clinic_by_slug

MAX_ERRORS_SHOWN = 50


class Command(BaseCommand):
    help = (
        f"Import PHQ-9 / GAD-7 responses from a CSV file with the columns {', '.join(COLUMNS)} (items as "
        "space-separated digits, or empty when only the total is known). All or nothing: a bad line is "
        "reported with its line number and nothing from the file is stored. Importing a file again stores "
        "nothing twice."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="CSV file (UTF-8), header on line 1")
        parser.add_argument("--clinic", required=True, help="clinic slug")

    def handle(self, *args, file, clinic, **options):
        clinic_obj = clinic_by_slug(clinic)
        path = Path(file)
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                items = outcome_rows_parse(handle)
        except FileNotFoundError:
            raise CommandError(f"{file}: no such file.") from None
        except UnicodeDecodeError as exc:
            raise CommandError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
        except ImportInvalid as invalid:
            raise CommandError(self._report(file, [str(e) for e in invalid.errors])) from None

        try:
            result = outcomes_import(clinic=clinic_obj, items=items, file_name=path.name)
        except IngestRejected as rejected:
            lines = [f"line {e['index']}, {e['field']}: {e['reason']}" for e in rejected.errors]
            raise CommandError(self._report(file, lines)) from None
        except IntegrityError:
            raise CommandError(
                f"{file}: a concurrent write stored one of these responses first; nothing was stored. Run it again."
            ) from None

        counts = result.counts["outcomes"]
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {file} into {clinic_obj.slug}: {counts.created} created, {counts.unchanged} unchanged "
                f"({len(items)} rows)."
            )
        )
        if result.new_alert_ids:
            self.stdout.write(
                self.style.WARNING(f"{len(result.new_alert_ids)} urgent alert(s) raised for PHQ-9 item 9 above 0.")
            )

    @staticmethod
    def _report(file: str, lines: list[str]) -> str:
        shown = lines[:MAX_ERRORS_SHOWN]
        more = len(lines) - len(shown)
        text = f"{file}: nothing was stored; {len(lines)} problem(s):\n  " + "\n  ".join(shown)
        return text + (f"\n  … and {more} more." if more else "")
