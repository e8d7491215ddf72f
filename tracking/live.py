"""Live updates for open pages, as server-sent events.

Writers bump a version key in the cache (Redis in production) after their transaction commits; an open
page's event stream polls those keys twice a second and sends an event when one moves, and the page then
fetches what changed. Streams are short (they end after `STREAM_SECONDS`, and when the login session
expires) and never extend the session: only what a person does keeps them logged in.
"""

import contextlib
import json
import logging
import time

from django.core.cache import cache
from django.utils import timezone

logger = logging.getLogger(__name__)

STREAM_SECONDS = 55
POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 15


def patient_key(patient_id: int) -> str:
    return f"live:patient:{patient_id}"


def clinic_alerts_key(clinic_id: int) -> str:
    return f"live:alerts:{clinic_id}"


def bump(*, patient_ids=(), alert_clinic_ids=()) -> None:
    """Marks patients (and clinics' alert inboxes) as changed. Never raises: live updates are a
    convenience, the page can always be reloaded."""
    stamp = time.time_ns()
    keys = {patient_key(p): stamp for p in patient_ids} | {clinic_alerts_key(c): stamp for c in alert_clinic_ids}
    if keys:
        try:
            cache.set_many(keys, timeout=3600)
        except Exception as error:  # the cache is down: the stream will not notice, a reload will
            logger.warning("live bump failed: %s", type(error).__name__)


def event_stream(*, patient_id: int | None, clinic_ids: list[int], session_expires_at):
    """Yields SSE frames: `patient` when the patient's data changed, `alerts` when a clinic's alerts did,
    a comment as heartbeat; stops after STREAM_SECONDS or when the login session expires."""
    keys = [clinic_alerts_key(c) for c in clinic_ids]
    if patient_id is not None:
        keys.append(patient_key(patient_id))
    deadline = time.monotonic() + STREAM_SECONDS
    last_beat = time.monotonic()
    seen = _versions(keys)
    yield "retry: 2000\n\n"
    while time.monotonic() < deadline and timezone.now() < session_expires_at:
        time.sleep(POLL_SECONDS)
        current = _versions(keys)
        changed = [k for k in keys if current.get(k) != seen.get(k)]
        seen = current
        if any(k.startswith("live:alerts:") for k in changed):
            yield _frame("alerts", {})
        if patient_id is not None and patient_key(patient_id) in changed:
            yield _frame("patient", {})
        if time.monotonic() - last_beat > HEARTBEAT_SECONDS:
            last_beat = time.monotonic()
            yield ": heartbeat\n\n"
    yield _frame("bye", {"reason": "session" if timezone.now() >= session_expires_at else "timeout"})


def _versions(keys: list[str]) -> dict:
    with contextlib.suppress(Exception):
        return cache.get_many(keys)
    return {}


def _frame(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


# ----- receivers of the services' signals (connected in TrackingConfig.ready) ------------------------


def on_patients_changed(sender, *, patient_ids, **kwargs) -> None:
    """New data or freshly recomputed analytics: open pages of these patients redraw."""
    bump(patient_ids=patient_ids)


def on_alerts_changed(sender, *, clinic_ids, **kwargs) -> None:
    """Alerts raised, updated or acknowledged: the inboxes of these clinics' therapists redraw."""
    bump(alert_clinic_ids=clinic_ids)
