"""What the services announce, after their transaction commits (DESIGN §2).

Writes never call the task queue or the live-update module themselves: they send one of these signals
with `send_on_commit`, and `tasks.py` (Celery) and `live.py` (open pages) receive them, connected in the
apps' `AppConfig.ready`. So the services know nothing of Celery, and a receiver that fails (a broker
outage) never undoes or fails the write: the database is the record of what is left to do, and the
periodic sweeps find it.
"""

import logging

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

# A patient's data changed (ingest, an acknowledgement): their analytics must be recomputed and their
# open pages redrawn. kwargs: patient_ids.
data_changed = Signal()
# Analytics were recomputed and stored: open pages redraw. kwargs: patient_ids.
analytics_recomputed = Signal()
# Alerts were raised, updated or acknowledged in these clinics: inboxes redraw, and the `raised` ones
# (new or changed) are e-mailed. kwargs: clinic_ids, raised (alert ids).
alerts_changed = Signal()
# A new milestone was stored, with its highlight; kwargs: milestone, highlight.
milestone_achieved = Signal()
# Celebration webhooks were put in the outbox; kwargs: delivery_ids.
webhooks_queued = Signal()
# Questionnaire responses were stored in these clinics: their expected-recovery references are rebuilt
# (debounced). kwargs: clinic_ids.
outcomes_changed = Signal()


def send_on_commit(signal: Signal, **kwargs) -> None:
    """Sends `signal` once the current transaction commits (at once outside one). A receiver's error is
    logged by its class name, never raised: the write it announces has already committed."""

    def send() -> None:
        for receiver, result in signal.send_robust(sender=None, **kwargs):
            if isinstance(result, Exception):
                logger.warning(
                    "signal receiver %s failed: %s", getattr(receiver, "__name__", receiver), type(result).__name__
                )

    transaction.on_commit(send)
