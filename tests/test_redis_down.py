"""With Redis gone (cache and broker), the game's data and crisis signals are still stored and answered
2xx, and the therapist still sees the alert: Redis only speeds things up and carries work that the
reconciler finds again."""

import json

import pytest
from django.core.cache import caches
from django.test import override_settings
from django.utils import timezone

from progress_site.celery import app as celery_app
from reports.models import Alert
from tests.conftest import logged_in
from tests.test_celery_worker import free_port, use_broker
from tracking.models import Patient

DEAD = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


@pytest.fixture
def redis_down():
    previous = celery_app.conf.broker_url
    use_broker(DEAD)
    with override_settings(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": DEAD}}
    ):
        with pytest.raises(Exception):  # noqa: B017 - proves the cache really is unreachable
            caches["default"].get("anything")
        yield
    use_broker(previous)


def test_ingest_answers_2xx_and_the_alert_reaches_the_therapist(
    redis_down, api, therapist_a, patient_a, django_capture_on_commit_callbacks, caplog
):
    batch = {
        "alerts": [
            {
                "alert_id": "c-1",
                "player_id": patient_a.player_id,
                "level": "urgent",
                "reason": "Crisis phrase",
                "occurred_at": timezone.now().isoformat(),
            }
        ],
        "outcomes": [
            {
                "response_id": "r-1",
                "player_id": patient_a.player_id,
                "instrument": "phq9",
                "administered_at": timezone.now().isoformat(),
                "items": [1, 1, 1, 1, 1, 1, 1, 1, 2],
            }
        ],
    }
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = api.post("/api/v1/ingest", json.dumps(batch), content_type="application/json")
    assert response.status_code == 201
    # Three announcements after commit (tracking.signals): the data changed (recompute, live-update bump),
    # alerts were raised (live-update bump, alert e-mails) and outcomes were stored (the clinic's
    # expected-recovery rebuild). Each receiver failed quietly:
    announcements = [c for c in callbacks if c.__module__ == "tracking.signals"]  # (the rest: metrics counters)
    assert len(announcements) == 3
    enqueue_failures = [r.getMessage() for r in caplog.records if "could not enqueue" in r.getMessage()]
    assert any("recompute_patient_group" in m for m in enqueue_failures)
    assert any("rebuild_references" in m for m in enqueue_failures)
    assert sum("notify_alert" in m for m in enqueue_failures) == 2
    assert any("live bump failed" in r.getMessage() for r in caplog.records)
    assert set(Alert.objects.filter(patient=patient_a).values_list("kind", "severity")) == {
        ("crisis_signal", "urgent"),
        ("phq9_item9", "urgent"),
    }
    patient = Patient.objects.get(pk=patient_a.pk)
    assert patient.risk_flag and patient.data_changed_at and patient.analytics_computed_at is None  # found later
    page = logged_in(therapist_a).get("/").content.decode()
    assert "2 open" in page and "⚑ Flagged" in page
