"""A clinic's settings: milestone rules, alert escalation, crisis resources, measurement interval and
the webhook (DESIGN §6); every change audited with before and after.

Each service validates its input (raising `ValidationError` naming the field), writes, and records one
`config.change` event in the same transaction. A milestone change forgets the clinic's cached rules (the
model's save and delete do, and so does `milestone_rules_set` after its bulk writes), so the next
recompute uses it. Webhook secrets never leave here except once, as the return value of
`webhook_secret_rotate`; audit details carry them under a secret-looking key, masked by the audit log.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from tracking import access, analytics, audit
from tracking.models import AuditAction, AuditEvent, Clinic, ClinicMilestoneRule, Role, WebhookDelivery
from tracking.validators import text_error

if TYPE_CHECKING:
    from django.contrib.auth.models import _User as User

ESCALATION_MINUTES = (5, 240)
MEASURE_INTERVAL_DAYS = (1, 365)
CRISIS_RESOURCES_MAX = 2000
TITLE_MAX = 200
THRESHOLD_MAX = 100_000
RULES_PER_FAMILY_MAX = 20
DELIVERY_LOG_SIZE = 20
TEST_EVENT = "test"
FAMILY_LABELS = {
    "streak": "Streak (consecutive active days)",
    "skills": "Skills acquired",
    "sessions": "Sessions",
    "breakthroughs": "Breakthroughs",
}


# ----- reads ------------------------------------------------------------------------------------------


def admin_clinics(user: User) -> list[Clinic]:
    """The clinics where `user` is a clinic admin, by name."""
    return list(access.clinics_with_role(user, Role.CLINIC_ADMIN).order_by("name", "pk"))


def admin_clinic(user: User, slug: str | None) -> Clinic | None:
    """The clinic `slug` when `user` is an admin there (the first of theirs when `slug` is None); None
    for any other clinic, so it is a 404 whether or not it exists."""
    clinics = admin_clinics(user)
    if slug is None:
        return clinics[0] if clinics else None
    return next((c for c in clinics if c.slug == slug), None)


def milestone_rules(clinic: Clinic) -> dict[str, list[tuple[int, str]]]:
    """The clinic's own rules per family, as (threshold, title), ascending; empty when it uses the defaults."""
    rules: dict[str, list[tuple[int, str]]] = {family: [] for family in analytics.MILESTONE_FAMILIES}
    for family, threshold, title in ClinicMilestoneRule.objects.filter(clinic=clinic).values_list(
        "family", "threshold", "title"
    ):
        rules[family].append((threshold, title))
    for family in rules:
        rules[family].sort()
    return rules


def default_milestone_rules() -> dict[str, list[tuple[int, str]]]:
    rules: dict[str, list[tuple[int, str]]] = {family: [] for family in analytics.MILESTONE_FAMILIES}
    for rule in analytics.DEFAULT_MILESTONE_RULES:
        rules[rule.family].append((rule.threshold, rule.title))
    return rules


@dataclass(frozen=True)
class DeliveryRow:
    at: Any
    event: str
    status: str
    attempts: int
    http_status: int | None
    error: str


def delivery_log(clinic: Clinic, limit: int = DELIVERY_LOG_SIZE) -> list[DeliveryRow]:
    """The clinic's last deliveries, newest first: the celebration outbox and the test deliveries (which
    have no highlight, so they are kept as their audit events)."""
    rows = [
        DeliveryRow(d.created_at, d.event, d.status, d.attempts, d.last_status_code, d.last_error)
        for d in WebhookDelivery.objects.filter(clinic=clinic).order_by("-created_at", "-pk")[:limit]
    ]
    tests = AuditEvent.objects.filter(
        chain=clinic.slug, action=AuditAction.CONFIG_CHANGE, object=f"clinic:{clinic.slug}:webhook-test"
    ).order_by("-seq")[:limit]
    for event in tests:
        result = (event.detail or {}).get("test_delivery") or {}
        rows.append(
            DeliveryRow(
                event.at,
                TEST_EVENT,
                str(result.get("status", "")),
                int(result.get("attempts", 1)),
                result.get("http_status"),
                str(result.get("error", "")),
            )
        )
    rows.sort(key=lambda row: row.at, reverse=True)
    return rows[:limit]


# ----- validation -------------------------------------------------------------------------------------


def _int_in(value: Any, field: str, low: int, high: int, unit: str) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationError({field: f"Enter a whole number of {unit}."}) from None
    if not low <= number <= high:
        raise ValidationError({field: f"Must be between {low} and {high} {unit}; got {number}."})
    return number


def _text_problem(value: str) -> str | None:
    """NUL or unpaired surrogates (text_error), or any other control character than tab and newlines."""
    problem = text_error(value)
    if problem:
        return problem
    for char in value:
        if char not in "\t\n\r" and unicodedata.category(char) == "Cc":
            return f"Contains a control character (U+{ord(char):04X}), which is not allowed."
    return None


def parse_family_lines(family: str, text: str) -> list[tuple[int, str]]:
    """One rule per non-empty line, "THRESHOLD TITLE" (a colon after the threshold is allowed). Raises a
    ValidationError on the family's field naming the line."""
    label = FAMILY_LABELS[family]
    rules: list[tuple[int, str]] = []
    problem = _text_problem(text)
    if problem:
        raise ValidationError({family: f"{label}: {problem}"})
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        head, _, title = line.strip().partition(" ")
        head = head.rstrip(":|,")
        title = title.strip().lstrip(":|,").strip()
        try:
            threshold = int(head)
        except ValueError:
            raise ValidationError(
                {family: f"{label}, line {number}: start with a whole number (the threshold)."}
            ) from None
        rules.append((threshold, title))
    return rules


def validate_rules(family: str, rules: Sequence[tuple[int, str]]) -> list[tuple[int, str]]:
    """At most 20 rules; thresholds of 1-100000 that strictly increase; titles of 1-200 characters."""
    label = FAMILY_LABELS[family]
    if len(rules) > RULES_PER_FAMILY_MAX:
        raise ValidationError({family: f"{label}: at most {RULES_PER_FAMILY_MAX} milestones; got {len(rules)}."})
    previous = 0
    for threshold, title in rules:
        if not 1 <= threshold <= THRESHOLD_MAX:
            raise ValidationError(
                {family: f"{label}: a threshold must be between 1 and {THRESHOLD_MAX}; got {threshold}."}
            )
        if threshold <= previous:
            raise ValidationError(
                {family: f"{label}: thresholds must strictly increase; {threshold} follows {previous}."}
            )
        if not title.strip():
            raise ValidationError({family: f"{label}: the milestone at {threshold} needs a title."})
        if len(title) > TITLE_MAX:
            raise ValidationError({family: f"{label}: the title at {threshold} is longer than {TITLE_MAX} characters."})
        problem = _text_problem(title)
        if problem:
            raise ValidationError({family: f"{label}: the title at {threshold}: {problem}"})
        previous = threshold
    return list(rules)


def webhook_url_error(url: str) -> str | None:
    """Why `url` cannot be the webhook URL: it must be an http(s) URL, and https in production."""
    if len(url) > 200:
        return "At most 200 characters."
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        return "Enter a full http:// or https:// URL."
    if urlsplit(url).scheme != "https" and getattr(settings, "PRODUCTION", False):
        return "Use an https:// URL: the deliveries carry player ids."
    return None


# ----- writes -----------------------------------------------------------------------------------------


def _audit_change(clinic: Clinic, user: User, before: dict, after: dict, suffix: str = "") -> None:
    audit.audit_here(
        action=AuditAction.CONFIG_CHANGE,
        clinic=clinic,
        user=user,
        object=f"clinic:{clinic.slug}{suffix}",
        detail={"before": before, "after": after},
    )


@transaction.atomic
def _set_field(clinic: Clinic, user: User, field: str, value: Any) -> Clinic:
    locked = Clinic.objects.select_for_update().get(pk=clinic.pk)
    before = getattr(locked, field)
    if before == value:
        return locked
    setattr(locked, field, value)
    locked.save(update_fields=[field])
    _audit_change(locked, user, {field: before}, {field: value})
    setattr(clinic, field, value)
    return locked


def escalation_minutes_set(*, clinic: Clinic, user: User, minutes: Any) -> Clinic:
    value = _int_in(minutes, "alert_escalation_minutes", *ESCALATION_MINUTES, "minutes")
    return _set_field(clinic, user, "alert_escalation_minutes", value)


def measure_interval_set(*, clinic: Clinic, user: User, days: Any) -> Clinic:
    value = _int_in(days, "measure_interval_days", *MEASURE_INTERVAL_DAYS, "days")
    return _set_field(clinic, user, "measure_interval_days", value)


def crisis_resources_set(*, clinic: Clinic, user: User, text: str) -> Clinic:
    text = (text or "").strip().replace("\r\n", "\n")
    problem = _text_problem(text)
    if problem is None and len(text) > CRISIS_RESOURCES_MAX:
        problem = f"At most {CRISIS_RESOURCES_MAX} characters; this is {len(text)}."
    if problem:
        raise ValidationError({"crisis_resources": problem})
    return _set_field(clinic, user, "crisis_resources", text)


def webhook_url_set(*, clinic: Clinic, user: User, url: str) -> Clinic:
    url = (url or "").strip()
    problem = webhook_url_error(url) if url else None
    if problem:
        raise ValidationError({"webhook_url": problem})
    return _set_field(clinic, user, "webhook_url", url)


@transaction.atomic
def webhook_secret_rotate(*, clinic: Clinic, user: User) -> str:
    """A new random secret, stored encrypted and returned once; the audit records that it changed
    (masked), never its value."""
    locked = Clinic.objects.select_for_update().get(pk=clinic.pk)
    had = bool(locked.webhook_secret)
    secret = secrets.token_urlsafe(32)
    locked.webhook_secret = secret
    locked.save(update_fields=["webhook_secret"])
    clinic.webhook_secret = secret
    _audit_change(
        locked,
        user,
        {"webhook_secret": "set" if had else "", "rotated": False},
        {"webhook_secret": "set", "rotated": True},
    )
    return secret


def _rows(rules: Mapping[str, Iterable[tuple[int, str]]]) -> dict[str, list[list[Any]]]:
    return {family: [[t, title] for t, title in items] for family, items in rules.items() if items}


@transaction.atomic
def milestone_rules_set(*, clinic: Clinic, user: User, rules: dict[str, Sequence[tuple[int, str]]]) -> bool:
    """Replaces the clinic's milestone rules. `rules` maps each family to (threshold, title) pairs; all
    families empty means the defaults (every row removed). A family left empty while others have rules
    gets the defaults of that family, so a partial edit never removes a family's milestones. Raises a
    ValidationError naming the first bad family. Returns whether anything changed."""
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, list[tuple[int, str]]] = {}
    for family in analytics.MILESTONE_FAMILIES:
        try:
            cleaned[family] = validate_rules(
                family, [(int(t), str(title).strip()) for t, title in rules.get(family, ())]
            )
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                errors.setdefault(field, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    if any(cleaned.values()):
        defaults = default_milestone_rules()
        cleaned = {family: items or defaults[family] for family, items in cleaned.items()}
        if cleaned == defaults:
            cleaned = {family: [] for family in cleaned}
    locked = Clinic.objects.select_for_update().get(pk=clinic.pk)
    before = milestone_rules(locked)
    if before == cleaned:
        return False
    ClinicMilestoneRule.objects.filter(clinic=locked).delete()
    descriptions = {(r.family, r.threshold): r.description for r in analytics.DEFAULT_MILESTONE_RULES}
    ClinicMilestoneRule.objects.bulk_create(
        ClinicMilestoneRule(
            clinic=locked,
            family=family,
            threshold=threshold,
            title=title,
            description=descriptions.get(
                (family, threshold), f"Reached {threshold} ({FAMILY_LABELS[family].lower()})."
            ),
        )
        for family, items in cleaned.items()
        for threshold, title in items
    )
    key = ClinicMilestoneRule.cache_key(locked.pk)
    cache.delete(key)
    transaction.on_commit(lambda: cache.delete(key))  # a recompute that read the old rules meanwhile
    _audit_change(
        locked,
        user,
        {"milestone_rules": _rows(before) or "defaults"},
        {"milestone_rules": _rows(cleaned) or "defaults"},
        ":milestones",
    )
    return True


@transaction.atomic
def webhook_test_record(*, clinic: Clinic, user: User, status: str, http_status: int | None, error: str) -> None:
    """Records a test delivery's result (the delivery log shows it): an audit event of the clinic."""
    audit.audit_here(
        action=AuditAction.CONFIG_CHANGE,
        clinic=clinic,
        user=user,
        object=f"clinic:{clinic.slug}:webhook-test",
        detail={
            "test_delivery": {
                "url_host": urlsplit(clinic.webhook_url).hostname or "",
                "status": status,
                "attempts": 1,
                "http_status": http_status,
                "error": error[:200],
            }
        },
    )
