"""Questionnaire answers and risk alerts."""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from reports.instruments import INSTRUMENTS, MAX_ITEMS
from tracking.fields import EncryptedTextField
from tracking.models import Clinic, Patient, row_history

ITEM_FIELDS = [f"item_{n}" for n in range(1, MAX_ITEMS + 1)]


INSTRUMENT_CHOICES = [(i.code, i.name) for i in INSTRUMENTS.values()]


def _items_sum(count: int):
    expression = F("item_1")
    for n in range(2, count + 1):
        expression = expression + F(f"item_{n}")
    return expression


def _response_constraints() -> list[models.BaseConstraint]:
    constraints: list[models.BaseConstraint] = [
        models.UniqueConstraint(fields=["clinic", "response_id"], name="response_id_unique_per_clinic"),
        models.CheckConstraint(condition=Q(instrument__in=list(INSTRUMENTS)), name="response_instrument_known"),
    ]
    for field in ITEM_FIELDS:
        constraints.append(
            models.CheckConstraint(
                condition=Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__gte": 0, f"{field}__lte": 3}),
                name=f"response_{field}_0_3",
            )
        )
    for instrument in INSTRUMENTS.values():
        n = instrument.item_count
        all_null = Q(**{f"item_{i}__isnull": True for i in range(1, MAX_ITEMS + 1)})
        complete = Q(**{f"item_{i}__isnull": False for i in range(1, n + 1)}) & Q(
            **{f"item_{i}__isnull": True for i in range(n + 1, MAX_ITEMS + 1)}
        )
        constraints.append(
            models.CheckConstraint(
                condition=~Q(instrument=instrument.code)
                | (
                    Q(total__gte=instrument.total_min, total__lte=instrument.total_max)
                    & (all_null | (complete & Q(total=_items_sum(n))))
                ),
                name=f"response_{instrument.code}_total_and_items",
            )
        )
    return constraints


@row_history()
class OutcomeResponse(models.Model):
    """One administration of a questionnaire. Item scores are stored when known (one column per item so
    the database can check each one); the total always, and it equals their sum."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="outcome_responses")
    response_id = models.CharField(max_length=128)
    instrument = models.CharField(max_length=8, choices=INSTRUMENT_CHOICES)
    administered_at = models.DateTimeField()
    total = models.PositiveSmallIntegerField()
    item_1 = models.PositiveSmallIntegerField(null=True, blank=True)
    item_2 = models.PositiveSmallIntegerField(null=True, blank=True)
    item_3 = models.PositiveSmallIntegerField(null=True, blank=True)
    item_4 = models.PositiveSmallIntegerField(null=True, blank=True)
    item_5 = models.PositiveSmallIntegerField(null=True, blank=True)
    item_6 = models.PositiveSmallIntegerField(null=True, blank=True)
    item_7 = models.PositiveSmallIntegerField(null=True, blank=True)
    item_8 = models.PositiveSmallIntegerField(null=True, blank=True)
    item_9 = models.PositiveSmallIntegerField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = _response_constraints()
        indexes = [models.Index(fields=["patient", "instrument", "administered_at"], name="response_patient_time")]

    def __str__(self) -> str:
        return self.response_id

    @property
    def items(self) -> list[int] | None:
        count = INSTRUMENTS[self.instrument].item_count
        values = [getattr(self, f"item_{n}") for n in range(1, count + 1)]
        return None if values[0] is None else values

    @staticmethod
    def item_columns(items: list[int] | None) -> dict[str, int | None]:
        items = items or []
        return {field: (items[i] if i < len(items) else None) for i, field in enumerate(ITEM_FIELDS)}


class OutcomeSummary(models.Model):
    """Per patient and instrument: the first and the latest total (by administration time, ties by
    response id, as `reports.outcomes` orders them), and how many. Kept by database triggers on
    OutcomeResponse (migration reports/0008), whatever writes a response: ingest, an import, a retention
    purge, raw SQL. The caseload reads it with two joins instead of subqueries per patient."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="outcome_summaries")
    instrument = models.CharField(max_length=8, choices=INSTRUMENT_CHOICES)
    first_total = models.PositiveSmallIntegerField()
    first_at = models.DateTimeField()
    first_response_id = models.CharField(max_length=128)
    latest_total = models.PositiveSmallIntegerField()
    latest_at = models.DateTimeField()
    latest_response_id = models.CharField(max_length=128)
    count = models.PositiveIntegerField()
    # The latest total is at least the instrument's reliable change above the first (DESIGN §8): computed
    # by the database from the columns above, so that the caseload's deteriorating filter reads a partial
    # index of the few patients it names instead of probing every assigned patient's rows.
    reliably_worse = models.GeneratedField(
        expression=models.Case(
            *(
                models.When(
                    Q(instrument=code, latest_total__gte=F("first_total") + instrument.reliable_change),
                    then=models.Value(True),
                )
                for code, instrument in INSTRUMENTS.items()
            ),
            default=models.Value(False),
        ),
        output_field=models.BooleanField(),
        db_persist=True,
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["patient", "instrument"], name="outcome_summary_once")]
        indexes = [models.Index(fields=["patient"], condition=Q(reliably_worse=True), name="outcome_summary_worse")]

    def __str__(self) -> str:
        return f"{self.instrument} summary of patient {self.patient_id}"


class AlertKind(models.TextChoices):
    CRISIS_SIGNAL = "crisis_signal", "Crisis signal from the game"
    ITEM9 = "phq9_item9", "PHQ-9 item 9 answered above 0"
    RELIABLE_DETERIORATION = "reliable_deterioration", "Reliable deterioration"
    DISENGAGEMENT = "disengagement", "Disengagement"
    NOT_ON_TRACK = "not_on_track", "Not on track"


class AlertSeverity(models.TextChoices):
    URGENT = "urgent"
    HIGH = "high"
    MODERATE = "moderate"


@row_history(
    "notify_attempts",
    "notify_error",
    "notify_retry_at",
    "escalation_attempts",
    "escalation_error",
    "escalation_retry_at",
)
class Alert(models.Model):
    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    severity = models.CharField(max_length=16, choices=AlertSeverity.choices)
    # Encrypted at rest: a crisis signal's reason can be the game's free text (DESIGN §7).
    reason = EncryptedTextField()
    # The game's id of a crisis signal; null for alerts we raise ourselves.
    alert_id = models.CharField(max_length=128, null=True, blank=True)
    source_response = models.ForeignKey(
        OutcomeResponse, on_delete=models.SET_NULL, null=True, blank=True, related_name="alerts"
    )
    # The measures a reliable-deterioration or not-on-track alert names (instrument codes); empty for others.
    measures = models.JSONField(default=list, blank=True)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    note = EncryptedTextField(blank=True)
    # Outbox state of the e-mails: null until sent, so a lost task is found again by the beat sweep.
    notified_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # A failed send: how many attempts failed, the last error's class name (never its message, which
    # could hold patient data) and when the sweep may try again (reports.alerts).
    notify_attempts = models.PositiveIntegerField(default=0)
    notify_error = models.CharField(max_length=100, blank=True)
    notify_retry_at = models.DateTimeField(null=True, blank=True)
    escalation_attempts = models.PositiveIntegerField(default=0)
    escalation_error = models.CharField(max_length=100, blank=True)
    escalation_retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-occurred_at"]
        constraints = [
            models.UniqueConstraint(fields=["clinic", "alert_id"], name="alert_id_unique_per_clinic"),
            models.UniqueConstraint(
                fields=["source_response", "kind"],
                condition=Q(source_response__isnull=False),
                name="alert_once_per_response_and_kind",
            ),
            models.CheckConstraint(condition=Q(severity__in=AlertSeverity.values), name="alert_severity_valid"),
        ]
        indexes = [
            models.Index(fields=["patient", "acknowledged_at"], name="alert_patient_open"),
            # The e-mail sweep: alerts not e-mailed yet, oldest first.
            models.Index(fields=["created_at"], name="alert_to_notify", condition=Q(notified_at__isnull=True)),
            # The unacknowledged alerts by severity, oldest first (/metrics at every scrape).
            models.Index(
                fields=["severity", "created_at"],
                name="alert_unacknowledged",
                condition=Q(acknowledged_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.severity})"


# ----- measurement-based care beyond the scores (DESIGN §8) -----------------------------------------


class TrajectoryReference(models.Model):
    """A clinic's expected-recovery reference for one instrument (DESIGN §8): the 25th/50th/75th
    percentiles per intake band and week, as `reports.trajectories.Reference.to_json()`. Aggregates of at
    least 10 patients each; rebuilt by a Celery task after outcome ingest (debounced) and nightly."""

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="+")
    instrument = models.CharField(max_length=16, choices=INSTRUMENT_CHOICES)
    data = models.JSONField()
    group_size = models.PositiveIntegerField(default=0)  # patients in the reference group
    built_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clinic", "instrument"], name="trajectory_reference_once"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument} reference of clinic {self.clinic_id}"


class MeasureStatus(models.Model):
    """A patient's not-on-track result on one instrument (DESIGN §8) as last computed: what the caseload
    marks and filters by, and what makes the moderate alert once while it holds. Written by
    `reports.trajectory_status`; the API computes the same result afresh."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="measure_statuses")
    instrument = models.CharField(max_length=16, choices=INSTRUMENT_CHOICES)
    not_on_track = models.BooleanField(null=True)
    basis = models.CharField(max_length=32, blank=True)  # "" when not_on_track is null
    intake_band = models.CharField(max_length=32, blank=True)
    trajectory = models.JSONField(default=dict)  # the inputs: week, latest, n_patients, n_scores, p25/50/75
    since = models.DateTimeField(null=True, blank=True)  # when it last became true
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "instrument"], name="measure_status_once"),
        ]
        indexes = [
            models.Index(fields=["patient"], name="measure_status_off_track", condition=Q(not_on_track=True)),
        ]

    def __str__(self) -> str:
        return f"{self.instrument} status of patient {self.patient_id}"


@row_history()
class ClinicalNote(models.Model):
    """A therapist's dated note on a patient: encrypted at rest, edited only by its author; each edit
    keeps the earlier version as a ClinicalNoteRevision (and the row history keeps a copy too)."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="clinical_notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    written_on = models.DateField()  # the day the note is about, in the clinic's calendar
    body = EncryptedTextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-written_on", "-created_at", "-pk"]
        indexes = [models.Index(fields=["patient", "written_on"], name="note_patient_date")]

    def __str__(self) -> str:
        return f"Note {self.pk} on patient {self.patient_id}"


class ClinicalNoteRevision(models.Model):
    """An earlier version of a clinical note, kept when its author edited it (newest first)."""

    note = models.ForeignKey(ClinicalNote, on_delete=models.CASCADE, related_name="revisions")
    written_on = models.DateField()
    body = EncryptedTextField()
    replaced_at = models.DateTimeField()

    class Meta:
        ordering = ["-replaced_at", "-pk"]

    def __str__(self) -> str:
        return f"Revision {self.pk} of note {self.note_id}"


class MeasureDigest(models.Model):
    """The daily e-mail to a therapist listing their patients with a measure due (DESIGN §8), one per
    therapist, clinic and local day: the row is written with the send, so a task run twice sends once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="+")
    local_date = models.DateField()  # the clinic's calendar day it was sent for
    patients = models.PositiveIntegerField(default=0)  # how many patients it listed
    sent_at = models.DateTimeField(null=True, blank=True)  # null until the mail server took it

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "clinic", "local_date"], name="measure_digest_once_a_day"),
        ]

    def __str__(self) -> str:
        return f"Digest for user {self.user_id} on {self.local_date}"
