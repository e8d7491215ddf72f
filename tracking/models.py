"""Patients, care assignment, what the game reports (sessions, markers) and who may see it."""

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


def validate_timezone(value: str) -> None:
    if value and value not in zoneinfo.available_timezones():
        raise ValidationError(f"Unknown time zone {value!r}.")


class Clinic(models.Model):
    """The tenant boundary: nothing of one clinic is ever visible from another."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

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


class Patient(models.Model):
    """A player of the game, known to us by the game's `player_id` within one clinic."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="patients")
    player_id = models.CharField(max_length=128)
    # Blank means the clinic's time zone.
    timezone = models.CharField(max_length=64, blank=True, validators=[validate_timezone])
    created_at = models.DateTimeField(auto_now_add=True)
    risk_flag = models.BooleanField(default=False)
    risk_flag_raised_at = models.DateTimeField(null=True, blank=True)
    # Freshness of the stored analytics: ingest sets data_changed_at in its own transaction; the
    # recompute stamps analytics_computed_at. A patient is stale while changed > computed.
    data_changed_at = models.DateTimeField(null=True, blank=True)
    analytics_computed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["player_id"]
        constraints = [
            models.UniqueConstraint(fields=["clinic", "player_id"], name="patient_player_id_unique_per_clinic"),
        ]

    def __str__(self) -> str:
        return self.player_id

    @property
    def tz_name(self) -> str:
        return self.timezone or self.clinic.timezone


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


class TherapySession(models.Model):
    """One play session reported by the game (not Django's `Session`)."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="sessions")
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
        indexes = [models.Index(fields=["patient", "started_at"], name="session_patient_time")]

    def __str__(self) -> str:
        return self.session_id


class MarkerType(models.TextChoices):
    MILESTONE = "milestone"
    BREAKTHROUGH = "breakthrough"
    SKILL_ACQUIRED = "skill_acquired"
    GOAL_ACHIEVED = "goal_achieved"
    SETBACK_OVERCOME = "setback_overcome"
    INSIGHT = "insight"
    THERAPEUTIC_GOAL = "therapeutic_goal"


class ProgressMarker(models.Model):
    """Something the player achieved in a session (a finished guided exercise = skill_acquired)."""

    clinic = models.ForeignKey(Clinic, on_delete=models.PROTECT, related_name="+")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="markers")
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
