"""Structured logs (DESIGN §10): one JSON object per line with the request id and the user id, the request
id carried into the tasks a request enqueues, and no patient data (tracking/logs.py, tracking/request_id.py).
"""

import io
import json
import logging
import logging.config
import re

import psycopg
import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from tests.test_celery_worker import Receiver, wait_until, week_with_a_crisis
from tests.test_ingest import post
from tests.test_stack import redis_server, stack  # noqa: F401 (fixtures)
from tracking import logs, request_id
from tracking.models import WebhookDelivery

KEYS = {"time", "level", "logger", "message", "request_id", "user_id"}


@pytest.fixture
def json_lines():
    """What the root logger writes through the configured console handler, formatted as JSON."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    handler.addFilter(logs.ScrubFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.level = level


def record_of(message, *args, exc=None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("tracking.tests", logging.ERROR, __file__, 1, message, args, exc_info)


def formatted(record) -> dict:
    return json.loads(logs.JsonFormatter().format(record))


# ----- the format ---------------------------------------------------------------------------------


def test_the_settings_log_json_lines_with_the_keys_and_text_in_development():
    entry = formatted(record_of("alert escalated alert_id=%s", 7))
    assert entry.keys() >= KEYS
    assert entry["message"] == "alert escalated alert_id=7" and entry["level"] == "ERROR"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])
    assert entry["request_id"] is None and entry["user_id"] is None
    handler = settings.LOGGING["handlers"]["console"]
    assert handler["filters"] == ["context", "scrub"]
    assert handler["formatter"] == settings.LOG_FORMAT == "text"  # tests run development settings
    assert settings.LOGGING["formatters"]["json"]["()"] == "tracking.logs.JsonFormatter"


def test_an_exception_is_its_type_and_a_scrubbed_traceback():
    try:
        raise ValueError("the patient wrote: I feel hopeless")
    except ValueError as error:
        entry = formatted(record_of("recompute failed patient_id=%s", 12, exc=error))
    assert entry["exc_type"] == "ValueError"
    assert entry["traceback"].startswith("Traceback (most recent call last):\n")
    assert "test_logging.py" in entry["traceback"] and entry["traceback"].endswith("ValueError: [redacted]")
    assert "hopeless" not in json.dumps(entry)


@pytest.mark.django_db
def test_a_request_logs_its_id_and_keeps_a_safe_incoming_one(client, json_lines, therapist_a):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="proxy-4f2a.77_b")
    assert response["X-Request-ID"] == "proxy-4f2a.77_b"
    client.force_login(therapist_a)
    response = client.get("/")
    generated = response["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    lines = [e for e in json_lines() if e["logger"] == "progress.requests"]
    assert [(e["request_id"], e["message"].split()[0]) for e in lines] == [
        ("proxy-4f2a.77_b", "GET"),
        (generated, "GET"),
    ]
    assert lines[0]["user_id"] is None and lines[1]["user_id"] == therapist_a.pk
    assert all(e.keys() >= KEYS for e in lines)


@pytest.mark.django_db
@pytest.mark.parametrize("incoming", ["has space", "x" * 65, "p-1;drop", "ünïcode", ""])
def test_an_unsafe_incoming_request_id_is_replaced(client, incoming):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=incoming)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


@pytest.mark.django_db
def test_the_access_line_names_the_view_not_the_path(api, clinic, json_lines):
    post(api, {"sessions": []}, HTTP_X_REQUEST_ID="ingest-1")
    [line] = [e for e in json_lines() if e["logger"] == "progress.requests"]
    assert line["request_id"] == "ingest-1" and line["message"].startswith("POST ")
    assert "/api/" not in line["message"]


# ----- the scrubber ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_scrubber_redacts_a_postgresql_detail_with_a_player_id_and_keeps_types_and_ids():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's DETAIL lines")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE log_probe (clinic_id int, player_id text, PRIMARY KEY (clinic_id, player_id))"
        )
        cursor.execute("INSERT INTO log_probe VALUES (4, 'p-123 Jane')")
        try:
            with transaction.atomic():
                cursor.execute("INSERT INTO log_probe VALUES (4, 'p-123 Jane')")
        except IntegrityError as error:
            caught = error
    assert isinstance(caught.__cause__, psycopg.errors.UniqueViolation)
    assert "p-123 Jane" in str(caught)  # the raw message holds the player id ...
    entry = formatted(record_of("ingest failed clinic_id=%s: %s", 4, caught, exc=caught))
    text = json.dumps(entry)
    assert "p-123" not in text and "Jane" not in text  # ... the log line does not
    assert entry["exc_type"] == "IntegrityError" and "UniqueViolation: duplicate key value" in entry["traceback"]
    assert "DETAIL:  Key (clinic_id, player_id)=([redacted]) already exists." in entry["traceback"]
    assert entry["message"].startswith("ingest failed clinic_id=4: IntegrityError: duplicate key value violates")


def test_the_scrubber_redacts_quoted_values_free_text_and_player_ids_in_arguments():
    cases = {
        # a quoted value in an infrastructure message
        OSError("cannot open '/data/p-9/notes.txt'"): "OSError: cannot open '[redacted]'",
        # free text in any other exception's message
        RuntimeError("Lena said she wants to stop"): "RuntimeError: [redacted]",
        KeyError("p-123"): "KeyError: [redacted]",
    }
    for error, expected in cases.items():
        assert logs.describe_exception(error) == expected
    scrub = logs.scrub_argument
    assert scrub(42) == 42 and scrub(None) is None
    assert scrub("tracking.tasks.deliver_webhook") == "tracking.tasks.deliver_webhook"
    assert scrub("HTTP 500") == "HTTP 500" and scrub("email") == "email"
    assert scrub("OperationalError <- InterfaceError") == "OperationalError <- InterfaceError"
    assert scrub("URLError: [Errno 111] Connection refused") == "URLError: [Errno 111] Connection refused"
    for leaky in ("p-123", "player42", "I feel hopeless today", "a@b.example", "x" * 200):
        assert scrub(leaky) == "[redacted]", leaky
    assert scrub((5, "p-1")) == (5, "[redacted]")
    message = logs.scrub_message(
        record_of("could not enqueue %s%s: %s", "tracking.tasks.x", (5, 6), "OperationalError")
    )
    assert message == "could not enqueue tracking.tasks.x(5, 6): OperationalError"
    # a third-party message that quotes a value, and a key=value value in an exception
    assert (
        logs.scrub_message(record_of("Invalid HTTP_HOST header: 'p-7.example'."))
        == "Invalid HTTP_HOST header: '[redacted]'."
    )
    assert logs.redact_values("lookup player=p-8 id=31") == "lookup player=[redacted] id=31"


def test_the_context_follows_a_task_message():
    """before_task_publish puts the id in the headers; task_prerun / task_postrun set and clear it."""
    headers: dict = {}
    token = request_id._context.set(request_id.Context(request_id="req-1"))
    try:
        request_id.on_before_task_publish(headers=headers)
    finally:
        request_id._context.reset(token)
    assert headers[request_id.TASK_REQUEST_HEADER] == "req-1"

    class Request(dict):
        is_eager = False

    class Task:
        name, request = "tracking.tasks.deliver_webhook", Request(headers)

    request_id.on_task_prerun(task_id="t-1", task=Task())
    assert request_id.current().request_id == "req-1" and request_id.current().task_id == "t-1"
    request_id.on_task_postrun(task_id="t-1")
    assert request_id.current() is None


# ----- the acceptance point: a failing task of the deployed stack -----------------------------------


@pytest.fixture
def failing_receiver():
    receiver = Receiver(status=500)
    yield receiver
    receiver.server.shutdown()


@pytest.mark.live
@pytest.mark.django_db(transaction=True)
def test_a_failing_task_logs_the_request_id_of_the_ingest_that_enqueued_it_and_no_patient_data(
    stack,  # noqa: F811 (the fixture)
    failing_receiver,
    clinic,
    patient_a,
    token,  # noqa: F811 (the fixture)
):
    clinic.webhook_url, clinic.webhook_secret = failing_receiver.url, "stack-webhook-secret"
    clinic.save()
    batch = week_with_a_crisis(clinic.timezone, patient_a.player_id, "crisis-7f3", "Said goodbye to everyone in chat")
    ingest_id = "ingest-acceptance-0001"
    status, headers, body = stack.request(
        "POST", "/api/v1/ingest", batch, {"Authorization": f"Bearer {token}", "X-Request-ID": ingest_id}
    )
    assert status == 201, body
    assert headers["X-Request-ID"] == ingest_id

    # The worker recomputed (a task the ingest enqueued), which queued the celebration webhooks; the game
    # answers 500, so each delivery task logs its failure.
    wait_until(lambda: len(failing_receiver.requests) >= 1, 90, "a webhook delivery attempt")
    wait_until(
        lambda: WebhookDelivery.objects.filter(attempts__gte=1, last_error="HTTP 500").exists(), 30, "the failure"
    )

    def failures():
        entries = [json.loads(line) for line in stack.log("worker").splitlines() if line.strip()]
        return [e for e in entries if "failed: HTTP 500" in e["message"]]

    failure = wait_until(failures, 30, "the delivery task's failure line")[0]
    assert failure.keys() >= KEYS and failure["level"] == "WARNING"
    assert failure["request_id"] == ingest_id
    assert failure["task"] == "tracking.tasks.deliver_webhook" and failure["task_id"]
    assert re.fullmatch(r"webhook delivery_id=\d+ attempt=1 failed: HTTP 500", failure["message"])

    # Every line of every service is one JSON object, and none holds the batch's patient data.
    patient_data = [patient_a.player_id, "crisis-7f3", "Said goodbye", *(s["session_id"] for s in batch["sessions"])]
    for service in ("web", "worker", "beat"):
        text = stack.log(service)
        entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        assert entries and all(e.keys() >= KEYS for e in entries), service
        for value in patient_data:
            assert value not in text, (service, value)
    web = [json.loads(line) for line in stack.log("web").splitlines() if line.strip()]
    assert any(e["request_id"] == ingest_id and e["logger"] == "progress.requests" for e in web)
