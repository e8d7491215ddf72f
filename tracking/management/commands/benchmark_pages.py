"""Server time of the dashboard pages on the current database (run it on the seed_demo cohort):

    DATABASE_URL=postgres://... manage.py benchmark_pages

Measures, in-process through Django's test client (no network, no browser), the caseload of a therapist
with 100 patients and the page of the patient with the most history, p50/p95 over --iterations. The
patient page is measured cold (cache emptied before each request) and warm. Then the caseload's
deteriorating filter again with 5 times the caseload (500 patients by default, if the clinic has them),
with the ratio: the filter's cost should not grow with the caseload (target within ±20%). The clinic's
deteriorating patients are assigned first, so that both filtered pages show the same number of rows and
the ratio measures the filter, not a fuller page. Creates the user `bench.therapist` (and its
assignments) the first time.
"""

import statistics
import time

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Exists, F, OuterRef, Q
from django.test import Client

from reports.instruments import GAD7, PHQ9
from reports.models import OutcomeSummary
from tracking import recompute
from tracking.management.commands._base import percentile
from tracking.models import CareAssignment, Membership, Patient, Role

BENCH_USER = "bench.therapist"


class Command(BaseCommand):
    help = "Time the caseload (100 patients) and the busiest patient's page (see the module docstring)."

    def add_arguments(self, parser):
        parser.add_argument("--iterations", type=int, default=100)
        parser.add_argument("--caseload", type=int, default=100)

    def handle(self, *args, iterations, caseload, **options):
        subject = Patient.objects.select_related("clinic").annotate(n=Count("sessions")).order_by("-n").first()
        if subject is None:
            raise CommandError("No patient to measure: run seed_demo first.")
        user, _ = get_user_model().objects.get_or_create(username=BENCH_USER)
        Membership.objects.get_or_create(user=user, clinic=subject.clinic, defaults={"role": Role.THERAPIST})
        self.assign(user, subject, caseload)
        client = Client(SERVER_NAME="localhost")
        client.force_login(user)
        self.stdout.write(f"caseload of {caseload} patients; patient {subject.player_id} with {subject.n} sessions")

        def measure(name: str, url: str, before=None):
            samples = []
            for _ in range(iterations):
                if before:
                    before()
                started = time.perf_counter()
                response = client.get(url)
                samples.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise CommandError(f"{url} answered {response.status_code}")
            self.stdout.write(
                f"{name:42} p50 {statistics.median(samples):7.1f} ms   p95 {percentile(samples, 0.95):7.1f} ms"
                f"   (n={iterations}, target p95 <= 150 ms)"
            )
            return statistics.median(samples)

        measure("caseload (page 1, sorted by dropout risk)", "/?sort=-risk")
        few = measure("caseload (filter: deteriorating)", "/?filter=deteriorating")
        page = f"/patients/{subject.player_id}/"
        measure("patient page, cold cache", page, before=cache.clear)
        measure("patient page, warm cache", page)
        larger = self.assign(user, subject, caseload * 5)
        if larger > caseload:
            many = measure(f"caseload of {larger} (filter: deteriorating)", "/?filter=deteriorating")
            self.stdout.write(
                f"deteriorating filter, {larger} against {caseload} patients: {many / few:.2f}x (target 0.8-1.2x)"
            )

    @staticmethod
    def assign(user, subject: Patient, caseload: int) -> int:
        """Assign `user` the subject and the clinic's first other patients, up to `caseload` (analytics
        computed); the number assigned."""
        deteriorating = Exists(
            OutcomeSummary.objects.filter(patient=OuterRef("pk")).filter(
                Q(instrument=PHQ9.code, latest_total__gte=F("first_total") + PHQ9.reliable_change)
                | Q(instrument=GAD7.code, latest_total__gte=F("first_total") + GAD7.reliable_change)
            )
        )
        patients = list(
            Patient.objects.filter(clinic=subject.clinic)
            .exclude(pk=subject.pk)
            .order_by(deteriorating.desc(), "pk")[: caseload - 1]
        )
        CareAssignment.objects.bulk_create(
            [CareAssignment(patient=p, therapist=user) for p in [subject, *patients]], ignore_conflicts=True
        )
        recompute.patients_recompute([subject.pk, *(p.pk for p in patients)])
        return 1 + len(patients)
