"""GET /metrics (DESIGN §10): every metric, with the values of what happened, only with the token, and no
player id, clinic name or free text anywhere in it. Real PostgreSQL and Redis; the counters live in this
process (no PROMETHEUS_MULTIPROC_DIR here), so each test compares a scrape before and after.
tests/test_metrics_stack.py adds up the processes of the production stack."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from reports import alerts
from reports.models import Alert
from tracking import metrics_views
from tracking.models import AuditEvent, Patient, ProgressHighlight, WebhookDelivery
from tracking.recompute import patients_recompute

TOKEN = "metrics-test-token-4b1d"
PLAYER = "p-metrics-7c2e"
REASON = "CANARY-free-text-never-in-metrics"
T0 = datetime(2026, 1, 10, 18, 0, tzinfo=UTC)

DESIGN_METRICS = {
    "progress_ingest_items_total",
    "progress_ingest_request_seconds_count",
    "progress_http_request_seconds_count",
    "progress_analytics_stale_patients",
    "progress_analytics_lag_seconds",
    "progress_recompute_seconds_count",
    "progress_alerts_open",
    "progress_alerts_unacknowledged_oldest_seconds",
    "progress_alert_escalations_total",
    "progress_outbox_pending",
    "progress_celery_queue_length",
    "progress_audit_events_total",
}


@pytest.fixture(autouse=True)
def _token(settings):
    settings.METRICS_TOKEN = TOKEN


def scrape_text(client: Client | None = None) -> str:
    response = (client or Client()).get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"].startswith("text/plain; version=")
    return response.content.decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def session(session_id: str, minutes: float = 20) -> dict:
    return {
        "session_id": session_id,
        "player_id": PLAYER,
        "started_at": T0.isoformat(),
        "status": "completed",
        "duration_minutes": minutes,
    }


def first_batch() -> dict:
    return {
        "sessions": [session("ms1"), session("ms2")],
        "markers": [
            {
                "marker_id": "mm1",
                "session_id": "ms1",
                "player_id": PLAYER,
                "type": "skill_acquired",
                "achieved_at": (T0 + timedelta(minutes=5)).isoformat(),
                "therapeutic_value": 0.5,
            }
        ],
        "outcomes": [
            {
                "response_id": "mr1",
                "player_id": PLAYER,
                "instrument": "phq9",
                "administered_at": T0.isoformat(),
                "items": [1, 1, 1, 1, 1, 1, 1, 1, 0],
            }
        ],
        "alerts": [
            {
                "alert_id": "ma1",
                "player_id": PLAYER,
                "level": "urgent",
                "reason": REASON,
                "occurred_at": T0.isoformat(),
            }
        ],
    }


def post(api: Client, batch: dict):
    return api.post("/api/v1/ingest", batch, content_type="application/json")


def test_every_metric_after_ingest_recompute_an_alert_and_an_escalation(
    api, clinic, clinic_admin, django_capture_on_commit_callbacks
):
    events_before = Counter(AuditEvent.objects.values_list("action", flat=True))
    before = samples(scrape_text())

    with django_capture_on_commit_callbacks(execute=True):
        created = post(api, first_batch())
        unchanged = post(api, first_batch())
        changed = first_batch()
        changed["sessions"][1]["duration_minutes"] = 30
        updated = post(api, changed)
        # Refused: two bad items (a session's status, a marker's unknown field) and a good one; nothing stored.
        bad = {"sessions": [{**session("ms9"), "status": "asleep"}, session("ms10")], "markers": []}
        bad["markers"] = [{**first_batch()["markers"][0], "marker_id": "mm9", "colour": "red"}]
        refused_items = post(api, bad)
        # Refused as a whole (an unknown key names no item): all three items of the batch are rejected.
        refused_body = post(api, {"sessions": [session("ms11"), session("ms12")], "alerts": [], "extra": [1]})
        refused_body_2 = post(api, {"markers": [first_batch()["markers"][0]], "bogus": 1})
    assert [r.status_code for r in (created, unchanged, updated)] == [201, 200, 200]
    assert [r.status_code for r in (refused_items, refused_body, refused_body_2)] == [400, 400, 400]
    assert not Patient.objects.filter(clinic=clinic, player_id=PLAYER).filter(sessions__session_id="ms10").exists()

    patient = Patient.objects.get(clinic=clinic, player_id=PLAYER)
    with django_capture_on_commit_callbacks(execute=True):
        assert patients_recompute([patient.pk]) == 1
        # The urgent crisis signal, unacknowledged past the clinic's escalation time, is escalated.
        assert alerts.escalate_unacknowledged(now=timezone.now() + timedelta(minutes=31)) == 1

    # Stale analytics for a known lag; an urgent alert raised 10 minutes ago.
    changed_at = timezone.now() - timedelta(seconds=120)
    Patient.objects.filter(pk=patient.pk).update(
        data_changed_at=changed_at, analytics_computed_at=changed_at - timedelta(seconds=60)
    )
    Alert.objects.filter(alert_id="ma1").update(created_at=timezone.now() - timedelta(seconds=600))
    # A milestone webhook waiting in the outbox, and one delivered.
    highlight = ProgressHighlight.objects.create(patient=patient, title="Milestone", achieved_at=T0)
    for status in ("pending", "delivered"):
        WebhookDelivery.objects.create(clinic=clinic, highlight=highlight, payload={}, status=status)

    text = scrape_text()
    after = samples(text)
    names = {name for name, _ in after}
    assert names >= DESIGN_METRICS, DESIGN_METRICS - names

    # Ingest items: what the API answered, by kind and result; rejected per refused item.
    expected = Counter()
    for response in (created, unchanged, updated):
        for kind, counts in response.json().items():
            for result in ("created", "updated", "unchanged"):
                expected[kind, result] += counts[result]
    assert expected["sessions", "created"] == 2 and expected["sessions", "updated"] == 1
    assert expected["sessions", "unchanged"] == 3 and expected["alerts", "unchanged"] == 2
    # The items an error names (the good session of that batch is not one), then whole batches.
    expected["sessions", "rejected"] = 1 + 2
    expected["markers", "rejected"] = 1 + 1
    for kind in ("sessions", "markers", "outcomes", "alerts"):
        for result in ("created", "updated", "unchanged", "rejected"):
            got = delta(after, before, "progress_ingest_items_total", kind=kind, result=result)
            assert got == expected[kind, result], (kind, result, got)
            assert (("progress_ingest_items_total", frozenset({"kind": kind, "result": result}.items()))) in after

    # Histograms: six ingest requests, timed as requests and by view (the URL pattern's name, not the URL).
    assert delta(after, before, "progress_ingest_request_seconds_count") == 6
    assert delta(after, before, "progress_ingest_request_seconds_sum") > 0
    assert delta(after, before, "progress_http_request_seconds_count", view="api-ingest") == 6
    assert value(after, "progress_http_request_seconds_count", view="metrics") >= 1  # the first scrape
    assert not any("/" in dict(labels).get("view", "") for name, labels in after if name.startswith("progress_http"))
    assert delta(after, before, "progress_recompute_seconds_count") == 1
    assert delta(after, before, "progress_recompute_seconds_bucket", le="+Inf") == 1
    assert delta(after, before, "progress_alert_escalations_total") == 1

    # Audit events: exactly the events written, by action (the ingests, the escalation's none...).
    events = Counter(AuditEvent.objects.values_list("action", flat=True)) - events_before
    assert events["ingest"] == 3
    for action, count in events.items():
        assert delta(after, before, "progress_audit_events_total", action=action) == count, action

    # Gauges, from the database now.
    assert value(after, "progress_analytics_stale_patients") == Patient.objects.stale_analytics().count() >= 1
    assert 119 <= value(after, "progress_analytics_lag_seconds") <= 180
    open_urgent = Alert.objects.filter(severity="urgent", acknowledged_at__isnull=True).count()
    assert open_urgent >= 1 and value(after, "progress_alerts_open", severity="urgent") == open_urgent
    assert value(after, "progress_alerts_open", severity="moderate") == 0
    assert 599 <= value(after, "progress_alerts_unacknowledged_oldest_seconds", severity="urgent") <= 660
    assert value(after, "progress_alerts_unacknowledged_oldest_seconds", severity="moderate") == 0
    assert (
        value(after, "progress_outbox_pending", kind="alert_email")
        == Alert.objects.filter(notified_at__isnull=True).count()
        >= 1
    )
    pending_webhooks = WebhookDelivery.objects.filter(status="pending").count()
    assert pending_webhooks == 1 and value(after, "progress_outbox_pending", kind="webhook") == pending_webhooks
    queue = redis.Redis.from_url(settings.CELERY_BROKER_URL).llen("celery")
    assert value(after, "progress_celery_queue_length") == queue

    # Nothing that names a patient, a clinic or anyone's words.
    for secret in (PLAYER, clinic.name, clinic.slug, REASON, "Northside", "therapist", "admin.north"):
        assert secret not in text, secret

    # Acknowledged: the alert leaves the open gauges.
    Alert.objects.update(acknowledged_at=timezone.now())
    later = samples(scrape_text())
    assert value(later, "progress_alerts_open", severity="urgent") == 0
    assert value(later, "progress_alerts_unacknowledged_oldest_seconds", severity="urgent") == 0


def test_no_token_a_wrong_token_or_no_configured_token_is_a_404_like_a_missing_page(db, settings):
    missing = Client().get("/no-such-page")
    assert missing.status_code == 404
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
        response = Client().get("/metrics", headers=headers)
        assert response.status_code == 404
        assert response.content == missing.content
        assert "text/plain" not in response["Content-Type"]
    assert Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404
    assert Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


def test_the_scrape_records_no_audit_event(db):
    count = AuditEvent.objects.count()
    scrape_text()
    assert AuditEvent.objects.count() == count


def test_the_gauges_take_four_queries_whatever_the_data(api, patient_a, django_assert_num_queries):
    post(api, {"alerts": first_batch()["alerts"]})
    with django_assert_num_queries(4):
        families = list(metrics_views.DatabaseCollector().collect())
    assert {f.name for f in families} >= {"progress_analytics_stale_patients", "progress_outbox_pending"}


def test_the_celery_queue_gauge_without_redis(db, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert metrics_views.celery_queue_length() is None
    assert "progress_celery_queue_length" not in scrape_text()
    settings.CELERY_TASK_ALWAYS_EAGER = True  # tasks in the process: no queue
    assert metrics_views.celery_queue_length() == 0
