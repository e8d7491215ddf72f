"""What the audit log records (DESIGN §7), each from its one choke point: logins, every read of patient
data (one event per request naming exactly the patients returned), every write, every denied attempt to
reach a patient, provisioning and configuration changes. And what it never records: notes, the game's
free text, questionnaire answers, passwords and tokens.

The walk below is derived from the URL resolver: a URL that is not classified here (a read of patient
data, with the event it must leave, or a URL that returns none) fails the first test.
"""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models import Q
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from reports.models import Alert
from reports.notes import note_create
from tests.conftest import logged_in
from tests.factories import PASSWORD, CareAssignmentFactory, PatientFactory
from tests.matrix_console import NO_PATIENT_DATA as CONSOLE_NO_PATIENT_DATA
from tracking import audit
from tracking.models import AuditEvent, Clinic, ProgressHighlight, Recommendation

CANARY = "CANARY-7f3a-never-in-the-audit-log"
NOW = timezone.now()
READS = {"patient.read", "caseload.read", "export"}

# ----- the walk: every URL pattern, classified --------------------------------------------------------

# A read of one patient's data: route → (path, action). Walked as therapist A (and, under /api/, as the
# game's token), and as every forbidden persona.
PATIENT_READS = {
    "patients/<str:player_id>/": ("/patients/p-a1/", "patient.read"),
    "patients/<str:player_id>/live.json": ("/patients/p-a1/live.json", "patient.read"),
    "patients/<str:player_id>/outcomes/": ("/patients/p-a1/outcomes/", "patient.read"),
    "api/v1/patients/<str:player_id>/progress": ("/api/v1/patients/p-a1/progress", "patient.read"),
    "api/v1/patients/<str:player_id>/milestones": ("/api/v1/patients/p-a1/milestones", "patient.read"),
    "api/v1/patients/<str:player_id>/insights": ("/api/v1/patients/p-a1/insights", "patient.read"),
    "api/v1/patients/<str:player_id>/viz": ("/api/v1/patients/p-a1/viz?days=30", "patient.read"),
    "api/v1/patients/<str:player_id>/alerts": ("/api/v1/patients/p-a1/alerts", "patient.read"),
    "api/v1/patients/<str:player_id>/outcomes": ("/api/v1/patients/p-a1/outcomes", "patient.read"),
    "api/v1/patients/<str:player_id>/fhir": ("/api/v1/patients/p-a1/fhir", "patient.read"),
    "api/v1/patients/<str:player_id>/measures-due": ("/api/v1/patients/p-a1/measures-due", "patient.read"),
    "api/v1/patients/<str:player_id>/effectiveness": ("/api/v1/patients/p-a1/effectiveness", "patient.read"),
    # A clinical note's edit form and its history show its text ({note}: the data fixture's note).
    "patients/<str:player_id>/notes/<int:note_id>/": ("/patients/p-a1/notes/{note}/", "patient.read"),
    "patients/<str:player_id>/notes/<int:note_id>/history/": ("/patients/p-a1/notes/{note}/history/", "patient.read"),
    # The patient report, on screen (printable) and as a PDF: exports, as the other print pages.
    "patients/<str:player_id>/report/": ("/patients/p-a1/report/", "export"),
    "patients/<str:player_id>/report.pdf": ("/patients/p-a1/report.pdf", "export"),
}
# URLs of one patient that return none of its data: a write (recorded as its own action, tested below)
# or the event stream, which carries only "changed" pings. Walked as every forbidden persona.
PATIENT_NOT_READS = {
    "patients/<str:player_id>/live": ("GET", "/patients/p-a1/live"),
    "patients/<str:player_id>/recommendations/<int:recommendation_id>/dismiss": (
        "POST",
        "/patients/p-a1/recommendations/{recommendation}/dismiss",
    ),
    "patients/<str:player_id>/recommendations/<int:recommendation_id>/restore": (
        "POST",
        "/patients/p-a1/recommendations/{recommendation}/restore",
    ),
    "patients/<str:player_id>/alerts/<int:alert_id>/acknowledge": ("POST", "/patients/p-a1/alerts/{alert}/acknowledge"),
    "patients/<str:player_id>/alerts/acknowledge": ("POST", "/patients/p-a1/alerts/acknowledge"),
    "patients/<str:player_id>/risk-flag/clear": ("POST", "/patients/p-a1/risk-flag/clear"),
    "patients/<str:player_id>/notes/": ("POST", "/patients/p-a1/notes/"),  # note.write, tests/test_notes.py
    "api/v1/patients/<str:player_id>/highlights/<int:highlight_id>/celebrated": (
        "POST",
        "/api/v1/patients/p-a1/highlights/{highlight}/celebrated",
    ),
}
# Reads of several patients: route → (path, action, persona), naming the patients the page returned.
COLLECTION_READS = {
    "": ("/", "caseload.read", "therapist_a"),
    "alerts/": ("/alerts/", "caseload.read", "therapist_a"),
    "live/inbox.json": ("/live/inbox.json", "caseload.read", "therapist_a"),
    "outcomes/": ("/outcomes/", "caseload.read", "therapist_a"),
    "outcomes/export.csv": ("/outcomes/export.csv", "export", "therapist_a"),
    "outcomes/print/": ("/outcomes/print/", "export", "therapist_a"),
    "clinic/report/export.csv": ("/clinic/report/export.csv", "export", "clinic_admin"),
    "clinic/report/print/": ("/clinic/report/print/", "export", "clinic_admin"),
}
# URLs that return no patient data, and why.
NO_PATIENT_DATA = {
    "caseload/search": "keeps a search term in the session",
    "live/events": "the inbox's event stream: pings only",
    "clinic/report/": "aggregates only, on screen (its CSV and print are recorded as exports)",
    "login/": "auth.login / auth.login_failed, tested below",
    "logout/": "auth.logout, tested below",
    "admin/": "Django admin: each change audited by tracking.admin",
    "healthz": "the database answers",
    "readyz": "the database and Redis answer (names only of what failed)",
    "metrics": "Prometheus's scrape: counts and ages only, no id, name or text (tests/test_metrics.py)",
    "api/v1/ingest": "a write: one ingest event per batch, tested below",
    "api/schema/": "the OpenAPI schema",
    # The auditor's console and break-glass (their own events: audit.export, break_glass).
    "break-glass/": "the emergency-access form (break_glass events)",
    "audit/": "the audit log itself: identifiers and actions, no clinical data",
    "audit/export.csv": "the audit log's export (audit.export)",
    "audit/patient-filter": "keeps the console's patient filter in the session",
    "audit/verify": "verifies the chains (audit.verify)",
    "audit/reviews/<int:event_id>": "an auditor's review of an event",
    # Login hardening (auth.mfa, user.change; tests/test_login_hardening.py).
    "login/code/": "the login's second step (auth.mfa)",
    "welcome/<uidb64>/<token>/": "an invitation link: sets a password (user.change, tests/test_console_users.py)",
    "account/": "the user's own sign-in security",
    "account/second-factor/": "enrolment of an authenticator app (auth.mfa)",
    "account/backup-codes/": "new backup codes (auth.mfa)",
    "account/password/": "the password change (user.change)",
    "admin/login/": "sends Django admin's login to /login/",
    **CONSOLE_NO_PATIENT_DATA,
}


def all_routes(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if route == "admin/":
                yield route
                continue
            yield from all_routes(entry, route)
        elif isinstance(entry, URLPattern):
            yield route


def test_every_url_is_classified_as_a_read_of_patient_data_or_not():
    routes = set(all_routes())
    classified = {**PATIENT_READS, **PATIENT_NOT_READS, **COLLECTION_READS, **NO_PATIENT_DATA}
    unclassified = sorted(r for r in routes if r not in classified)
    assert unclassified == [], f"classify these URLs in tests/test_audit_recording.py: {unclassified}"
    # Every URL of one patient is walked as a permitted and as a forbidden persona.
    patient_routes = {r for r in routes if "<str:player_id>" in r}
    assert patient_routes == set(PATIENT_READS) | set(PATIENT_NOT_READS)


# ----- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture
def data(personas, api, patient_a, clinic, therapist_a):
    """p-a1 with a session, a marker, questionnaire responses, a crisis alert, a recommendation and a
    highlight, all posted through ingest with the canary in every free-text field; p-a2, also therapist
    A's, with nothing."""
    at = (NOW - timedelta(days=3)).isoformat()
    batch = {
        "sessions": [
            {
                "session_id": "s-1",
                "player_id": "p-a1",
                "started_at": at,
                "status": "completed",
                "duration_minutes": 20,
                "world": CANARY,
                "key_achievements": [CANARY],
            }
        ],
        "markers": [
            {
                "marker_id": "m-1",
                "session_id": "s-1",
                "player_id": "p-a1",
                "type": "skill_acquired",
                "description": CANARY,
                "achieved_at": at,
                "therapeutic_value": 0.5,
            }
        ],
        "outcomes": [
            {"response_id": "r-1", "player_id": "p-a1", "instrument": "phq9", "administered_at": at, "items": [2] * 9},
            {"response_id": "r-2", "player_id": "p-a1", "instrument": "gad7", "administered_at": at, "total": 11},
        ],
        "alerts": [{"alert_id": "a-1", "player_id": "p-a1", "level": "high", "reason": CANARY, "occurred_at": at}],
    }
    response = api.post("/api/v1/ingest", batch, content_type="application/json")
    assert response.status_code == 201, response.content
    CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id="p-a2"), therapist=therapist_a)
    recommendation = Recommendation.objects.create(
        patient=patient_a, type="practice", title="Practise", priority=1, reasoning=CANARY
    )
    highlight = ProgressHighlight.objects.create(patient=patient_a, title="First skill", achieved_at=NOW)
    note = note_create(patient=patient_a, author=therapist_a, written_on=NOW.date() - timedelta(days=1), body=CANARY)
    return {
        "alert": Alert.objects.filter(patient=patient_a, alert_id="a-1").get().pk,
        "recommendation": recommendation.pk,
        "highlight": highlight.pk,
        "note": note.pk,
    }


@pytest.fixture
def clients(personas, api, other_token):
    return {**personas, "token": api, "foreign_token": Client(headers={"Authorization": f"Bearer {other_token}"})}


def new_events(since: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=since).order_by("pk"))


def last_id() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def request(client, method, path):
    if method == "POST":
        return client.post(path, data="{}", content_type="application/json")
    return client.get(path)


# ----- reads: one event per request, naming exactly the patients returned ------------------------------

PERMITTED = [(route, "therapist_a") for route in PATIENT_READS] + [
    (route, "token") for route in PATIENT_READS if route.startswith("api/")
]


@pytest.mark.parametrize("route, persona", PERMITTED, ids=[f"{r}-{p}" for r, p in PERMITTED])
def test_a_permitted_read_leaves_exactly_one_read_event_naming_the_patient(data, clients, route, persona):
    path, action = PATIENT_READS[route]
    since = last_id()
    response = clients[persona].get(path.format(**data))
    assert response.status_code == 200
    [event] = new_events(since)
    assert (event.action, event.patients, event.outcome) == (action, ["p-a1"], "ok")
    # An export names the patient in `patients` (as the caseload's exports do); a read also in `object`.
    assert event.object == ("patient:p-a1" if action == "patient.read" else "")
    assert event.chain == "northside"
    if persona == "token":
        assert (event.actor, event.role) == ("token:game", "")
    else:
        assert (event.actor, event.role, event.ip) == ("therapist.a", "therapist", "127.0.0.1")


FORBIDDEN = ["therapist_b", "clinic_admin", "auditor", "foreign_therapist"]
FORBIDDEN_CASES = [
    (route, persona)
    for route in [*PATIENT_READS, *PATIENT_NOT_READS]
    for persona in FORBIDDEN + (["foreign_token"] if route.startswith("api/") else [])
]


@pytest.mark.parametrize("route, persona", FORBIDDEN_CASES, ids=[f"{r}-{p}" for r, p in FORBIDDEN_CASES])
def test_a_forbidden_persona_leaves_access_denied_and_no_read(data, clients, route, persona):
    if route in PATIENT_READS:
        method, path = "GET", PATIENT_READS[route][0]
    else:
        method, path = PATIENT_NOT_READS[route]
    since = last_id()
    response = request(clients[persona], method, path.format(**data))
    assert response.status_code in (403, 404)
    [event] = new_events(since)
    assert (event.action, event.outcome, event.object) == ("access.denied", "denied", "patient:p-a1")
    assert event.detail["status"] == response.status_code
    expected_chain = "riverside" if persona.startswith("foreign") else "northside"
    assert event.chain == expected_chain
    # A patient of the persona's own clinic is named (therapist B's 404 is the same answer as an unknown
    # id, but the clinic's auditor sees whom they tried); another clinic's id only in `object`.
    assert event.patients == ([] if persona.startswith("foreign") else ["p-a1"])


def test_an_invalid_player_id_is_recorded_as_patient_question_mark(data, clients):
    since = last_id()
    assert clients["therapist_a"].get("/patients/bad%20id/").status_code == 404
    assert clients["token"].get("/api/v1/patients/bad%20id/progress").status_code == 404
    events = new_events(since)
    assert [(e.action, e.object, e.actor) for e in events] == [
        ("access.denied", "patient:?", "therapist.a"),
        ("access.denied", "patient:?", "token:game"),
    ]


def test_the_sse_stream_of_a_patient_is_not_a_read(data, clients):
    since = last_id()
    response = clients["therapist_a"].get("/patients/p-a1/live")
    assert response.status_code == 200
    assert new_events(since) == []  # (the stream is not consumed: it would wait for a change)


@pytest.mark.parametrize("route", list(COLLECTION_READS))
def test_a_collection_read_names_exactly_the_patients_returned(data, clients, route, foreign_patient):
    path, action, persona = COLLECTION_READS[route]
    since = last_id()
    response = clients[persona].get(path)
    assert response.status_code == 200
    [event] = new_events(since)
    assert event.action == action
    assert event.chain == "northside"
    expected = {
        "": ["p-a1", "p-a2"],  # the caseload page: both of therapist A's patients
        "alerts/": ["p-a1"],  # only p-a1 has an alert
        "live/inbox.json": ["p-a1"],
        "outcomes/": ["p-a1", "p-a2"],  # one row per patient of the caseload
        "outcomes/export.csv": ["p-a1", "p-a2"],
        "outcomes/print/": ["p-a1", "p-a2"],
        "clinic/report/export.csv": [],  # aggregates only
        "clinic/report/print/": [],
    }[route]
    assert event.patients == expected
    body = b"".join(response.streaming_content) if response.streaming else response.content
    for player_id in expected:
        assert player_id.encode() in body
    assert b"p-b1" not in body and b"p-r1" not in body


def test_another_therapist_s_collection_reads_name_only_their_own_patients(data, clients):
    since = last_id()
    for path in ("/", "/alerts/", "/live/inbox.json", "/outcomes/", "/outcomes/export.csv", "/outcomes/print/"):
        assert clients["therapist_b"].get(path).status_code == 200
    events = new_events(since)
    assert len(events) == 6
    assert all(e.actor == "therapist.b" for e in events)
    # The caseload and the reports name p-b1; p-b1 has no alert, so the alert list and the inbox nobody.
    assert [e.patients for e in events] == [["p-b1"], [], [], ["p-b1"], ["p-b1"], ["p-b1"]]


def test_the_clinic_admin_s_patient_list_is_a_caseload_read_of_identifiers(data, clients):
    since = last_id()
    assert clients["clinic_admin"].get("/").status_code == 200
    [event] = new_events(since)
    assert (event.action, event.actor, event.role) == ("caseload.read", "admin.north", "clinic_admin")
    assert event.patients == ["p-a1", "p-a2", "p-b1"]


def test_a_role_refused_a_collection_leaves_no_read(data, clients):
    since = last_id()
    for path in ("/alerts/", "/live/inbox.json", "/outcomes/", "/outcomes/export.csv"):
        assert clients["auditor"].get(path).status_code == 403
        assert clients["clinic_admin"].get(path).status_code == 403
    assert clients["auditor"].get("/").status_code in (200, 302)  # the auditor's home: no patient
    assert [e for e in new_events(since) if e.action in READS] == []


def test_an_invalid_report_period_returns_no_report_and_records_nothing(data, clients):
    since = last_id()
    assert clients["therapist_a"].get("/outcomes/export.csv?date_from=2026-05-01&date_to=2026-01-01").status_code == 400
    assert new_events(since) == []


@pytest.mark.django_db(transaction=True)
def test_a_denied_event_commits_although_the_request_fails(personas, api, patient_a):
    """No surrounding transaction rolls it back: the test runs without one, as production does."""
    since = last_id()
    assert personas["therapist_b"].get("/patients/p-a1/").status_code == 404
    assert personas["auditor"].get("/api/v1/patients/p-a1/progress").status_code == 403
    assert personas["foreign_therapist"].get("/patients/p-a1/outcomes/").status_code == 404
    events = new_events(since)
    assert [(e.actor, e.action, e.detail["status"]) for e in events] == [
        ("therapist.b", "access.denied", 404),
        ("auditor.north", "access.denied", 403),
        ("therapist.river", "access.denied", 404),
    ]
    assert audit.verify_chain("northside").broken is None


# ----- logins -----------------------------------------------------------------------------------------


def test_a_login_a_failure_an_unknown_user_and_a_logout_are_recorded(therapist_a, clinic):
    client = Client()
    since = last_id()
    wrong = "wrong-" + CANARY
    assert client.post("/login/", {"username": "therapist.a", "password": wrong}).status_code == 200
    assert client.post("/login/", {"username": "nobody.here", "password": wrong}).status_code == 200
    assert client.post("/login/", {"username": "therapist.a", "password": PASSWORD}).status_code == 302
    assert client.post("/logout/").status_code == 302
    events = new_events(since)
    assert [(e.chain, e.actor, e.role, e.action, e.outcome) for e in events] == [
        ("northside", "therapist.a", "therapist", "auth.login_failed", "failed"),
        ("system", "nobody.here", "", "auth.login_failed", "failed"),
        ("northside", "therapist.a", "therapist", "auth.login", "ok"),
        ("northside", "therapist.a", "therapist", "auth.logout", "ok"),
    ]
    assert all(e.ip == "127.0.0.1" for e in events)
    assert all(e.detail == {} for e in events)  # never the credentials, not even masked
    assert not AuditEvent.objects.filter(Q(detail__icontains=CANARY) | Q(actor__icontains=CANARY)).exists()


def test_a_user_of_several_clinics_logs_in_on_the_system_chain(therapist_a, other_clinic):
    from tests.factories import MembershipFactory

    MembershipFactory(user=therapist_a, clinic=other_clinic)
    since = last_id()
    assert Client().post("/login/", {"username": "therapist.a", "password": PASSWORD}).status_code == 302
    [event] = new_events(since)
    assert (event.chain, event.role, event.action) == ("system", "", "auth.login")


def test_a_login_name_that_cannot_be_stored_is_kept_safely(db):
    """(The login form refuses a NUL before authenticating; another caller of authenticate might not.)"""
    since = last_id()
    audit.on_user_login_failed(sender=None, credentials={"username": "bad\x00name\ud800" + "x" * 300})
    [event] = new_events(since)
    assert event.action == "auth.login_failed" and event.chain == "system"
    assert "\x00" not in event.actor and len(event.actor) <= 150
    event.actor.encode("utf-8")


def test_the_lockout_hook_records_auth_lockout(therapist_a):
    event = audit.lockout_record(username="therapist.a", detail={"failures": 5})
    assert (event.chain, event.action, event.outcome, event.detail) == (
        "northside",
        "auth.lockout",
        "denied",
        {"failures": 5},
    )


# ----- writes -----------------------------------------------------------------------------------------


def test_an_ingest_batch_is_one_event_with_counts_and_player_ids(api, clinic):
    since = last_id()
    at = (NOW - timedelta(hours=2)).isoformat()
    batch = {
        "sessions": [
            {"session_id": "s-9", "player_id": "p-x", "started_at": at, "status": "active", "duration_minutes": 5}
        ],
        "alerts": [{"alert_id": "a-9", "player_id": "p-y", "level": "urgent", "reason": CANARY, "occurred_at": at}],
    }
    assert api.post("/api/v1/ingest", batch, content_type="application/json").status_code == 201
    [event] = new_events(since)
    assert (event.chain, event.actor, event.action, event.ip) == ("northside", "token:game", "ingest", "127.0.0.1")
    assert event.patients == ["p-x", "p-y"]
    assert event.detail["counts"]["sessions"] == {"created": 1, "updated": 0, "unchanged": 0}
    assert event.detail["counts"]["alerts"] == {"created": 1, "updated": 0, "unchanged": 0}
    # A rejected batch stores nothing, and records nothing either.
    since = last_id()
    bad = {"sessions": [{**batch["sessions"][0], "player_id": "p-y"}]}  # s-9 belongs to p-x
    assert api.post("/api/v1/ingest", bad, content_type="application/json").status_code == 400
    assert new_events(since) == []


def test_page_actions_are_recorded_without_their_notes(data, clients, patient_a):
    client = clients["therapist_a"]
    since = last_id()
    client.post(f"/patients/p-a1/alerts/{data['alert']}/acknowledge", {"note": CANARY})
    client.post(f"/patients/p-a1/alerts/{data['alert']}/acknowledge", {"note": CANARY})  # nothing changes
    client.post(f"/patients/p-a1/recommendations/{data['recommendation']}/dismiss")
    client.post(f"/patients/p-a1/recommendations/{data['recommendation']}/restore")
    patient_a.refresh_from_db()
    assert patient_a.risk_flag
    client.post("/patients/p-a1/risk-flag/clear", {"note": CANARY})
    clients["token"].post(f"/api/v1/patients/p-a1/highlights/{data['highlight']}/celebrated")
    events = new_events(since)
    assert [(e.action, e.object, e.actor) for e in events] == [
        ("alert.acknowledge", f"alert:{data['alert']}", "therapist.a"),
        ("recommendation.dismiss", f"recommendation:{data['recommendation']}", "therapist.a"),
        ("recommendation.dismiss", f"recommendation:{data['recommendation']}", "therapist.a"),
        ("risk_flag.clear", "patient:p-a1", "therapist.a"),
        ("highlight.celebrated", f"highlight:{data['highlight']}", "token:game"),
    ]
    assert all(e.patients == ["p-a1"] and e.chain == "northside" for e in events)
    assert events[0].detail["count"] == 1
    assert [events[1].detail["undo"], events[2].detail["undo"]] == [False, True]


def test_no_note_reason_or_game_text_appears_in_any_event(data, clients, patient_a):
    """The canary went through ingest (a session's world, a marker's description, a crisis reason) and
    through every note; every page was read. Not one audit event holds it."""
    client = clients["therapist_a"]
    client.post(f"/patients/p-a1/alerts/{data['alert']}/acknowledge", {"note": CANARY})
    client.post("/patients/p-a1/risk-flag/clear", {"note": CANARY})
    client.post("/patients/p-a1/notes/", {"written_on": NOW.date().isoformat(), "body": "second " + CANARY})
    client.post(f"/patients/p-a1/notes/{data['note']}/", {"written_on": NOW.date().isoformat(), "body": "ed " + CANARY})
    for path, _ in PATIENT_READS.values():
        assert client.get(path.format(**data)).status_code == 200
        clients["token"].get(path) if path.startswith("/api/") else None
    assert AuditEvent.objects.filter(action="note.write").count() == 3  # the fixture's, a second, the edit
    for path, _, persona in COLLECTION_READS.values():
        clients[persona].get(path)
    assert AuditEvent.objects.count() > 20
    for event in AuditEvent.objects.all():
        assert CANARY not in json.dumps(audit.event_fields(event), ensure_ascii=False)
        assert "items" not in event.detail and "item_9" not in json.dumps(event.detail)


# ----- commands and provisioning ----------------------------------------------------------------------


def test_provisioning_commands_are_recorded_and_never_the_token(clinic, therapist_a, patient_b):
    since = last_id()
    out = io.StringIO()
    call_command("create_ingest_token", clinic="northside", name="game-2", stdout=out, stderr=io.StringIO())
    raw = out.getvalue().strip()
    call_command("revoke_ingest_token", clinic="northside", name="game-2", stdout=io.StringIO())
    call_command("assign_patient", "p-b1", "therapist.a", clinic="northside", stdout=io.StringIO())
    call_command("create_clinic", "eastside", name="Eastside", stdout=io.StringIO())
    events = new_events(since)
    assert [(e.chain, e.actor, e.action, e.detail.get("op")) for e in events] == [
        ("northside", "system", "token.change", "create"),
        ("northside", "system", "token.change", "revoke"),
        ("northside", "system", "assignment.change", "assign"),
        ("eastside", "system", "config.change", "create"),
    ]
    assert events[2].patients == ["p-b1"] and events[2].detail["therapist"] == "therapist.a"
    assert events[3].detail["changes"]["name"] == {"before": None, "after": "Eastside"}
    assert all(raw not in json.dumps(audit.event_fields(e)) and raw[:10] not in json.dumps(e.detail) for e in events)


def test_create_user_is_recorded_without_the_password(clinic, monkeypatch):
    monkeypatch.setenv("NEW_USER_PASSWORD", "a-long-password-" + CANARY)
    since = last_id()
    call_command("create_user", "new.person", clinic="northside", role="therapist", stdout=io.StringIO())
    [event] = new_events(since)
    assert (event.chain, event.action, event.object) == ("northside", "user.change", "user:new.person")
    assert event.detail == {"op": "create", "username": "new.person", "role": "therapist", "with_email": False}
    assert CANARY not in json.dumps(event.detail)


def test_the_effectiveness_report_and_the_import_are_recorded(data, tmp_path):
    since = last_id()
    call_command("effectiveness_report", clinic="northside", format="json", stdout=io.StringIO())
    csv_file = tmp_path / "outcomes.csv"
    csv_file.write_text(
        "player_id,response_id,instrument,administered_at,total,items\n"
        f"p-a2,imp-1,gad7,{(NOW - timedelta(days=1)).isoformat()},8,\n"
    )
    call_command("import_outcomes", str(csv_file), clinic="northside", stdout=io.StringIO())
    export, imported = new_events(since)
    assert (export.chain, export.actor, export.action) == ("northside", "system", "export")
    assert export.patients == ["p-a1"]  # the patients the report names (those with scores)
    assert export.detail["command"] == "effectiveness_report"
    assert (imported.action, imported.actor, imported.patients) == ("ingest", "system", ["p-a2"])
    assert imported.detail["file"] == "outcomes.csv"
    assert imported.detail["counts"]["outcomes"]["created"] == 1


def test_a_django_admin_change_records_before_and_after_with_secrets_masked(clinic, django_user_model):
    admin_user = django_user_model.objects.create_superuser("root", "root@example.org", PASSWORD)
    client = logged_in(admin_user)
    since = last_id()
    response = client.post(
        f"/admin/tracking/clinic/{clinic.pk}/change/",
        {
            "name": "Northside Clinic",
            "slug": "northside",
            "timezone": "Europe/London",
            "webhook_url": "",
            "webhook_secret": "s3cret-" + CANARY,
            "alert_escalation_minutes": 30,
            "crisis_resources": "",
            "measure_interval_days": 14,
        },
    )
    assert response.status_code == 302, response.content[:2000]
    [event] = new_events(since)
    assert (event.chain, event.actor, event.action, event.object) == (
        "northside",
        "root",
        "config.change",
        f"clinic:{clinic.pk}",
    )
    assert event.detail["via"] == "admin" and event.detail["op"] == "update"
    assert event.detail["changes"]["name"] == {"before": "Northside", "after": "Northside Clinic"}
    assert event.detail["changes"]["webhook_secret"] == audit.MASK
    assert CANARY not in json.dumps(event.detail)
    assert Clinic.objects.get(pk=clinic.pk).name == "Northside Clinic"


def test_a_django_admin_change_of_patient_data_records_field_names_only(data, django_user_model):
    admin_user = django_user_model.objects.create_superuser("root", "root@example.org", PASSWORD)
    client = logged_in(admin_user)
    alert = Alert.objects.get(pk=data["alert"])
    since = last_id()
    client.post(f"/admin/reports/alert/{alert.pk}/delete/", {"post": "yes"})
    [event] = new_events(since)
    assert (event.action, event.object, event.patients) == ("config.change", f"alert:{alert.pk}", ["p-a1"])
    assert event.detail["op"] == "delete" and "reason" in event.detail["fields"]
    assert "changes" not in event.detail and CANARY not in json.dumps(event.detail)
