"""Celebration webhook deliveries: signature, retries with backoff, the delivery log."""

import hashlib
import hmac
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.factories import TherapySessionFactory
from tests.test_celery_worker import Receiver
from tracking import recompute, webhooks
from tracking.models import WebhookDelivery


@pytest.fixture
def receiver():
    receiver = Receiver(status=500)
    yield receiver
    receiver.server.shutdown()


def test_backoff_doubles_and_is_capped():
    assert [webhooks.backoff_seconds(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert webhooks.backoff_seconds(20) == 3600


def test_signature_is_hmac_sha256_of_the_body():
    assert webhooks.sign(b'{"a":1}', "k") == "sha256=" + hmac.new(b"k", b'{"a":1}', hashlib.sha256).hexdigest()
    assert webhooks.verify(b'{"a":1}', "k", webhooks.sign(b'{"a":1}', "k"))
    assert not webhooks.verify(b'{"a":2}', "k", webhooks.sign(b'{"a":1}', "k"))


def test_a_failed_delivery_is_retried_with_backoff_then_delivered_and_logged(
    patient_a, receiver, django_capture_on_commit_callbacks
):
    patient_a.clinic.webhook_url, patient_a.clinic.webhook_secret = receiver.url, "k"
    patient_a.clinic.save()
    start = timezone.now() - timedelta(days=1)
    for n in range(5):
        TherapySessionFactory(patient=patient_a, started_at=start + timedelta(minutes=n))
    recompute.patient_recompute(patient_a.pk)  # on_commit hooks do not run here: the outbox row is enough
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.payload["milestone"]["title"]) == (
        "pending",
        0,
        "5 Sessions Completed",
    )
    assert delivery.payload["player_id"] == patient_a.player_id

    assert webhooks.deliver(delivery.pk) == "pending"
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (1, 500, "HTTP 500")
    assert timedelta(seconds=25) < delivery.next_attempt_at - timezone.now() <= timedelta(seconds=30)

    receiver.status = 204
    assert webhooks.deliver(delivery.pk) == "delivered"
    assert webhooks.deliver(delivery.pk) == "delivered"  # idempotent: no second POST
    assert len(receiver.requests) == 2
    delivery.refresh_from_db()
    assert (delivery.attempts, delivery.last_status_code, delivery.delivered_at is not None) == (2, 204, True)


def test_a_delivery_gives_up_after_the_last_attempt(patient_a, receiver):
    patient_a.clinic.webhook_url = receiver.url
    patient_a.clinic.save()
    for n in range(5):
        TherapySessionFactory(patient=patient_a, started_at=timezone.now() - timedelta(hours=n + 1))
    recompute.patient_recompute(patient_a.pk)
    delivery = WebhookDelivery.objects.get()
    for _ in range(webhooks.MAX_ATTEMPTS):
        status = webhooks.deliver(delivery.pk)
    assert status == "failed"
    assert len(receiver.requests) == webhooks.MAX_ATTEMPTS
