"""Server time of the dashboard pages on the current database (run it on the seed_demo cohort):

    DATABASE_URL=postgres://... manage.py benchmark_pages

Measures, in-process through Django's test client (no network, no browser), the caseload of a therapist
with 100 patients and the page of the patient with the most history, p50/p95 over --iterations. The
patient page is measured cold (cache emptied before each request) and warm. Then the caseload's
deteriorating filter for a second therapist with 5 times the caseload (500 patients by default, if the
clinic has them), the two caseloads' requests interleaved, with the ratio: the filter's cost should not
grow with the caseload (target within ±20%). Both caseloads hold the same deteriorating patients (half
the smaller caseload), the rest are patients who are not, so that both filtered pages find the same rows
and the ratio measures the filter, not a longer list: with the deteriorating patients assigned first,
as before, a clinic with 573 of them gave the larger caseload 499 rows to the smaller one's 100.
Creates the users `bench.therapist` and `bench.therapist.5x` (and their assignments) the first time.
"""

import statistics
import time

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Exists, OuterRef
from django.test import Client

from reports.models import OutcomeSummary
from tracking import recompute
from tracking.management.commands._base import percentile, refresh_statistics
from tracking.models import CareAssignment, Membership, Patient, Role

BENCH_USER = "bench.therapist"
BENCH_USER_5X = "bench.therapist.5x"


class Command(BaseCommand):
    help = "Time the caseload (100 patients) and the busiest patient's page (see the module docstring)."

    def add_arguments(self, parser):
        parser.add_argument("--iterations", type=int, default=100)
        parser.add_argument("--caseload", type=int, default=100)

    def handle(self, *args, iterations, caseload, **options):
        subject = Patient.objects.select_related("clinic").annotate(n=Count("sessions")).order_by("-n").first()
        if subject is None:
            raise CommandError("No patient to measure: run seed_demo first.")
        client, _ = self.client_of(BENCH_USER, subject, caseload, caseload // 2)
        self.stdout.write(f"caseload of {caseload} patients; patient {subject.player_id} with {subject.n} sessions")

        def measure(name: str, url: str, before=None) -> None:
            samples = []
            for _ in range(iterations):
                if before:
                    before()
                samples.append(self.timed(client, url))
            self.report(name, samples)

        measure("caseload (page 1, sorted by dropout risk)", "/?sort=-risk")
        measure("caseload (filter: deteriorating)", "/?filter=deteriorating")
        page = f"/patients/{subject.player_id}/"
        measure("patient page, cold cache", page, before=cache.clear)
        measure("patient page, warm cache", page)

        larger_client, larger = self.client_of(BENCH_USER_5X, subject, caseload * 5, caseload // 2)
        if larger > caseload:
            # Interleaved, so that the machine's changes of speed during the run move both alike.
            few, many = [], []
            for _ in range(iterations):
                few.append(self.timed(client, "/?filter=deteriorating"))
                many.append(self.timed(larger_client, "/?filter=deteriorating"))
            self.report(f"caseload of {caseload} (filter: deteriorating)", few)
            self.report(f"caseload of {larger} (filter: deteriorating)", many)
            self.stdout.write(
                f"deteriorating filter, {larger} against {caseload} patients: "
                f"{statistics.median(many) / statistics.median(few):.2f}x (target 0.8-1.2x)"
            )

    def client_of(self, username: str, subject: Patient, caseload: int, deteriorating: int) -> tuple[Client, int]:
        """A test client logged in as `username`, given its caseload (see `assign`), and how many it holds."""
        user, _ = get_user_model().objects.get_or_create(username=username)
        Membership.objects.get_or_create(user=user, clinic=subject.clinic, defaults={"role": Role.THERAPIST})
        assigned = self.assign(user, subject, caseload, deteriorating)
        client = Client(SERVER_NAME="localhost")
        client.force_login(user)
        return client, assigned

    @staticmethod
    def timed(client: Client, url: str) -> float:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise CommandError(f"{url} answered {response.status_code}")
        return elapsed

    def report(self, name: str, samples: list[float]) -> None:
        self.stdout.write(
            f"{name:42} p50 {statistics.median(samples):7.1f} ms   p95 {percentile(samples, 0.95):7.1f} ms"
            f"   (n={len(samples)}, target p95 <= 150 ms)"
        )

    @staticmethod
    def assign(user, subject: Patient, caseload: int, deteriorating_count: int) -> int:
        """Assign `user` the subject, the clinic's first `deteriorating_count` deteriorating patients and
        other patients up to `caseload`, and no others (analytics computed); the number assigned."""
        deteriorating = Exists(OutcomeSummary.objects.filter(patient=OuterRef("pk"), reliably_worse=True))
        others = Patient.objects.filter(clinic=subject.clinic).exclude(pk=subject.pk).order_by("pk")
        patients = list(others.filter(deteriorating)[:deteriorating_count])
        patients += others.exclude(deteriorating)[: caseload - 1 - len(patients)]
        chosen = [subject, *patients]
        # Exactly this caseload: an earlier run (or version of this command) may have assigned more.
        CareAssignment.objects.filter(therapist=user).exclude(patient__in=chosen).delete()
        CareAssignment.objects.bulk_create(
            [CareAssignment(patient=p, therapist=user) for p in chosen], ignore_conflicts=True
        )
        recompute.patients_recompute([p.pk for p in chosen])
        # As autovacuum would by the time a therapist looks (it may be off here): planned on the statistics
        # of the assignments before this change, the caseload query expects one patient, not 500.
        refresh_statistics([CareAssignment])
        return len(chosen)
