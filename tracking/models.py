"""Patients, care assignment, what the game reports (sessions, markers) and who may see it."""

import hashlib
import time
import zoneinfo
from base64 import b32encode
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

import pghistory
import pgtrigger
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, models
from django.db.models import Q
from django_otp.models import Device, ThrottlingMixin, TimestampMixin
from django_otp.oath import TOTP
from pghistory.trigger import Event as HistoryTrigger

from tracking.fields import EncryptedTextField


def validate_timezone(value: str) -> None:
    if value and value not in zoneinfo.available_timezones():
        raise ValidationError(f"Unknown time zone {value!r}.")


class Clinic(models.Model):
    """The tenant boundary: nothing of one clinic is ever visible from another."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    created_at = models.DateTimeField(auto_now_add=True)
    # Celebration hook: new milestones are POSTed here, signed with HMAC-SHA256 of the body.
    webhook_url = models.URLField(blank=True, help_text="The game server's celebration endpoint (optional).")
    webhook_secret = EncryptedTextField(blank=True, max_length=128, help_text="Shared secret for the signature.")
    # Set by the clinic admins on /clinic/settings/ (DESIGN §6, §7, §8).
    alert_escalation_minutes = models.PositiveSmallIntegerField(
        default=30, help_text="An urgent alert unacknowledged this long is e-mailed to the clinic admins (5-240)."
    )
    crisis_resources = models.TextField(
        blank=True, max_length=2000, help_text="Shown on every alert: who to call, what to do."
    )
    measure_interval_days = models.PositiveSmallIntegerField(
        default=14, help_text="A PHQ-9 or GAD-7 is due this many days after the last one (DESIGN §8)."
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(alert_escalation_minutes__gte=5, alert_escalation_minutes__lte=240),
                name="clinic_escalation_minutes_range",
            ),
            models.CheckConstraint(
                condition=Q(measure_interval_days__gte=1, measure_interval_days__lte=365),
                name="clinic_measure_interval_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    THERAPIST = "therapist", "Therapist"
    CLINIC_ADMIN = "clinic_admin", "Clinic admin"
    AUDITOR = "auditor", "Compliance auditor"


class Membership(models.Model):
    """A user's one role in one clinic."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "clinic"], name="membership_one_role_per_clinic"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role} at {self.clinic.slug})"


def row_history(*bookkeeping: str):
    """Row history kept by database triggers (django-pghistory, DESIGN §7): every UPDATE that changes a
    column of patient data, and every DELETE, copies the row into `<model>event` (the row after an update,
    before a delete), whatever made the write: a service, a bulk `update()`, raw SQL. Bookkeeping
    columns (`bookkeeping`, and auto_now timestamps) alone do not make an event. The triggers exist on
    PostgreSQL only: pgtrigger skips them on SQLite, where the event tables stay empty (the demo)."""
    return pghistory.track(
        pghistory.UpdateEvent(condition=pghistory.AnyChange(exclude=list(bookkeeping), exclude_auto=True)),
        pghistory.DeleteEvent(),
    )


def skipping_row_history(
    tracked: Iterable[type[models.Model]], *, events: tuple[str, ...] = ("update", "delete")
) -> AbstractContextManager[Any]:
    """Within it, the current transaction's writes to `tracked` make no row-history copies of the given
    `events` (pghistory's trigger names start with them): for a change of representation (a key
    rotation) or a delete whose copies would only be removed again (retention). Every other writer's
    copies are made as usual. A no-op where no such trigger exists (SQLite): pgtrigger.ignore() with no
    trigger named would ignore every trigger."""
    wanted = set(tracked)
    uris = [
        f"{model._meta.label}:{trigger.name}"
        for model, trigger in pgtrigger.registered()
        if model in wanted and isinstance(trigger, HistoryTrigger) and trigger.name.split("_")[0] in events
    ]
    return pgtrigger.ignore(*uris) if uris and connection.vendor == "postgresql" else nullcontext()


class PatientQuerySet(models.QuerySet):
    def stale_analytics(self):
        """Patients whose data changed after their analytics were last computed (or never computed)."""
        return self.filter(
            Q(analytics_computed_at__isnull=True, data_changed_at__isnull=False)
            | Q(data_changed_at__gt=models.F("analytics_computed_at"))
        )


@row_history("data_changed_at", "analytics_computed_at", "analytics_failures", "analytics_error", "analytics_retry_at")
class Patient(models.Model):
    """A player of the game, known to us by the game's `player_id` within one clinic."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="patients")
    player_id = models.CharField(max_length=128)
    # What the clinic calls the patient on its pages (optional; encrypted at rest like every note).
    display_name = EncryptedTextField(blank=True, max_length=100)
    # Blank means the clinic's time zone.
    timezone = models.CharField(max_length=64, blank=True, validators=[validate_timezone])
    created_at = models.DateTimeField(auto_now_add=True)
    risk_flag = models.BooleanField(default=False)
    risk_flag_raised_at = models.DateTimeField(null=True, blank=True)
    # The flag is cleared only by a therapist, with a note (DESIGN §7); the last clearing is kept.
    risk_flag_cleared_at = models.DateTimeField(null=True, blank=True)
    risk_flag_cleared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    risk_flag_clear_note = EncryptedTextField(blank=True)
    # Freshness of the stored analytics: ingest sets data_changed_at in its own transaction; the
    # recompute stamps analytics_computed_at. A patient is stale while changed > computed.
    data_changed_at = models.DateTimeField(null=True, blank=True)
    analytics_computed_at = models.DateTimeField(null=True, blank=True)
    # A recompute that failed for this patient: how many times in a row, the last error's class name,
    # and when the reconciler may try again (cleared by the next success).
    analytics_failures = models.PositiveIntegerField(default=0)
    analytics_error = models.CharField(max_length=100, blank=True)
    analytics_retry_at = models.DateTimeField(null=True, blank=True)

    objects = PatientQuerySet.as_manager()
    # Not a column: set by tracking.access when a therapist reaches the patient through break-glass.
    break_glass_until: "datetime | None" = None

    class Meta:
        ordering = ["player_id"]
        constraints = [
            models.UniqueConstraint(fields=["clinic", "player_id"], name="patient_player_id_unique_per_clinic"),
        ]
        indexes = [
            # The stale patients (`stale_analytics`), oldest change first: /metrics counts them and their lag
            # at every scrape from this small index instead of reading every patient.
            models.Index(
                fields=["data_changed_at"],
                name="patient_stale_analytics",
                condition=Q(analytics_computed_at__isnull=True, data_changed_at__isnull=False)
                | Q(data_changed_at__gt=models.F("analytics_computed_at")),
            ),
        ]

    def __str__(self) -> str:
        return self.player_id

    @property
    def tz_name(self) -> str:
        return self.timezone or self.clinic.timezone


@row_history()
class CareAssignment(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="assignments")
    therapist = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="care_assignments")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["patient", "therapist"], name="care_assignment_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.patient} → {self.therapist}"


class SessionStatus(models.TextChoices):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABANDONED = "abandoned"


@row_history()
class TherapySession(models.Model):
    """One play session reported by the game (not Django's `Session`)."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    # No index of its own: `session_patient_time` (patient, started_at) serves the foreign key too, and
    # with a patient_id-only index beside it the planner read a patient's whole history for a window.
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="sessions", db_index=False)
    session_id = models.CharField(max_length=128)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=SessionStatus.choices)
    duration_minutes = models.FloatField(default=0)
    world = models.CharField(max_length=128, blank=True)
    character = models.CharField(max_length=128, blank=True)
    approaches = models.JSONField(default=list, blank=True)
    interventions_count = models.PositiveIntegerField(default=0)
    key_achievements = models.JSONField(default=list, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clinic", "session_id"], name="session_id_unique_per_clinic"),
            models.CheckConstraint(condition=Q(duration_minutes__gte=0), name="session_duration_not_negative"),
            models.CheckConstraint(condition=Q(status__in=SessionStatus.values), name="session_status_valid"),
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(ended_at__gte=models.F("started_at")),
                name="session_ends_after_start",
            ),
        ]
        # duration_minutes included: the recompute's per-day aggregate is then an index-only scan.
        indexes = [
            models.Index(fields=["patient", "started_at"], name="session_patient_time", include=["duration_minutes"])
        ]

    def __str__(self) -> str:
        return self.session_id


class PatientDay(models.Model):
    """A patient's sessions aggregated by local calendar day, in the time zone the patient had when the
    day was written (`tz`): how many started, their minutes, and the first start. Kept by statement
    triggers on the sessions table on PostgreSQL (migration tracking/0013), whatever writes a session;
    a patient whose zone changed since is read from the sessions until their next session rebuilds it.
    The recompute reads it instead of grouping every session again. Empty on SQLite (the demo), which
    groups the sessions."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="+", db_index=False)
    tz = models.CharField(max_length=64)
    day = models.IntegerField()  # days since 2000-01-01, in `tz`
    sessions = models.PositiveIntegerField()
    minutes = models.FloatField()
    first_us = models.BigIntegerField()  # the first start that day, microseconds since the Unix epoch

    class Meta:
        constraints = [models.UniqueConstraint(fields=["patient", "tz", "day"], name="patient_day_once")]

    def __str__(self) -> str:
        return f"day {self.day} of patient {self.patient_id}"


class MarkerType(models.TextChoices):
    MILESTONE = "milestone"
    BREAKTHROUGH = "breakthrough"
    SKILL_ACQUIRED = "skill_acquired"
    GOAL_ACHIEVED = "goal_achieved"
    SETBACK_OVERCOME = "setback_overcome"
    INSIGHT = "insight"
    THERAPEUTIC_GOAL = "therapeutic_goal"


@row_history()
class ProgressMarker(models.Model):
    """Something the player achieved in a session (a finished guided exercise = skill_acquired)."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    # No index of its own: `marker_patient_time` (patient, achieved_at) serves the foreign key too (see
    # TherapySession.patient).
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="markers", db_index=False)
    session = models.ForeignKey(TherapySession, on_delete=models.CASCADE, related_name="markers")
    marker_id = models.CharField(max_length=128)
    type = models.CharField(max_length=32, choices=MarkerType.choices)
    description = models.TextField(blank=True)
    achieved_at = models.DateTimeField()
    therapeutic_value = models.FloatField()
    related_goal_id = models.CharField(max_length=128, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clinic", "marker_id"], name="marker_id_unique_per_clinic"),
            models.CheckConstraint(
                condition=Q(therapeutic_value__gte=0) & Q(therapeutic_value__lte=1),
                name="marker_therapeutic_value_0_1",
            ),
            models.CheckConstraint(condition=Q(type__in=MarkerType.values), name="marker_type_valid"),
        ]
        indexes = [
            models.Index(fields=["patient", "achieved_at"], name="marker_patient_time"),
            models.Index(fields=["patient", "type", "achieved_at"], name="marker_patient_type_time"),
        ]

    def __str__(self) -> str:
        return self.marker_id


class IngestToken(models.Model):
    """A game server's credential for one clinic. Only a SHA-256 hash of the token is stored."""

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="ingest_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=12, editable=False, help_text="The token's first characters, to recognise it.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# ----- analytics (DESIGN §4) ----------------------------------------------------------------------


class MilestoneFamily(models.TextChoices):
    STREAK = "streak", "Streak (consecutive active days)"
    SKILLS = "skills", "Skills acquired"
    SESSIONS = "sessions", "Sessions"
    BREAKTHROUGHS = "breakthroughs", "Breakthroughs"


class ClinicMilestoneRule(models.Model):
    """A clinic's own milestone thresholds and titles. A clinic with none uses the defaults of DESIGN §4."""

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="milestone_rules")
    family = models.CharField(max_length=16, choices=MilestoneFamily.choices)
    threshold = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    description = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["clinic", "family", "threshold"]
        constraints = [
            models.UniqueConstraint(fields=["clinic", "family", "threshold"], name="milestone_rule_unique"),
            models.CheckConstraint(condition=Q(threshold__gte=1), name="milestone_rule_threshold_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.clinic.slug}: {self.title}"

    # An edit takes effect at the next recompute: the clinic's cached rules are forgotten.
    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        cache.delete(self.cache_key(self.clinic_id))

    def delete(self, *args, **kwargs):
        result = super().delete(*args, **kwargs)
        cache.delete(self.cache_key(self.clinic_id))
        return result

    @staticmethod
    def cache_key(clinic_id: int) -> str:
        return f"milestone-rules:{clinic_id}"


class Milestone(models.Model):
    """Stored once, with the moment its threshold was actually crossed."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="milestones")
    family = models.CharField(max_length=16, choices=MilestoneFamily.choices)
    threshold = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    description = models.CharField(max_length=500, blank=True)
    achieved_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["achieved_at", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["patient", "family", "threshold"], name="milestone_once_per_patient"),
        ]

    def __str__(self) -> str:
        return self.title


class ProgressHighlight(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="highlights")
    milestone = models.OneToOneField(
        Milestone, on_delete=models.CASCADE, null=True, blank=True, related_name="highlight"
    )
    type = models.CharField(max_length=32, default="milestone")
    title = models.CharField(max_length=200)
    description = models.CharField(max_length=500, blank=True)
    achieved_at = models.DateTimeField()
    therapeutic_value = models.FloatField(default=0)
    celebration_shown = models.BooleanField(default=False)
    celebrated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-achieved_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(therapeutic_value__gte=0) & Q(therapeutic_value__lte=1), name="highlight_value_0_1"
            ),
        ]

    def __str__(self) -> str:
        return self.title


class Recommendation(models.Model):
    """One per patient and type. Refreshed by each recompute; a dismissed one stays dismissed while its
    condition keeps holding, and one whose condition no longer holds expires."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="recommendations")
    type = models.CharField(max_length=32)
    title = models.CharField(max_length=200)
    description = models.CharField(max_length=500, blank=True)
    priority = models.PositiveSmallIntegerField()
    reasoning = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    dismissed = models.BooleanField(default=False)
    dismissed_at = models.DateTimeField(null=True, blank=True)
    dismissed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["priority", "type"]
        constraints = [
            models.UniqueConstraint(fields=["patient", "type"], name="recommendation_one_per_type"),
            models.CheckConstraint(
                condition=Q(priority__gte=1) & Q(priority__lte=5), name="recommendation_priority_1_5"
            ),
        ]

    def __str__(self) -> str:
        return self.title


class ProgressSummary(models.Model):
    """The stored snapshot of a patient's computed analytics, refreshed by Celery. A few values are
    columns too, so the caseload can sort and filter on them in the database."""

    patient = models.OneToOneField(Patient, on_delete=models.CASCADE, related_name="summary")
    computed_at = models.DateTimeField()
    local_date = models.DateField(help_text="The patient-local 'today' the summary was computed for.")
    data = models.JSONField()
    current_streak_days = models.PositiveIntegerField(default=0)
    sessions_this_week = models.PositiveIntegerField(default=0)
    dropout_risk_score = models.FloatField(default=0)
    last_active_day = models.DateField(null=True, blank=True)
    progress_trend = models.CharField(max_length=16, blank=True)
    engagement_trend = models.CharField(max_length=16, blank=True)

    class Meta:
        verbose_name_plural = "progress summaries"

    def __str__(self) -> str:
        return f"Summary of {self.patient}"


class WebhookDelivery(models.Model):
    """The outbox of celebration webhooks: written in the same transaction as the milestone, delivered
    by Celery with retries, and found again by a periodic task if a delivery task was lost."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="webhook_deliveries")
    highlight = models.ForeignKey(ProgressHighlight, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=64, default="milestone_achieved")
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="webhook_due")]

    def __str__(self) -> str:
        return f"{self.event} → {self.clinic.slug} ({self.status})"


# ----- audit (DESIGN §7) ---------------------------------------------------------------------------


class AuditAction(models.TextChoices):
    LOGIN = "auth.login"
    LOGIN_FAILED = "auth.login_failed"
    LOGOUT = "auth.logout"
    LOCKOUT = "auth.lockout"
    MFA = "auth.mfa"
    PATIENT_READ = "patient.read"
    CASELOAD_READ = "caseload.read"
    EXPORT = "export"
    INGEST = "ingest"
    ALERT_ACKNOWLEDGE = "alert.acknowledge"
    RISK_FLAG_CLEAR = "risk_flag.clear"
    RECOMMENDATION_DISMISS = "recommendation.dismiss"
    HIGHLIGHT_CELEBRATED = "highlight.celebrated"
    NOTE_WRITE = "note.write"  # a clinical note written or edited (DESIGN §8; never its text)
    CONFIG_CHANGE = "config.change"
    USER_CHANGE = "user.change"
    ASSIGNMENT_CHANGE = "assignment.change"
    TOKEN_CHANGE = "token.change"  # noqa: S105 (an action name, not a secret)
    BREAK_GLASS = "break_glass"
    RETENTION_RUN = "retention.run"
    AUDIT_EXPORT = "audit.export"
    AUDIT_VERIFY = "audit.verify"
    ACCESS_DENIED = "access.denied"


class AuditOutcome(models.TextChoices):
    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


class AuditEvent(models.Model):
    """One entry of the append-only, hash-chained audit log (tracking.audit). A database trigger refuses
    every UPDATE, and every DELETE of an event younger than 2,192 days. Plain columns, no foreign keys:
    an event outlives the rows it names."""

    chain = models.CharField(max_length=64)  # the clinic's slug, or "system"
    seq = models.PositiveBigIntegerField()
    at = models.DateTimeField()
    actor = models.CharField(max_length=200)
    role = models.CharField(max_length=32, blank=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    patients = models.JSONField(default=list)
    object = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict)
    ip = models.CharField(max_length=45, null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=AuditOutcome.choices, default=AuditOutcome.OK)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "audit_event"
        ordering = ["chain", "seq"]
        constraints = [models.UniqueConstraint(fields=["chain", "seq"], name="audit_event_seq_once_per_chain")]
        indexes = [
            models.Index(fields=["chain", "-at", "-seq"], name="audit_chain_time"),
            models.Index(fields=["chain", "action", "-at"], name="audit_chain_action_time"),
            models.Index(fields=["chain", "actor", "-at"], name="audit_chain_actor_time"),
        ]

    def __str__(self) -> str:
        return f"{self.chain}#{self.seq} {self.action}"


class AuditChainHead(models.Model):
    """The newest event of each chain: appends lock this row, so they are serialised per chain only. Also
    what the console shows of the chain's state: the last verification and the last signed export."""

    chain = models.CharField(max_length=64, primary_key=True)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64)
    # Retention removes only a prefix of a chain and leaves here where verification starts again.
    checkpoint_seq = models.PositiveBigIntegerField(default=0)
    checkpoint_hash = models.CharField(max_length=64, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_seq = models.PositiveBigIntegerField(null=True, blank=True)
    verified_ok = models.BooleanField(null=True)
    verified_message = models.CharField(max_length=500, blank=True)
    exported_at = models.DateTimeField(null=True, blank=True)
    exported_seq = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        db_table = "audit_chain_head"

    def __str__(self) -> str:
        return f"{self.chain} @ {self.seq}"


class AuditReview(models.Model):
    """An auditor's review of an event that needs one (a break-glass grant, a lockout)."""

    event_id = models.BigIntegerField(unique=True)  # an AuditEvent id; not a foreign key (see AuditEvent)
    chain = models.CharField(max_length=64)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reviewed_at = models.DateTimeField()
    note = EncryptedTextField(blank=True)

    def __str__(self) -> str:
        return f"review of event {self.event_id}"


class BreakGlassGrant(models.Model):
    """Emergency access of a therapist to an unassigned patient of their own clinic (DESIGN §7)."""

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="break_glass_grants")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="break_glass_grants")
    reason = EncryptedTextField()
    granted_at = models.DateTimeField()
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "patient", "expires_at"], name="break_glass_active")]
        constraints = [
            models.CheckConstraint(condition=Q(expires_at__gt=models.F("granted_at")), name="break_glass_window")
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.patient} until {self.expires_at:%Y-%m-%d %H:%M}"


# ----- the second factor (django-otp devices, DESIGN §7) ------------------------------------------
#
# django-otp's own TOTP and static plugins keep the key and the backup codes in plain text. These two
# devices are built on its parts instead (Device, the throttling and timestamp mixins, django_otp.oath's
# TOTP), with the TOTP key encrypted at rest and a backup code kept only as a SHA-256 digest.


def new_totp_key() -> str:
    from django_otp.util import random_hex

    return random_hex(20)


class AuthenticatorDevice(TimestampMixin, ThrottlingMixin, Device):
    """A TOTP authenticator app (RFC 6238: SHA-1, 6 digits, 30 s steps, ±1 step of tolerance)."""

    key = EncryptedTextField(default=new_totp_key, help_text="Hex-encoded secret (encrypted at rest).")
    step = models.PositiveSmallIntegerField(default=30)
    t0 = models.BigIntegerField(default=0)
    digits = models.PositiveSmallIntegerField(default=6)
    tolerance = models.PositiveSmallIntegerField(default=1)
    drift = models.SmallIntegerField(default=0)
    last_t = models.BigIntegerField(default=-1)

    class Meta(Device.Meta):
        verbose_name = "authenticator app"

    def totp(self) -> TOTP:
        totp = TOTP(bytes.fromhex(self.key), self.step, self.t0, self.digits, self.drift)
        totp.time = time.time()
        return totp

    def verify_token(self, token: object) -> bool:
        """django-otp's TOTP check: a code is accepted once, never one of a step already used."""
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        code = str(token).strip().replace(" ", "")
        totp = self.totp()
        if code.isdigit() and len(code) == self.digits and totp.verify(int(code), self.tolerance, self.last_t + 1):
            self.last_t, self.drift = totp.t(), totp.drift
            self.throttle_reset(commit=False)
            self.set_last_used_timestamp(commit=False)
            self.save()
            return True
        self.throttle_increment(commit=True)
        return False

    def get_throttle_factor(self) -> int:
        return 1

    def config_url(self, issuer: str) -> str:
        """The otpauth:// URI an authenticator app reads from the QR code."""
        label = quote(f"{issuer}:{self.user.get_username()}")
        params = urlencode(
            {
                "secret": b32encode(bytes.fromhex(self.key)).decode(),
                "issuer": issuer,
                "algorithm": "SHA1",
                "digits": self.digits,
                "period": self.step,
            },
            quote_via=quote,
        )
        return f"otpauth://totp/{label}?{params}"

    def base32_secret(self) -> str:
        """The secret as typed into an app by hand, in groups of four."""
        raw = b32encode(bytes.fromhex(self.key)).decode().rstrip("=")
        return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


class BackupCodeDevice(TimestampMixin, ThrottlingMixin, Device):
    """Single-use backup codes; each code is deleted when used."""

    class Meta(Device.Meta):
        verbose_name = "backup codes"

    def verify_token(self, token: object) -> bool:
        allowed, _ = self.verify_is_allowed()
        if not allowed:
            return False
        used, _ = self.codes.filter(digest=BackupCode.digest_of(str(token))).delete()
        if used:
            self.throttle_reset(commit=False)
            self.set_last_used_timestamp(commit=False)
            self.save()
            return True
        self.throttle_increment(commit=True)
        return False

    def get_throttle_factor(self) -> int:
        return 1


class BackupCode(models.Model):
    device = models.ForeignKey(BackupCodeDevice, on_delete=models.CASCADE, related_name="codes")
    digest = models.CharField(max_length=64)

    class Meta:
        indexes = [models.Index(fields=["device", "digest"], name="backup_code_lookup")]

    def __str__(self) -> str:
        return f"backup code of device {self.device_id}"

    @staticmethod
    def normalise(code: str) -> str:
        return "".join(ch for ch in code.lower() if ch.isalnum())

    @classmethod
    def digest_of(cls, code: str) -> str:
        return hashlib.sha256(cls.normalise(code).encode()).hexdigest()


class UserSession(models.Model):
    """A logged-in session of a user, so that logout and a password change can end the others."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="login_sessions")
    session_key = models.CharField(max_length=40, unique=True)
    started_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"session of {self.user_id} since {self.started_at:%Y-%m-%d %H:%M}"


# ----- retention (DESIGN §7) -----------------------------------------------------------------------

AUDIT_RETENTION_MIN_DAYS = 2192  # six years: the database refuses to delete a younger audit event


class RetentionCategory(models.TextChoices):
    ACTIVITY = "activity", "Game activity (sessions and their markers)"
    OUTCOMES = "outcomes", "Questionnaire responses"
    ALERTS = "alerts", "Acknowledged alerts"
    DERIVED = "derived", "Recommendations and highlights"
    INACTIVE_PATIENTS = "inactive_patients", "Inactive patients, with all their data"
    AUDIT = "audit", "Audit events"


def validate_retention(category: str, days: int) -> None:
    if days < 1:
        raise ValidationError({"days": "Keep data for at least 1 day."})
    if category == RetentionCategory.AUDIT and days < AUDIT_RETENTION_MIN_DAYS:
        raise ValidationError(
            {"days": f"Audit events are kept at least {AUDIT_RETENTION_MIN_DAYS} days (6 years); {days} is shorter."}
        )


class RetentionPolicy(models.Model):
    """How long a clinic keeps one category of data. No policy: the category is kept."""

    clinic = models.ForeignKey(Clinic, on_delete=models.CASCADE, related_name="retention_policies")
    category = models.CharField(max_length=32, choices=RetentionCategory.choices)
    days = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["clinic", "category"], name="retention_one_policy_per_category"),
            models.CheckConstraint(condition=Q(category__in=RetentionCategory.values), name="retention_category_valid"),
            models.CheckConstraint(condition=Q(days__gte=1), name="retention_days_positive"),
            models.CheckConstraint(
                condition=~Q(category="audit") | Q(days__gte=AUDIT_RETENTION_MIN_DAYS), name="retention_audit_floor"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.clinic.slug} {self.category}: {self.days} days"

    def clean(self) -> None:
        validate_retention(self.category, self.days)
