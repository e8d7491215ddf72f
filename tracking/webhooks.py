"""Celebration webhooks: a signed POST to the clinic's game server for each new milestone.

The body is JSON; the header `X-Progress-Signature: sha256=<hex>` is the HMAC-SHA256 of the raw body
with the clinic's webhook secret, so the game server can check it came from us and was not altered.
The payload carries ids only (player id, milestone and highlight ids, title), no clinical detail.
"""

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta
from typing import TypedDict

from django.utils import timezone

from tracking.models import Milestone, Patient, ProgressHighlight, WebhookDelivery

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Progress-Signature"
EVENT_HEADER = "X-Progress-Event"
DELIVERY_HEADER = "X-Progress-Delivery"
TIMEOUT_SECONDS = 5
MAX_ATTEMPTS = 8


class MilestoneFields(TypedDict):
    id: int
    family: str
    threshold: int
    title: str
    achieved_at: str  # ISO 8601


class MilestonePayload(TypedDict):
    """The JSON body of a celebration webhook."""

    event: str
    player_id: str
    highlight_id: int
    milestone: MilestoneFields


def milestone_payload(patient: Patient, milestone: Milestone, highlight: ProgressHighlight) -> MilestonePayload:
    return {
        "event": "milestone_achieved",
        "player_id": patient.player_id,
        "highlight_id": highlight.pk,
        "milestone": {
            "id": milestone.pk,
            "family": milestone.family,
            "threshold": milestone.threshold,
            "title": milestone.title,
            "achieved_at": milestone.achieved_at.isoformat(),
        },
    }


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, signature: str) -> bool:
    return hmac.compare_digest(sign(body, secret), signature)


def backoff_seconds(attempts: int) -> int:
    """30 s, 1 min, 2 min … capped at 1 hour."""
    return min(3600, 30 * 2 ** max(0, attempts - 1))


def _request(delivery: WebhookDelivery) -> urllib.request.Request:
    clinic = delivery.clinic
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    return urllib.request.Request(  # noqa: S310 (the URL is an https/http URL set by a clinic admin)
        clinic.webhook_url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, clinic.webhook_secret),
            EVENT_HEADER: delivery.event,
            DELIVERY_HEADER: str(delivery.pk),
        },
    )


def deliver(delivery_id: int, *, stop_on: tuple[type[BaseException], ...] = ()) -> str:
    """One delivery attempt. Returns the delivery's status afterwards. Retries are scheduled through
    `next_attempt_at`, which the periodic task picks up, so a lost task never loses a delivery. Whatever
    goes wrong in the attempt (a bad URL, a refused connection, an odd secret...) is a failed attempt
    with its backoff, recorded on the delivery, never raised; `stop_on` names exceptions that are not
    the delivery's fault (a task's soft time limit), which are."""
    delivery = WebhookDelivery.objects.select_related("clinic").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return delivery.status if delivery else "missing"
    delivery.attempts += 1
    try:
        with urllib.request.urlopen(_request(delivery), timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            delivery.last_status_code = response.status
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = timezone.now()
        delivery.last_error = ""
    except stop_on:
        raise
    except urllib.error.HTTPError as error:
        delivery.last_status_code = error.code
        delivery.last_error = f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        delivery.last_error = type(error).__name__ + ": " + str(getattr(error, "reason", error))[:200]
    except Exception as error:  # anything else (ValueError for a URL urllib cannot use...): its class only
        delivery.last_error = type(error).__name__[:200]
    if delivery.status == WebhookDelivery.Status.PENDING:
        if delivery.attempts >= MAX_ATTEMPTS:
            delivery.status = WebhookDelivery.Status.FAILED
        else:
            delivery.next_attempt_at = timezone.now() + timedelta(seconds=backoff_seconds(delivery.attempts))
        logger.warning(
            "webhook delivery_id=%s attempt=%s failed: %s", delivery.pk, delivery.attempts, delivery.last_error
        )
    delivery.save()
    return delivery.status
