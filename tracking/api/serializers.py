"""The shapes of the ingest API (DESIGN §6). Fields are strict: a number sent as a string, an id sent as
a number or a timestamp without an offset is an error, not something to guess about."""

from datetime import UTC, timedelta

from django.conf import settings
from django.core.validators import RegexValidator
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from reports.instruments import INSTRUMENTS, get_instrument, score_errors
from reports.models import AlertSeverity
from tracking.models import MarkerType, SessionStatus
from tracking.validators import EXTERNAL_ID_PATTERN, INT32_MAX, TIMESTAMP_MIN, external_id_error, text_error


class StrictCharField(serializers.CharField):
    """Text only, and only text PostgreSQL can store: no NUL, no unpaired surrogate."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if reason := text_error(data):
            raise serializers.ValidationError(reason, code="invalid_text")
        return super().to_internal_value(data)


class ExternalIdField(StrictCharField):
    """A player id or an external id (DESIGN §6). Checked before trimming: an id with a trailing newline
    is refused, not silently changed into another id."""

    def __init__(self, **kwargs):
        super().__init__(max_length=128, **kwargs)
        # Documents the pattern in the OpenAPI schema; the check that decides is the fullmatch below.
        self.validators.append(RegexValidator(EXTERNAL_ID_PATTERN))

    def to_internal_value(self, data):
        if isinstance(data, str) and (reason := external_id_error(data)):
            raise serializers.ValidationError(reason, code="invalid_id")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class OffsetDateTimeField(serializers.DateTimeField):
    """ISO 8601 with an explicit offset; from 2000-01-01T00:00:00Z to 5 minutes in the future. A clock
    reset to year 1 is not a session from year 1, and years 1 and 9999 with an offset do not even fit a
    datetime in UTC."""

    default_error_messages = {
        "naive": "Timestamp needs a UTC offset, e.g. 2026-01-31T18:30:00+00:00.",
        "future": "Timestamp is more than 5 minutes in the future.",
        "too_early": "Timestamp is before 2000-01-01T00:00:00Z; is the device's clock set?",
    }

    def to_internal_value(self, value):
        try:
            parsed = parse_datetime(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None:
            self.fail("invalid", format="ISO 8601 with an offset, e.g. 2026-01-31T18:30:00+00:00")
        if timezone.is_naive(parsed):
            self.fail("naive")
        try:
            instant = parsed.astimezone(UTC)
        except (OverflowError, ValueError):  # 0001-01-01T00:00+05:00, 9999-12-31T23:59-05:00
            self.fail("too_early" if parsed.year < TIMESTAMP_MIN.year else "future")
        if instant < TIMESTAMP_MIN:
            self.fail("too_early")
        tolerance = timedelta(seconds=settings.INGEST_FUTURE_TOLERANCE_SECONDS)
        if instant > timezone.now() + tolerance:
            self.fail("future")
        return instant


def id_field(**kwargs):
    return ExternalIdField(**kwargs)


def text_list_field():
    return serializers.ListField(child=StrictCharField(max_length=200), required=False, max_length=100, default=list)


class SessionInSerializer(serializers.Serializer):
    session_id = id_field()
    player_id = id_field()
    started_at = OffsetDateTimeField()
    ended_at = OffsetDateTimeField(required=False, allow_null=True, default=None)
    status = serializers.ChoiceField(choices=SessionStatus.values)
    duration_minutes = StrictFloatField(min_value=0, max_value=24 * 60)
    world = StrictCharField(max_length=128, required=False, allow_blank=True, default="")
    character = StrictCharField(max_length=128, required=False, allow_blank=True, default="")
    approaches = text_list_field()
    interventions_count = StrictIntegerField(min_value=0, max_value=INT32_MAX, required=False, default=0)
    key_achievements = text_list_field()

    def validate(self, attrs):
        if attrs["ended_at"] is not None and attrs["ended_at"] < attrs["started_at"]:
            raise serializers.ValidationError({"ended_at": "ended_at is before started_at."})
        return attrs


class MarkerInSerializer(serializers.Serializer):
    marker_id = id_field()
    session_id = id_field()
    player_id = id_field()
    type = serializers.ChoiceField(choices=MarkerType.values)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")
    achieved_at = OffsetDateTimeField()
    therapeutic_value = StrictFloatField(min_value=0, max_value=1)
    related_goal_id = StrictCharField(max_length=128, required=False, allow_blank=True, allow_null=True, default="")

    def validate(self, attrs):
        attrs["related_goal_id"] = attrs["related_goal_id"] or ""
        return attrs


class OutcomeInSerializer(serializers.Serializer):
    response_id = id_field()
    player_id = id_field()
    instrument = serializers.ChoiceField(choices=list(INSTRUMENTS))
    administered_at = OffsetDateTimeField()
    items = serializers.ListField(child=StrictIntegerField(), required=False, allow_null=True, default=None)
    total = StrictIntegerField(required=False, allow_null=True, default=None)

    def validate(self, attrs):
        instrument = get_instrument(attrs["instrument"])
        errors = score_errors(instrument, attrs["items"], attrs["total"])
        if errors:
            raise serializers.ValidationError(errors)
        if attrs["total"] is None:
            attrs["total"] = sum(attrs["items"])
        return attrs


class AlertInSerializer(serializers.Serializer):
    alert_id = id_field()
    player_id = id_field()
    level = serializers.ChoiceField(choices=AlertSeverity.values)
    reason = StrictCharField(max_length=2000)
    occurred_at = OffsetDateTimeField()


class IngestBatchSerializer(serializers.Serializer):
    """Documentation of the whole body; items are validated one by one so errors can name them."""

    sessions = SessionInSerializer(many=True, required=False)
    markers = MarkerInSerializer(many=True, required=False)
    outcomes = OutcomeInSerializer(many=True, required=False)
    alerts = AlertInSerializer(many=True, required=False)


ITEM_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    "sessions": SessionInSerializer,
    "markers": MarkerInSerializer,
    "outcomes": OutcomeInSerializer,
    "alerts": AlertInSerializer,
}
ITEM_ID_FIELD = {"sessions": "session_id", "markers": "marker_id", "outcomes": "response_id", "alerts": "alert_id"}


class KindCountsSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()


class IngestResultSerializer(serializers.Serializer):
    sessions = KindCountsSerializer()
    markers = KindCountsSerializer()
    outcomes = KindCountsSerializer()
    alerts = KindCountsSerializer()


class AlertOutSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    severity = serializers.CharField()
    reason = serializers.CharField()
    alert_id = serializers.CharField(allow_null=True)
    occurred_at = serializers.DateTimeField()
    created_at = serializers.DateTimeField()
    acknowledged = serializers.SerializerMethodField()
    acknowledged_at = serializers.DateTimeField(allow_null=True)

    def get_acknowledged(self, alert) -> bool:
        return alert.acknowledged_at is not None
