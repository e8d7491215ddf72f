"""The stack as deployed (tests/stack.py): docker-compose.yml's web, worker and beat commands, run as
processes with compose's environment (`DJANGO_ENV=production`), on the local PostgreSQL and a Redis of the
test's own, behind the health checks compose declares. A batch posted to it is stored, its analytics are
computed by the worker, the crisis signal's e-mail reaches a real SMTP server and the celebration webhook
a local receiver."""

import json
import os

import pytest

from reports.models import Alert
from tests.smtp import smtp_env
from tests.stack import ROOT, Stack, service_command
from tests.test_celery_worker import Broker, Receiver, wait_until, week_with_a_crisis
from tracking import webhooks
from tracking.models import Milestone, Patient, ProgressSummary, WebhookDelivery

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

SECRET = "stack-webhook-secret"


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture
def redis_server(tmp_path):
    """The stack's Redis (cache and broker), a server of the test's own."""
    server = Broker(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stack(transactional_db, redis_server, smtp, tmp_path):
    stack = Stack(
        tmp_path,
        redis_url=redis_server.url,
        env={
            **smtp_env(smtp),
        },
    )
    try:
        stack.migrate()  # the web service's first step (a no-op here: the test database is migrated)
        stack.start("web", "worker", "beat")
        yield stack
    finally:
        stack.stop()
        if os.environ.get("SHOW_STACK_LOGS"):
            for service in ("web", "worker", "beat"):
                print(f"----- {service}\n{stack.log(service)}")


def test_a_batch_through_the_deployed_stack_reaches_analytics_email_and_webhook(
    stack, smtp, receiver, clinic, therapist_a, patient_a, token
):
    therapist_a.email = "anna@clinic.example"
    therapist_a.save()
    clinic.webhook_url, clinic.webhook_secret = receiver.url, SECRET
    clinic.save()
    batch = week_with_a_crisis(clinic.timezone, patient_a.player_id, "stack-c1", "Crisis phrase in chat")

    status, _, body = stack.ingest(token, batch)
    assert status == 201, body
    assert body["sessions"]["created"] == 7 and body["alerts"]["created"] == 1

    # The worker computed the analytics (the 7-day streak and its milestone) ...
    summary = wait_until(
        lambda: ProgressSummary.objects.filter(patient=patient_a, current_streak_days=7).first(),
        90,
        "the analytics computed by the worker",
    )
    assert summary.computed_at is not None and not Patient.objects.filter(pk=patient_a.pk).stale_analytics().exists()
    assert Milestone.objects.filter(patient=patient_a, title="One Week Streak").exists()
    # ... the urgent alert's e-mail reached the therapist over SMTP ...
    message = wait_until(lambda: smtp.messages_to(therapist_a.email), 90, "the alert e-mail")[0]
    assert message["Subject"].startswith("[URGENT]") and patient_a.player_id in message["Subject"]
    assert "Crisis phrase" not in message.get_content()  # the reason stays in the dashboard
    assert Alert.objects.get(patient=patient_a).notified_at is not None
    # ... and the celebration webhook reached the game, signed with the clinic's secret.
    wait_until(
        lambda: any(json.loads(b)["milestone"]["title"] == "One Week Streak" for _, b in receiver.requests),
        90,
        "the celebration webhook",
    )
    for headers, body in receiver.requests:
        assert webhooks.verify(body, SECRET, headers[webhooks.SIGNATURE_HEADER])
    wait_until(lambda: not WebhookDelivery.objects.exclude(status="delivered").exists(), 30, "deliveries recorded")

    # Production settings hold: plain HTTP is redirected to HTTPS, except the health checks.
    status, headers, _ = stack.request("GET", "/", headers={"X-Forwarded-Proto": "http"})
    assert status == 301 and headers["Location"].startswith("https://")
    assert stack.request("GET", "/healthz", headers={"X-Forwarded-Proto": "http"})[0] == 200
    for service in ("web", "worker", "beat"):
        assert stack.healthcheck(service), f"{service} failed compose's health check"
    assert " 500 " not in stack.log("web")


def test_the_image_runs_the_same_web_server_as_the_compose_file():
    """`docker run` of the image without a command serves what compose's `web` serves."""
    cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    assert json.loads(cmd.removeprefix("CMD ")) == service_command("web")
