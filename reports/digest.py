"""The daily measures-due digest (DESIGN §8): each therapist gets one e-mail a day listing their patients
with a questionnaire due (ids only, never scores or free text).

When: the beat runs `send_due_digests` hourly. A therapist's digest for a clinic goes in the hour of that
clinic's local day equal to `DIGEST_HOUR`, at most once per clinic-local day, and only when something is
due (no row, no e-mail otherwise).

What: the patients come from `tracking.selectors.caseload_due_rows`, the caseload's own rows filtered by
the same SQL as its "PHQ-9 due" / "GAD-7 due" filters and marked by the same rule, so the e-mail and the
page cannot disagree. Each patient is a player id, the measures due and since when, and a link to their
page.

Once: a `MeasureDigest` row (unique per therapist, clinic and local day) is claimed in its own
transaction before the send; the send then happens with that row locked, and `sent_at` is set in the same
transaction. Two runs at once: the second waits for the lock, finds `sent_at` set and sends nothing. A
send that fails rolls back to the claimed, unsent row, is logged by the error's class only (never its
message, which could quote an address or an id), and is retried by every later run of the same local day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from reports.alerts import shown
from reports.instruments import get_instrument
from reports.models import MeasureDigest
from tracking.models import Clinic, Membership, Role
from tracking.selectors import DigestRow, caseload_due_rows

if TYPE_CHECKING:
    from tracking.access import User

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DigestLine:
    """One patient of the e-mail."""

    player_id: str
    measures: str  # "PHQ-9 due since 2026-06-02; GAD-7 never given"
    link: str


def _link(player_id: str) -> str:
    site = settings.SITE_URL.rstrip("/")
    try:
        return site + reverse("patient", args=[player_id])
    except NoReverseMatch:  # an id no URL can carry (a "/"): the caseload's due filters list it
        return site + reverse("caseload") + "?filter=phq9_due"


def _line(row: DigestRow) -> DigestLine:
    measures = "; ".join(
        f"{get_instrument(d.instrument).name} never given"
        if d.due_since is None
        else f"{get_instrument(d.instrument).name} due since {d.due_since.isoformat()}"
        for d in row.due
    )
    return DigestLine(player_id=shown(row.player_id), measures=measures, link=_link(row.player_id))


def _message(user: User, clinic: Clinic, local_date: date, rows: list[DigestRow]) -> tuple[str, str]:
    count = len(rows)
    subject = f"Questionnaires due: {count} patient{'s' if count != 1 else ''} ({local_date.isoformat()})"
    body = render_to_string(
        "reports/email/measure_digest.txt",
        {
            "user": user,
            "clinic": clinic,
            "local_date": local_date,
            "lines": [_line(row) for row in rows],
            "interval": clinic.measure_interval_days,
            "caseload_url": settings.SITE_URL.rstrip("/") + reverse("caseload"),
        },
    )
    return shown(subject), body


def _claim(user_id: int, clinic_id: int, local_date: date) -> None:
    """The day's row, in its own transaction, so a failed send leaves it claimed and unsent."""
    MeasureDigest.objects.get_or_create(user_id=user_id, clinic_id=clinic_id, local_date=local_date)


@transaction.atomic
def _send(membership: Membership, local_date: date, now: datetime) -> bool:
    digest = (
        MeasureDigest.objects.select_for_update()
        .filter(user=membership.user, clinic=membership.clinic, local_date=local_date, sent_at__isnull=True)
        .first()
    )
    if digest is None:
        return False  # sent meanwhile by another run
    rows = caseload_due_rows(membership.user, membership.clinic_id, now)
    if not rows:  # nothing is due any more (a retry later in the day): done, without an e-mail
        digest.patients, digest.sent_at = 0, timezone.now()
        digest.save(update_fields=["patients", "sent_at"])
        return False
    subject, body = _message(membership.user, membership.clinic, local_date, rows)
    send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [membership.user.email])
    digest.patients, digest.sent_at = len(rows), timezone.now()
    digest.save(update_fields=["patients", "sent_at"])
    logger.info(
        "measure digest sent user_id=%s clinic_id=%s patients=%s", membership.user_id, digest.clinic_id, len(rows)
    )
    return True


def _digest_one(membership: Membership, local_date: date, now: datetime, *, first_try: bool) -> bool:
    if first_try:
        if not caseload_due_rows(membership.user, membership.clinic_id, now):
            return False  # nothing due: no row, no e-mail
        _claim(membership.user_id, membership.clinic_id, local_date)
    return _send(membership, local_date, now)


def send_due_digests(*, now: datetime | None = None, stop_on: tuple[type[BaseException], ...] = ()) -> int:
    """Sends the digests that are due now: a first try for each active therapist with an e-mail address
    in every clinic whose local hour is `DIGEST_HOUR` and who has no digest for that local day yet, and a
    retry of every digest claimed earlier the same local day whose send failed. Returns how many e-mails
    were sent. One therapist's failure is logged and never ends the run; `stop_on` (a task's soft time
    limit) does."""
    now = now or timezone.now()
    today_of = {
        clinic.pk: now.astimezone(ZoneInfo(clinic.timezone))
        for clinic in Clinic.objects.only("pk", "timezone").order_by("pk")
    }
    local_date = {clinic_id: local.date() for clinic_id, local in today_of.items()}
    at_hour = [clinic_id for clinic_id, local in today_of.items() if local.hour == settings.DIGEST_HOUR]
    therapists = (
        Membership.objects.filter(role=Role.THERAPIST, user__is_active=True)
        .exclude(user__email="")
        .select_related("user", "clinic")
        .order_by("clinic_id", "user_id")
    )
    done = {
        (user_id, clinic_id, sent is not None)
        for user_id, clinic_id, day, sent in MeasureDigest.objects.filter(
            local_date__in=set(local_date.values())
        ).values_list("user_id", "clinic_id", "local_date", "sent_at")
        if day == local_date.get(clinic_id)
    }
    sent = 0
    for membership in therapists:
        key = (membership.user_id, membership.clinic_id)
        if (*key, True) in done:
            continue
        retry = (*key, False) in done
        if not retry and membership.clinic_id not in at_hour:
            continue
        try:
            sent += _digest_one(membership, local_date[membership.clinic_id], now, first_try=not retry)
        except stop_on:
            raise
        except Exception as error:  # the mail server refused, or worse: the next run of the day retries
            logger.warning(
                "measure digest failed user_id=%s clinic_id=%s error=%s",
                membership.user_id,
                membership.clinic_id,
                type(error).__name__[:100],
            )
    return sent
