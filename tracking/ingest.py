"""The ingest of DESIGN §6, all of it: what the game server (or an outcomes file) may send, how it is
validated, and how a batch is stored all-or-nothing and idempotently by external id.

- Validation: strict item serializers (a number sent as a string, an id sent as a number or a timestamp
  without an offset is an error, not something to guess about), which document the body and word every
  error, and compiled pydantic schemas that accept exactly what they accept and validate the items (a
  serializer is built only for an item the schema refused, to name its bad fields); `batch_validate`
  names each bad item and field. The CSV import (`reports.importing`) validates its rows the same way.
- The kit: `IngestResult` (counts per kind), `IngestRejected`, `item_error`, the locked patient lookup and
  the stored rows by external id.
- The upserts of sessions, markers, outcomes and crisis signals, `ingest_batch` and `outcomes_import`.
  Sessions and markers: one lookup per kind, then one INSERT and one UPDATE (of the changed rows only)
  per kind, from arrays (PostgreSQL), or the ORM (the SQLite demo).
  What the new data means for alerts (item 9, crisis signals, reliable deterioration) is decided by
  `reports.alerts`, in the same transaction; what follows after commit (recompute, e-mail, live pages) is
  announced with signals (`tracking.signals`).
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import psycopg
from django.conf import settings
from django.core.validators import RegexValidator
from django.db import connection, models, transaction
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, ValidationInfo, model_validator
from pydantic import ValidationError as PydanticValidationError
from rest_framework import serializers

from reports import alerts
from reports.instruments import INSTRUMENTS, get_instrument, score_errors
from reports.models import Alert, AlertKind, AlertSeverity, OutcomeResponse
from tracking import audit
from tracking.fields import encrypted_columns
from tracking.models import (
    AuditAction,
    Clinic,
    MarkerType,
    Patient,
    ProgressMarker,
    SessionStatus,
    TherapySession,
)
from tracking.signals import alerts_changed, data_changed, outcomes_changed, send_on_commit
from tracking.validators import (
    EXTERNAL_ID_PATTERN,
    INT32_MAX,
    TIMESTAMP_MIN,
    echo_safe,
    external_id_error,
    text_error,
)

# A validated item: the fields of its serializer's `validated_data` (values of several types, per
# field), and `_index`, its position in the batch (or its line in an outcomes file).
Item = dict[str, Any]
# What is wrong with an item: kind, index, item_id, field, reason (those known).
ItemError = dict[str, str | int]

# ----- validation ---------------------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """Text only, and only text PostgreSQL can store: no NUL, no unpaired surrogate."""

    if TYPE_CHECKING:  # DRF is untyped: this says what `fail` does, which is always raise.

        def fail(self, key: str, **kwargs: object) -> NoReturn: ...

    def to_internal_value(self, data: object) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if reason := text_error(data):
            raise serializers.ValidationError(reason, code="invalid_text")
        return super().to_internal_value(data)


class ExternalIdField(StrictCharField):
    """A player id or an external id (DESIGN §6). Checked before trimming: an id with a trailing newline
    is refused, not silently changed into another id."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=128, **kwargs)
        # Documents the pattern in the OpenAPI schema; the check that decides is the fullmatch below.
        self.validators.append(RegexValidator(EXTERNAL_ID_PATTERN))

    def to_internal_value(self, data: object) -> str:
        if isinstance(data, str) and (reason := external_id_error(data)):
            raise serializers.ValidationError(reason, code="invalid_id")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: object) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data: object) -> float:
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

    if TYPE_CHECKING:  # DRF is untyped: this says what `fail` does, which is always raise.

        def fail(self, key: str, **kwargs: object) -> NoReturn: ...

    def to_internal_value(self, value: object) -> datetime:
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


def external_id_field(**kwargs: Any) -> ExternalIdField:
    return ExternalIdField(**kwargs)


def text_list_field() -> serializers.ListField:
    return serializers.ListField(child=StrictCharField(max_length=200), required=False, max_length=100, default=list)


class SessionInSerializer(serializers.Serializer):
    session_id = external_id_field()
    player_id = external_id_field()
    started_at = OffsetDateTimeField()
    ended_at = OffsetDateTimeField(required=False, allow_null=True, default=None)
    status = serializers.ChoiceField(choices=SessionStatus.values)
    duration_minutes = StrictFloatField(min_value=0, max_value=24 * 60)
    world = StrictCharField(max_length=128, required=False, allow_blank=True, default="")
    character = StrictCharField(max_length=128, required=False, allow_blank=True, default="")
    approaches = text_list_field()
    interventions_count = StrictIntegerField(min_value=0, max_value=INT32_MAX, required=False, default=0)
    key_achievements = text_list_field()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["ended_at"] is not None and attrs["ended_at"] < attrs["started_at"]:
            raise serializers.ValidationError({"ended_at": "ended_at is before started_at."})
        return attrs


class MarkerInSerializer(serializers.Serializer):
    marker_id = external_id_field()
    session_id = external_id_field()
    player_id = external_id_field()
    type = serializers.ChoiceField(choices=MarkerType.values)
    description = StrictCharField(max_length=2000, required=False, allow_blank=True, default="")
    achieved_at = OffsetDateTimeField()
    therapeutic_value = StrictFloatField(min_value=0, max_value=1)
    related_goal_id = StrictCharField(max_length=128, required=False, allow_blank=True, allow_null=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["related_goal_id"] = attrs["related_goal_id"] or ""
        return attrs


class OutcomeInSerializer(serializers.Serializer):
    response_id = external_id_field()
    player_id = external_id_field()
    instrument = serializers.ChoiceField(choices=list(INSTRUMENTS))
    administered_at = OffsetDateTimeField()
    items = serializers.ListField(child=StrictIntegerField(), required=False, allow_null=True, default=None)
    total = StrictIntegerField(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instrument = get_instrument(attrs["instrument"])
        errors = score_errors(instrument, attrs["items"], attrs["total"])
        if errors:
            raise serializers.ValidationError(errors)
        if attrs["total"] is None:
            attrs["total"] = sum(attrs["items"])
        return attrs


class AlertInSerializer(serializers.Serializer):
    alert_id = external_id_field()
    player_id = external_id_field()
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


KINDS = tuple(ITEM_SERIALIZERS)


# ----- the compiled schema ------------------------------------------------------------------------
#
# Every item is validated by a pydantic model compiled once at import (no per-item serializer: building a
# DRF serializer deep-copies its declared fields, most of the ingest's validation time). The models accept
# exactly what the serializers above accept and give the same validated values, or are stricter at the
# edges (text that is only too long before trimming). The serializers stay the contract's wording: an item
# the schema refuses is run through its serializer, which names each bad field in the words clients and
# tests rely on (and accepts the rare item only the schema refused).


class _Refused(ValueError):
    """An item the compiled schema does not accept; its serializer says why."""


def _text_check(max_length: int, *, allow_blank: bool) -> AfterValidator:
    def check(value: str) -> str:
        if text_error(value):
            raise _Refused
        value = value.strip()  # DRF's CharField trims, and checks blank and length after trimming
        if (not value and not allow_blank) or len(value) > max_length:
            raise _Refused
        return value

    return AfterValidator(check)


def _external_id(value: str) -> str:
    # Checked untrimmed, as ExternalIdField does; a valid id has no whitespace to trim.
    if external_id_error(value):
        raise _Refused
    return value


def _choice_check(choices: Sequence[str]) -> AfterValidator:
    allowed = frozenset(choices)

    def check(value: str) -> str:
        if value not in allowed:
            raise _Refused
        return value

    return AfterValidator(check)


def _instant(value: object, info: ValidationInfo) -> datetime:
    """As OffsetDateTimeField: ISO 8601 with an offset, from TIMESTAMP_MIN to the batch's `latest`."""
    if not isinstance(value, str):
        raise _Refused
    parsed = parse_datetime(value)  # a ValueError (e.g. month 13) is a refusal too
    if parsed is None or timezone.is_naive(parsed):
        raise _Refused
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:
        raise _Refused from None
    latest = (info.context or schema_context())["latest"]
    if instant < TIMESTAMP_MIN or instant > latest:
        raise _Refused
    return instant


_Id = Annotated[str, AfterValidator(_external_id)]
_Instant = Annotated[datetime, PlainValidator(_instant)]
_Text128 = Annotated[str, _text_check(128, allow_blank=True)]
_TextList = Annotated[list[Annotated[str, _text_check(200, allow_blank=False)]], Field(max_length=100)]


class _ItemSchema(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class SessionSchema(_ItemSchema):
    session_id: _Id
    player_id: _Id
    started_at: _Instant
    ended_at: _Instant | None = None
    status: Annotated[str, _choice_check(SessionStatus.values)]
    duration_minutes: Annotated[float, Field(ge=0, le=24 * 60)]
    world: _Text128 = ""
    character: _Text128 = ""
    approaches: _TextList = Field(default_factory=list)
    interventions_count: Annotated[int, Field(ge=0, le=INT32_MAX)] = 0
    key_achievements: _TextList = Field(default_factory=list)

    @model_validator(mode="after")
    def _ends_after_start(self) -> "SessionSchema":
        if self.ended_at is not None and self.ended_at < self.started_at:
            raise _Refused
        return self


class MarkerSchema(_ItemSchema):
    marker_id: _Id
    session_id: _Id
    player_id: _Id
    type: Annotated[str, _choice_check(MarkerType.values)]
    description: Annotated[str, _text_check(2000, allow_blank=True)] = ""
    achieved_at: _Instant
    therapeutic_value: Annotated[float, Field(ge=0, le=1)]
    related_goal_id: _Text128 | None = ""

    @model_validator(mode="after")
    def _goal_text(self) -> "MarkerSchema":
        self.related_goal_id = self.related_goal_id or ""
        return self


class OutcomeSchema(_ItemSchema):
    response_id: _Id
    player_id: _Id
    instrument: Annotated[str, _choice_check(list(INSTRUMENTS))]
    administered_at: _Instant
    items: list[int] | None = None
    total: int | None = None

    @model_validator(mode="after")
    def _scores(self) -> "OutcomeSchema":
        if score_errors(get_instrument(self.instrument), self.items, self.total):
            raise _Refused
        if self.total is None:
            self.total = sum(self.items or ())
        return self


class AlertSchema(_ItemSchema):
    alert_id: _Id
    player_id: _Id
    level: Annotated[str, _choice_check(AlertSeverity.values)]
    reason: Annotated[str, _text_check(2000, allow_blank=False)]
    occurred_at: _Instant


ITEM_SCHEMAS: dict[str, type[_ItemSchema]] = {
    "sessions": SessionSchema,
    "markers": MarkerSchema,
    "outcomes": OutcomeSchema,
    "alerts": AlertSchema,
}
ITEM_FIELDS = {kind: frozenset(schema.model_fields) for kind, schema in ITEM_SCHEMAS.items()}


def schema_context() -> dict[str, datetime]:
    """What the schema's timestamp check needs: the latest instant accepted, fixed once per batch."""
    return {"latest": timezone.now() + timedelta(seconds=settings.INGEST_FUTURE_TOLERANCE_SECONDS)}


def schema_validate(kind: str, item: Mapping[str, Any], context: dict[str, datetime] | None = None) -> Item | None:
    """One item's validated fields by the compiled schema alone, or None when it refuses the item (its
    serializer then says why, or, rarely, accepts it)."""
    try:
        return dict(ITEM_SCHEMAS[kind].model_validate(item, context=context or schema_context()).__dict__)
    except PydanticValidationError:
        return None


def item_validate(kind: str, item: dict[str, Any], context: dict[str, datetime]) -> tuple[Item | None, list[ItemError]]:
    """One item's validated fields, or the errors its serializer names (field, reason)."""
    if (values := schema_validate(kind, item, context)) is not None:
        return values, []
    serializer = ITEM_SERIALIZERS[kind](data=item)
    if not serializer.is_valid():
        return None, _field_errors(serializer.errors)
    return dict(serializer.validated_data), []


def batch_validate(data: object, *, max_items: int) -> dict[str, list[Item]]:
    try:
        return _batch_validate(data, max_items=max_items)
    except IngestRejected as rejected:
        # Field names and messages may quote the client's input; a quoted unpaired surrogate would make
        # the JSON answer unencodable (a 500 instead of this 400).
        raise IngestRejected([_echo_safe(e) for e in rejected.errors]) from None


def _echo_safe(error: ItemError) -> ItemError:
    return {key: echo_safe(value, limit=500) if isinstance(value, str) else value for key, value in error.items()}


def _batch_validate(data: object, *, max_items: int) -> dict[str, list[Item]]:
    if not isinstance(data, dict):
        raise IngestRejected(
            [{"field": "body", "reason": "Expected a JSON object with sessions, markers, outcomes, alerts."}]
        )
    errors: list[ItemError] = []
    unknown = sorted(set(data) - set(KINDS))
    errors += [{"field": key, "reason": f"Unknown key; expected one of {', '.join(KINDS)}."} for key in unknown]
    lists = {kind: [] if data.get(kind) is None else data[kind] for kind in KINDS}
    for kind, items in lists.items():
        if not isinstance(items, list):
            errors.append({"kind": kind, "field": kind, "reason": "Expected a list."})
    if errors:
        raise IngestRejected(errors)
    total = sum(len(items) for items in lists.values())
    if total == 0:
        raise IngestRejected([{"field": "body", "reason": "The batch has no items."}])
    if total > max_items:
        raise IngestRejected(
            [{"field": "body", "reason": f"The batch has {total} items; at most {max_items} per request."}]
        )

    validated: dict[str, list[Item]] = {kind: [] for kind in KINDS}
    context = schema_context()
    for kind, items in lists.items():
        seen: set[str] = set()
        id_field = ITEM_ID_FIELD[kind]
        for index, item in enumerate(items):
            where: ItemError = {"kind": kind, "index": index}
            # An invalid id is not quoted back: the error names the field and says why instead.
            if isinstance(item, dict) and isinstance(item.get(id_field), str) and not external_id_error(item[id_field]):
                where["item_id"] = item[id_field]
            if not isinstance(item, dict):
                errors.append({**where, "field": kind, "reason": "Expected a JSON object."})
                continue
            values, item_errors = item_validate(kind, item, context)
            if values is None:
                errors += [{**where, **e} for e in item_errors]
                continue
            unknown_fields = sorted(set(item) - ITEM_FIELDS[kind])
            if unknown_fields:
                errors += [{**where, "field": f, "reason": "Unknown field."} for f in unknown_fields]
                continue
            if item[id_field] in seen:
                errors.append({**where, "field": id_field, "reason": "Appears twice in this batch."})
                continue
            seen.add(item[id_field])
            values["_index"] = index
            validated[kind].append(values)
    if errors:
        raise IngestRejected(errors)
    return validated


def _field_errors(detail: Mapping[str, object]) -> list[ItemError]:
    out: list[ItemError] = []
    for name, messages in detail.items():
        if isinstance(messages, dict):  # a nested list field: {position: [messages]}
            for position, inner in messages.items():
                out += [{"field": f"{name}[{position}]", "reason": str(m)} for m in _as_list(inner)]
        else:
            out += [{"field": name, "reason": str(m)} for m in _as_list(messages)]
    return out


def _as_list(messages: object) -> Sequence[object]:
    if isinstance(messages, list | tuple):
        return messages
    if isinstance(messages, serializers.ErrorDetail | str):
        return [messages]
    return [str(messages)]


# ----- the kit -------------------------------------------------------------------------------------

SESSION_FIELDS = (
    "started_at",
    "ended_at",
    "status",
    "duration_minutes",
    "world",
    "character",
    "approaches",
    "interventions_count",
    "key_achievements",
)
MARKER_FIELDS = ("type", "description", "achieved_at", "therapeutic_value", "related_goal_id")


@dataclass
class KindCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass
class IngestResult:
    counts: dict[str, KindCounts] = field(
        default_factory=lambda: {k: KindCounts() for k in ("sessions", "markers", "outcomes", "alerts")}
    )
    changed_patient_ids: set[int] = field(default_factory=set)
    new_alert_ids: list[int] = field(default_factory=list)

    @property
    def created_any(self) -> bool:
        return any(c.created for c in self.counts.values())

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {kind: vars(c) for kind, c in self.counts.items()}


class IngestRejected(Exception):
    """Items that are well-formed but contradict what is stored; nothing of the batch is kept."""

    def __init__(self, errors: list[ItemError]) -> None:
        super().__init__(f"{len(errors)} item(s) rejected")
        self.errors = errors


def item_error(kind: str, item: Item, id_field: str, field_name: str, reason: str) -> ItemError:
    return {"kind": kind, "index": item["_index"], "item_id": item[id_field], "field": field_name, "reason": reason}


def patients_get_or_create_locked(clinic: Clinic, player_ids: set[str]) -> dict[str, Patient]:
    """Locks the patients' rows (in id order, so concurrent batches for the same players queue instead of
    deadlocking), creating those seen for the first time and locking them too: one query when every
    player is known. The lock is what makes a concurrent identical batch see the first one's rows and
    count them as unchanged. Their encrypted columns are not read (ingest never needs them)."""
    patients = _lock_patients(clinic, player_ids)
    missing = player_ids - patients.keys()
    if missing:
        Patient.objects.bulk_create(
            [Patient(clinic=clinic, player_id=p) for p in sorted(missing)], ignore_conflicts=True
        )
        patients.update(_lock_patients(clinic, missing))
    return patients


def _lock_patients(clinic: Clinic, player_ids: set[str]) -> dict[str, Patient]:
    rows = (
        Patient.objects.select_for_update()
        .defer(*encrypted_columns(Patient))
        .filter(clinic=clinic, player_id__in=player_ids)
        .order_by("pk")
    )
    return {p.player_id: p for p in rows}


_Stored = TypeVar("_Stored", bound=models.Model)


def stored_by_external_id(
    model: type[_Stored], clinic: Clinic, id_field: str, items: list[Item], item_field: str | None = None
) -> dict[str, _Stored]:
    """The clinic's stored rows whose `id_field` is one the items give (in `item_field`, default the same
    name), keyed by that id: one query per kind of item in a batch."""
    ids = {item[item_field or id_field] for item in items}
    if not ids:
        return {}  # no query, and no time building one
    # `_default_manager` is `objects` for these models; django-stubs types only it on a `type[_Stored]`.
    return {
        getattr(row, id_field): row for row in model._default_manager.filter(clinic=clinic, **{f"{id_field}__in": ids})
    }


# A stored session as the batch needs it: its pk (None while not yet written), its patient's pk and the
# values of SESSION_FIELDS (None for a session only named by a marker).
@dataclass
class _SessionRow:
    pk: int | None
    patient_id: int
    values: dict[str, Any] | None = None


def _sessions_stored(clinic: Clinic, items: dict[str, list[Item]]) -> dict[str, _SessionRow]:
    """The clinic's stored sessions that the batch's sessions and markers name: one query for both."""
    ids = {item["session_id"] for item in items["sessions"]} | {item["session_id"] for item in items["markers"]}
    if not ids:
        return {}
    rows = TherapySession.objects.filter(clinic=clinic, session_id__in=ids).values_list(
        "pk", "session_id", "patient_id", *SESSION_FIELDS
    )
    return {row[1]: _SessionRow(row[0], row[2], dict(zip(SESSION_FIELDS, row[3:], strict=True))) for row in rows}


def _upsert_sessions(
    clinic: Clinic,
    items: list[Item],
    patients: dict[str, Patient],
    sessions: dict[str, _SessionRow],
    result: IngestResult,
    errors: list[ItemError],
) -> None:
    """Decides, per item, created / updated / unchanged / rejected against the stored rows, then writes
    the new and the changed rows with one statement each (when nothing was rejected so far: the batch is
    rolled back anyway). A row whose values are all equal is not written: an UPDATE would make a row
    history copy of nothing. New sessions are added to `sessions` for the batch's markers."""
    counts = result.counts["sessions"]
    to_create: list[tuple[str, int, dict[str, Any]]] = []
    to_update: list[tuple[int, dict[str, Any]]] = []
    for item in items:
        patient = patients[item["player_id"]]
        values = {f: item[f] for f in SESSION_FIELDS}
        stored = sessions.get(item["session_id"])
        if stored is None:
            to_create.append((item["session_id"], patient.pk, values))
            counts.created += 1
        elif stored.patient_id != patient.pk:
            errors.append(
                item_error("sessions", item, "session_id", "player_id", "This session belongs to another player.")
            )
            continue
        elif stored.values == values:
            counts.unchanged += 1
            continue
        else:
            assert stored.pk is not None  # a stored row
            to_update.append((stored.pk, values))
            counts.updated += 1
        result.changed_patient_ids.add(patient.pk)
    for session_id, patient_id, _values in to_create:
        sessions[session_id] = _SessionRow(None, patient_id)
    if errors:
        return
    now = timezone.now()
    created = _rows_insert(
        TherapySession,
        [
            {
                "clinic": clinic.pk,
                "patient": patient_id,
                "session_id": session_id,
                **values,
                "received_at": now,
                "updated_at": now,
            }
            for session_id, patient_id, values in to_create
        ],
        key="session_id",
    )
    for session_id, pk in created.items():
        sessions[session_id].pk = pk
    _rows_update(TherapySession, [(pk, {**values, "updated_at": now}) for pk, values in to_update])


def _upsert_markers(
    clinic: Clinic,
    items: list[Item],
    patients: dict[str, Patient],
    sessions: dict[str, _SessionRow],
    result: IngestResult,
    errors: list[ItemError],
) -> None:
    counts = result.counts["markers"]
    existing: dict[str, tuple[int, int, dict[str, Any]]] = {}
    if items:
        rows = ProgressMarker.objects.filter(clinic=clinic, marker_id__in={i["marker_id"] for i in items}).values_list(
            "pk", "marker_id", "session_id", *MARKER_FIELDS
        )
        existing = {row[1]: (row[0], row[2], dict(zip(MARKER_FIELDS, row[3:], strict=True))) for row in rows}
    to_create: list[dict[str, Any]] = []
    to_update: list[tuple[int, dict[str, Any]]] = []
    for item in items:
        patient = patients[item["player_id"]]
        session = sessions.get(item["session_id"])
        if session is None:
            errors.append(
                item_error(
                    "markers", item, "marker_id", "session_id", "Unknown session: post it first or in this batch."
                )
            )
            continue
        if session.patient_id != patient.pk:
            errors.append(
                item_error("markers", item, "marker_id", "player_id", "The session belongs to another player.")
            )
            continue
        values = {f: item[f] for f in MARKER_FIELDS}
        stored = existing.get(item["marker_id"])
        if stored is None:
            to_create.append(
                {
                    "clinic": clinic.pk,
                    "patient": patient.pk,
                    "session": session.pk,
                    "marker_id": item["marker_id"],
                    **values,
                }
            )
            counts.created += 1
        elif stored[1] != session.pk:  # also when the session is new in this batch
            errors.append(
                item_error("markers", item, "marker_id", "session_id", "This marker was recorded for another session.")
            )
            continue
        elif stored[2] == values:
            counts.unchanged += 1
            continue
        else:
            to_update.append((stored[0], values))
            counts.updated += 1
        result.changed_patient_ids.add(patient.pk)
    if errors:
        return
    now = timezone.now()
    _rows_insert(ProgressMarker, [{**row, "received_at": now} for row in to_create], key="marker_id")
    _rows_update(ProgressMarker, to_update)


def _rows_insert(model: type[models.Model], rows: list[dict[str, Any]], *, key: str) -> dict[str, int]:
    """Inserts `rows` (field name → value, foreign keys as pks) in one statement; returns the new pks by
    `key`. PostgreSQL: one INSERT … SELECT FROM unnest(one array per column); elsewhere (the SQLite demo)
    the ORM's bulk_create."""
    if not rows:
        return {}
    fields = [_concrete_field(model, name) for name in rows[0]]
    if connection.vendor != "postgresql":
        objs = [model(**{f.attname: row[f.name] for f in fields}) for row in rows]
        model._default_manager.bulk_create(objs)
        return {getattr(obj, key): obj.pk for obj in objs}
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(_quoted_column(f) for f in fields)
    params, arrays, names = _column_arrays(fields, rows)
    sql = (
        f"INSERT INTO {table} ({columns}) SELECT {', '.join(names)} FROM unnest({arrays}) "  # noqa: S608 (names from the models)
        f"AS v({', '.join(f'c{i}' for i in range(len(fields)))}) RETURNING id, {connection.ops.quote_name(key)}"
    )
    return {external_id: pk for pk, external_id in _execute(sql, params)}


def _rows_update(model: type[models.Model], updates: list[tuple[int, dict[str, Any]]]) -> None:
    """Writes new values onto stored rows (pk, field name → value), all with the same fields, in one
    UPDATE … FROM unnest(…) on PostgreSQL; with `save()` per row elsewhere."""
    if not updates:
        return
    if connection.vendor != "postgresql":
        for pk, values in updates:
            model._default_manager.filter(pk=pk).update(**values)
        return
    fields = [_concrete_field(model, name) for name in updates[0][1]]
    table = connection.ops.quote_name(model._meta.db_table)
    rows = [{"id": pk, **values} for pk, values in updates]
    params, arrays, names = _column_arrays([model._meta.pk, *fields], rows)
    assignments = ", ".join(f"{_quoted_column(f)} = {names[i + 1]}" for i, f in enumerate(fields))
    sql = (
        f"UPDATE {table} AS t SET {assignments} FROM unnest({arrays}) "  # noqa: S608 (names from the models)
        f"AS v({', '.join(f'c{i}' for i in range(len(fields) + 1))}) WHERE t.id = v.c0"
    )
    _execute(sql, params)


def _concrete_field(model: type[models.Model], name: str) -> "models.Field[Any, Any]":
    found = model._meta.get_field(name)
    assert isinstance(found, models.Field)
    return found


def _quoted_column(f: "models.Field[Any, Any]") -> str:
    assert f.column is not None  # a concrete field
    return connection.ops.quote_name(f.column)


def _column_arrays(
    fields: "Sequence[models.Field[Any, Any]]", rows: list[dict[str, Any]]
) -> tuple[list[list[Any]], str, list[str]]:
    """One array parameter per column, each value prepared by its field (`get_db_prep_value`: an encrypted
    field encrypts there), the typed placeholders for unnest, and the select expressions v.c0, v.c1…
    JSON travels as text and is cast back, since psycopg has no array of its Jsonb wrapper."""
    params: list[list[Any]] = []
    placeholders: list[str] = []
    names: list[str] = []
    for i, f in enumerate(fields):
        if isinstance(f, models.JSONField):
            params.append([json.dumps(row[f.name], cls=f.encoder) for row in rows])
            placeholders.append("%b::text[]")
            names.append(f"v.c{i}::jsonb")
        else:
            db_type = "bigint" if f.is_relation or f.primary_key else f.db_type(connection)
            values = [row[f.name] for row in rows]
            if type(f) not in _PLAIN_FIELDS:  # e.g. an EncryptedTextField, which encrypts here
                values = [f.get_db_prep_value(v, connection, prepared=False) for v in values]
            params.append(values)
            placeholders.append(f"%b::{db_type}[]")
            names.append(f"v.c{i}")
    return params, ", ".join(placeholders), names


# Fields whose prepared value is the validated value itself (aware datetimes, floats, ints, text), so the
# per-value get_db_prep_value can be skipped. Exact classes: a subclass may prepare differently.
_PLAIN_FIELDS: frozenset[type] = frozenset(
    {
        models.BigAutoField,
        models.ForeignKey,
        models.CharField,
        models.TextField,
        models.DateTimeField,
        models.FloatField,
        models.PositiveIntegerField,
        models.IntegerField,
    }
)


def _execute(sql: str, params: list[list[Any]]) -> list[tuple[Any, ...]]:
    """Runs one statement with server-side binding and binary arrays (the `%b` placeholders) on Django's
    connection, in its transaction and its query log: Django's default client-side binding would quote
    every array element into the SQL text, which costs more than the INSERT itself for a batch of 1,000."""
    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)
    wrapper = CursorDebugWrapper if connection.queries_logged else CursorWrapper
    with wrapper(raw, connection) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if raw.description else []


@transaction.atomic
def ingest_batch(*, clinic: Clinic, items: dict[str, list[Item]], token_name: str | None = None) -> IngestResult:
    """Stores a validated batch all-or-nothing and idempotently (DESIGN §6). Raises IngestRejected, with
    the transaction rolled back, when an item contradicts what is stored. Records one `ingest` event (by
    `token:<token_name>`; without a name, whoever the current request is, else `system`) with the counts
    per kind and the player ids of the batch, in the same transaction."""
    result = IngestResult()
    errors: list[ItemError] = []
    player_ids = {item["player_id"] for kind_items in items.values() for item in kind_items}
    patients = patients_get_or_create_locked(clinic, player_ids)

    sessions = _sessions_stored(clinic, items)
    _upsert_sessions(clinic, items["sessions"], patients, sessions, result, errors)
    _upsert_markers(clinic, items["markers"], patients, sessions, result, errors)
    outcomes_ingest(clinic=clinic, items=items["outcomes"], patients=patients, result=result, errors=errors)
    alerts_ingest(clinic=clinic, items=items["alerts"], patients=patients, result=result, errors=errors)
    if errors:
        raise IngestRejected(errors)

    if result.changed_patient_ids:
        # Marks the analytics stale in this same transaction, so a lost task is found again later.
        Patient.objects.filter(pk__in=result.changed_patient_ids).update(data_changed_at=timezone.now())
        send_on_commit(data_changed, patient_ids=sorted(result.changed_patient_ids))
    if result.new_alert_ids:
        send_on_commit(alerts_changed, clinic_ids=[clinic.pk], raised=list(result.new_alert_ids))
    if result.counts["outcomes"].created:
        send_on_commit(outcomes_changed, clinic_ids=[clinic.pk])
    _audit_ingest(clinic, player_ids, result, actor=audit.token_actor(token_name) if token_name else None)
    return result


def _audit_ingest(
    clinic: Clinic,
    player_ids: set[str],
    result: IngestResult,
    *,
    actor: str | None,
    source: dict[str, str] | None = None,
) -> None:
    """The one `ingest` event of a batch or a file: counts per kind and the player ids it named, never
    any item's content. Appended last, so the chain's head stays locked only until the commit."""
    audit.audit_here(
        action=AuditAction.INGEST,
        clinic=clinic,
        actor=actor,
        patients=player_ids,
        detail={**(source or {}), "counts": result.as_dict(), "alerts_raised": len(result.new_alert_ids)},
    )


# ----- questionnaires and crisis signals ----------------------------------------------------------


def outcomes_ingest(
    *, clinic: Clinic, items: list[Item], patients: dict[str, Patient], result: IngestResult, errors: list[ItemError]
) -> None:
    """Stores new responses; a response posted again unchanged is counted as unchanged. A stored answer is
    never rewritten: a changed one is rejected so a clinical record cannot be silently altered."""
    existing = stored_by_external_id(OutcomeResponse, clinic, "response_id", items)
    counts = result.counts["outcomes"]
    answered: dict[int, Patient] = {}  # patients with a new response
    for item in items:
        patient = patients[item["player_id"]]
        stored = existing.get(item["response_id"])
        if stored is not None:
            same = (
                stored.patient_id == patient.pk
                and stored.instrument == item["instrument"]
                and stored.administered_at == item["administered_at"]
                and stored.total == item["total"]
                and (item["items"] is None or stored.items == item["items"])
            )
            if same:
                counts.unchanged += 1
            else:
                errors.append(
                    item_error(
                        "outcomes",
                        item,
                        "response_id",
                        "response_id",
                        "Already recorded with different values; a stored response cannot be changed.",
                    )
                )
            continue
        response = OutcomeResponse.objects.create(
            clinic=clinic,
            patient=patient,
            response_id=item["response_id"],
            instrument=item["instrument"],
            administered_at=item["administered_at"],
            total=item["total"],
            **OutcomeResponse.item_columns(item["items"]),
        )
        counts.created += 1
        result.changed_patient_ids.add(patient.pk)
        answered.setdefault(patient.pk, patient)
        alert = alerts.risk_item_alert(response, patient)
        if alert is not None:
            result.new_alert_ids.append(alert.pk)
    result.new_alert_ids += [a.pk for a in alerts.deterioration_alerts(patients=list(answered.values()))]


def alerts_ingest(
    *, clinic: Clinic, items: list[Item], patients: dict[str, Patient], result: IngestResult, errors: list[ItemError]
) -> None:
    """Crisis signals from the game: each becomes an alert at once, in the ingest transaction."""
    existing = stored_by_external_id(Alert, clinic, "alert_id", items)
    counts = result.counts["alerts"]
    for item in items:
        patient = patients[item["player_id"]]
        stored = existing.get(item["alert_id"])
        if stored is not None:
            if stored.patient_id == patient.pk and (stored.severity, stored.reason, stored.occurred_at) == (
                item["level"],
                item["reason"],
                item["occurred_at"],
            ):
                counts.unchanged += 1
            else:
                errors.append(
                    item_error(
                        "alerts",
                        item,
                        "alert_id",
                        "alert_id",
                        "Already recorded with different values; a stored crisis signal cannot be changed.",
                    )
                )
            continue
        alert = alerts.alert_raise(
            patient=patient,
            kind=AlertKind.CRISIS_SIGNAL,
            severity=item["level"],
            reason=item["reason"],
            occurred_at=item["occurred_at"],
            alert_id=item["alert_id"],
        )
        counts.created += 1
        result.changed_patient_ids.add(patient.pk)
        result.new_alert_ids.append(alert.pk)


@transaction.atomic
def outcomes_import(*, clinic: Clinic, items: list[Item], file_name: str = "") -> IngestResult:
    """Stores the validated rows of an outcomes file (`manage.py import_outcomes`) all-or-nothing, exactly
    as the ingest API stores outcomes: patients are created on first sight, a response already stored
    unchanged is counted as unchanged, a changed one is rejected, item 9 > 0 raises an urgent alert.
    Raises IngestRejected (the transaction rolled back) naming each rejected item; an item's `_index` is
    its line in the file. Recorded as one `ingest` event (actor `system`) with the counts and the file's
    name."""
    result = IngestResult()
    errors: list[ItemError] = []
    player_ids = {item["player_id"] for item in items}
    patients = patients_get_or_create_locked(clinic, player_ids)
    outcomes_ingest(clinic=clinic, items=items, patients=patients, result=result, errors=errors)
    if errors:
        raise IngestRejected(errors)
    if result.changed_patient_ids:
        # As ingest does: the patient's stored analytics are stale from this transaction on.
        Patient.objects.filter(pk__in=result.changed_patient_ids).update(data_changed_at=timezone.now())
    if result.counts["outcomes"].created:
        send_on_commit(outcomes_changed, clinic_ids=[clinic.pk])
    source = {"source": "import_outcomes", "file": audit.storable_text(file_name, limit=200)}
    _audit_ingest(clinic, player_ids, result, actor=audit.SYSTEM_ACTOR, source=source)
    return result
