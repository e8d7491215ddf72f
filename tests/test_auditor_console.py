"""The auditor's console at /audit/ (DESIGN §6, §7; issue 10 item 5): the events of the auditor's clinic
chain, newest first, filtered by user, patient, action, outcome and dates, paginated by keyset; the CSV
export, itself audited; the chain status with "Verify now"; the review of break-glass grants and
lockouts; patient identifiers and actions only, never clinical content."""

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from reports.models import Alert
from tests.conftest import logged_in
from tests.factories import MembershipFactory
from tracking import audit, services
from tracking.models import AuditAction, AuditChainHead, AuditEvent, AuditOutcome, AuditReview
from tracking.selectors import AuditQuery, audit_page

CANARY = "CANARY-7f3a-do-not-show"


@pytest.fixture(autouse=True)
def _audit_heads(settings, tmp_path):
    settings.AUDIT_HEAD_DIR = str(tmp_path / "heads")
    settings.AUDIT_SIGNING_KEY = "test-signing-key-not-secret-key"


@pytest.fixture
def console(auditor):
    return logged_in(auditor)


def record(chain="northside", *, at=None, actor="therapist.a", action=AuditAction.PATIENT_READ, **fields):
    return audit.audit_record(
        chain=chain, actor=actor, role=fields.pop("role", "therapist"), action=action, at=at, **fields
    )


def history(n: int, *, start=None, chain="northside", step=timedelta(seconds=1), **fields) -> list[AuditEvent]:
    """`n` events in order, one a second (or all at one time with step=0), from now on: after the
    auditor's own login, which the chain holds too."""
    start = start or timezone.now()
    return [record(chain, at=start + i * step, **fields) for i in range(n)]


def seqs(response, *, logins: bool = False) -> list[int]:
    """The seq of each event listed, in order; the console's own logins left out unless asked for."""
    rows = re.findall(r'<tr data-seq="(\d+)" data-action="([^"]+)"', response.content.decode())
    return [int(seq) for seq, action in rows if logins or action != AuditAction.LOGIN]


def seq_list(events) -> list[int]:
    """The seqs of `events`, newest first."""
    return [e.seq for e in reversed(events)]


def link(response, rel: str) -> str | None:
    match = re.search(rf'<a href="([^"]+)" rel="{rel}">', response.content.decode())
    return match and match.group(1).replace("&amp;", "&")


def canary_batch(player_id: str, canary: str = CANARY) -> dict:
    """An ingest batch with the canary in a crisis signal's reason and in a marker's description."""
    now = timezone.now()
    return {
        "sessions": [
            {
                "session_id": f"{player_id}-cs1",
                "player_id": player_id,
                "started_at": (now - timedelta(hours=2)).isoformat(),
                "ended_at": (now - timedelta(hours=1)).isoformat(),
                "status": "completed",
                "duration_minutes": 30,
            }
        ],
        "markers": [
            {
                "marker_id": f"{player_id}-cm1",
                "session_id": f"{player_id}-cs1",
                "player_id": player_id,
                "type": "breakthrough",
                "description": f"{canary} marker",
                "achieved_at": (now - timedelta(hours=1, minutes=30)).isoformat(),
                "therapeutic_value": 0.9,
            }
        ],
        "outcomes": [
            {
                "response_id": f"{player_id}-cr1",
                "player_id": player_id,
                "instrument": "phq9",
                "administered_at": (now - timedelta(hours=1)).isoformat(),
                "items": [3, 3, 3, 2, 2, 2, 1, 1, 0],
                "total": 17,
            }
        ],
        "alerts": [
            {
                "alert_id": f"{player_id}-ca1",
                "player_id": player_id,
                "level": "high",
                "reason": f"{canary} crisis",
                "occurred_at": (now - timedelta(minutes=30)).isoformat(),
            }
        ],
    }


# ----- who sees what -------------------------------------------------------------------------------


def test_an_auditors_home_is_the_console(console):
    response = console.get("/")
    assert response.status_code == 302 and response["Location"] == "/audit/"
    page = console.get("/audit/")
    assert page.status_code == 200
    assert '<a href="/audit/" aria-current="page">Audit</a>' in page.content.decode()


def test_an_auditor_sees_their_clinics_chain_only(console, other_clinic):
    mine = history(3)
    history(2, chain="riverside", actor="therapist.river")
    record(audit.SYSTEM_CHAIN, actor="system", action=AuditAction.RETENTION_RUN)
    assert seqs(console.get("/audit/")) == seq_list(mine)
    # Asking for another clinic's chain shows one's own.
    other = console.get("/audit/", {"chain": "riverside"})
    assert "therapist.river" not in other.content.decode() and seqs(other) == seq_list(mine)


def test_an_auditor_of_two_clinics_switches_between_their_chains(auditor, other_clinic):
    MembershipFactory(clinic=other_clinic, user=auditor, role="auditor")
    client = logged_in(auditor)
    history(2)
    history(4, chain="riverside", actor="therapist.river")
    assert len(seqs(client.get("/audit/"))) == 2  # the first by slug: northside
    riverside = client.get("/audit/", {"chain": "riverside"})
    assert len(seqs(riverside)) == 4 and "therapist.river" in riverside.content.decode()


# ----- order and keyset pagination -------------------------------------------------------------------


def test_newest_first_in_pages_of_50_with_newer_and_older_links(console):
    newest_first = seq_list(history(120))
    first = console.get("/audit/")
    assert seqs(first) == newest_first[:50]
    assert link(first, "prev") is None
    second = console.get(link(first, "next"))
    assert seqs(second) == newest_first[50:100]
    third = console.get(link(second, "next"))
    assert seqs(third) == newest_first[100:] and link(third, "next") is None
    back = console.get(link(third, "prev"))
    assert seqs(back) == newest_first[50:100]
    assert seqs(console.get(link(back, "prev"))) == newest_first[:50]


def test_events_at_the_same_instant_are_neither_skipped_nor_repeated(clinic):
    """Keyset on (at, seq): a page boundary inside a run of equal timestamps."""
    newest_first = seq_list(history(23, step=timedelta(0), start=timezone.now() - timedelta(days=1)))
    query = AuditQuery(chain="northside")
    seen, page = [], audit_page(query, size=10)
    while True:
        seen += [r.seq for r in page.rows]
        if not page.older:
            break
        page = audit_page(query, before=page.older, size=10)
    assert seen == newest_first
    back: list[int] = []
    while page.newer:  # and back, newer, through the same ties
        page = audit_page(query, after=page.newer, size=10)
        back = [r.seq for r in page.rows] + back
    assert back == newest_first[:20]


@pytest.mark.parametrize("cursor", ["", "x", "1.2.3", "9" * 30 + ".1", "-5.3", "١٢.٣"])
def test_an_odd_cursor_is_the_newest_page(console, cursor):
    events = history(3)
    assert seqs(console.get("/audit/", {"before": cursor})) == seq_list(events)
    assert console.get("/audit/", {"after": cursor}).status_code == 200


def test_the_page_costs_the_same_queries_for_10_and_200_events(console, django_assert_num_queries):
    history(10, action=AuditAction.CASELOAD_READ, patients=["p-a1", "p-a2"])
    console.get("/audit/")  # the session's first request: not part of the measure
    with CaptureQueriesContext(connection) as few:
        console.get("/audit/")
    history(190, start=timezone.now() - timedelta(hours=20), patients=["p-a3"], detail={"n": 1})
    with django_assert_num_queries(len(few.captured_queries)):
        response = console.get("/audit/")
    assert len(seqs(response, logins=True)) == 50


# ----- filters -------------------------------------------------------------------------------------


def test_filters_by_user_action_outcome_and_date_range(console):
    base = datetime(2026, 3, 1, 9, tzinfo=UTC)
    a = record(at=base, actor="therapist.a", action=AuditAction.LOGOUT)
    b = record(at=base + timedelta(days=1), actor="therapist.b", action=AuditAction.PATIENT_READ, patients=["p-b1"])
    c = record(
        at=base + timedelta(days=2), actor="therapist.b", action=AuditAction.LOGIN_FAILED, outcome=AuditOutcome.FAILED
    )
    d = record(at=base + timedelta(days=3), actor="therapist.a", action=AuditAction.PATIENT_READ, patients=["p-a1"])
    assert seqs(console.get("/audit/", {"actor": "therapist.b"})) == [c.seq, b.seq]
    assert seqs(console.get("/audit/", {"action": "patient.read"})) == [d.seq, b.seq]
    assert seqs(console.get("/audit/", {"outcome": "failed"})) == [c.seq]
    assert seqs(console.get("/audit/", {"from": "2026-03-02", "to": "2026-03-03"})) == [c.seq, b.seq]
    assert seqs(console.get("/audit/", {"from": "2026-03-04"})) == [d.seq]
    assert seqs(console.get("/audit/", {"to": "2026-03-01"})) == [a.seq]
    both = console.get("/audit/", {"actor": "therapist.a", "action": "patient.read"})
    assert seqs(both) == [d.seq]


@pytest.mark.parametrize(
    "params",
    [{"action": "rm -rf"}, {"outcome": "maybe"}, {"from": "yesterday"}, {"to": "2026-02-30"}, {"actor": "a\x00b"}],
)
def test_a_bad_filter_is_said_and_ignored(console, params):
    events = history(2)
    response = console.get("/audit/", params)
    assert response.status_code == 200 and seqs(response) == seq_list(events)
    assert 'class="message message--error"' in response.content.decode()


def test_a_date_range_that_ends_before_it_starts_is_said(console):
    events = history(2)
    response = console.get("/audit/", {"from": "2026-03-05", "to": "2026-03-01"})
    assert "ends before it starts" in response.content.decode() and seqs(response) == seq_list(events)


def test_the_patient_filter_is_posted_and_kept_in_the_session_never_in_a_url(console):
    a1 = record(patients=["p-a1"])
    record(patients=["p-a10"])  # a longer id that starts the same: not a match
    both = record(action=AuditAction.CASELOAD_READ, patients=["p-a1", "p-a2"])
    record(patients=[])
    response = console.post("/audit/patient-filter", {"player_id": "p-a1", "action": "patient.read"})
    assert response.status_code == 302
    assert "p-a1" not in response["Location"] and response["Location"] == "/audit/?chain=northside&action=patient.read"
    page = console.get("/audit/")
    assert seqs(page) == [both.seq, a1.seq]
    html = page.content.decode()
    assert 'value="p-a1"' in html  # the term is shown in its field…
    for url in re.findall(r'href="([^"]*)"', html) + re.findall(r'action="([^"]*)"', html):
        assert "p-a1" not in url  # …and in no link
    assert seqs(console.get("/audit/", {"action": "patient.read"})) == [a1.seq]
    cleared = console.post("/audit/patient-filter", {"clear": "1"})
    assert cleared.status_code == 302 and len(seqs(console.get("/audit/"))) == 4


@pytest.mark.parametrize("term", ["bad id", "p\x00a1", "x" * 129])
def test_an_impossible_patient_term_is_refused(console, term):
    event = record(patients=["p-a1"])
    console.post("/audit/patient-filter", {"player_id": term})
    assert seqs(console.get("/audit/")) == [event.seq]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the GIN index is PostgreSQL's")
def test_the_patient_filter_uses_json_containment():
    query = AuditEvent.objects.filter(chain="northside", patients__contains=["p-a1"])
    assert "@>" in str(query.query)


# ----- the CSV export ------------------------------------------------------------------------------


def export_rows(response) -> list[list[str]]:
    content = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(content)))


def test_the_export_has_the_fields_of_design_7_for_the_filtered_events(console):
    read = record(action=AuditAction.PATIENT_READ, patients=["p-a1"], object="patient:p-a1", ip="10.0.0.7")
    record(action=AuditAction.LOGIN)
    response = console.get("/audit/export.csv", {"action": "patient.read"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert 'filename="audit-northside-' in response["Content-Disposition"]
    header, *rows = export_rows(response)
    assert tuple(header) == audit.EXPORT_FIELDS
    assert len(rows) == 1
    fields = audit.event_fields(read)
    assert rows[0] == [str(audit.export_cell(fields[name])) for name in audit.EXPORT_FIELDS]
    assert dict(zip(header, rows[0], strict=True))["patients"] == '["p-a1"]'


def test_the_export_escapes_spreadsheet_formulas(console):
    record(actor='=HYPERLINK("http://evil")', action=AuditAction.LOGIN_FAILED, outcome=AuditOutcome.FAILED)
    record(actor="@SUM(A1)", action=AuditAction.LOGIN_FAILED, outcome=AuditOutcome.FAILED)
    header, *rows = export_rows(console.get("/audit/export.csv", {"action": "auth.login_failed"}))
    actors = [dict(zip(header, row, strict=True))["actor"] for row in rows]
    assert actors == ['\'=HYPERLINK("http://evil")', "'@SUM(A1)"]


def test_the_export_is_itself_audited_with_the_filters_and_the_count(console, auditor):
    history(3, action=AuditAction.PATIENT_READ, patients=["p-a1"])
    history(2, start=timezone.now() - timedelta(hours=1), action=AuditAction.LOGIN)
    console.post("/audit/patient-filter", {"player_id": "p-a1"})
    header, *rows = export_rows(console.get("/audit/export.csv", {"action": "patient.read", "from": "2020-01-01"}))
    assert len(rows) == 3
    export = AuditEvent.objects.get(action=AuditAction.AUDIT_EXPORT)
    assert export.chain == "northside" and export.actor == auditor.username and export.role == "auditor"
    assert export.patients == ["p-a1"]
    assert export.detail["events"] == 3
    assert export.detail["filters"] == {"action": "patient.read", "from": "2020-01-01", "patient": True}
    assert export.seq not in [int(dict(zip(header, r, strict=True))["seq"]) for r in rows]


# ----- the chain status --------------------------------------------------------------------------------


def chains_section(response) -> str:
    return response.content.decode().split('id="chains"', 1)[1].split('id="reviews"', 1)[0]


def test_the_chain_status_says_never_verified_then_verify_now_verifies(console):
    last = history(4)[-1]
    assert "Never" in chains_section(console.get("/audit/"))
    response = console.post("/audit/verify", {"chain": "northside"})
    assert response.status_code == 302 and response["Location"] == "/audit/?chain=northside#chains"
    head = AuditChainHead.objects.get(chain="northside")
    assert head.verified_ok is True and head.verified_seq == last.seq
    verify = AuditEvent.objects.get(action=AuditAction.AUDIT_VERIFY)
    assert verify.detail["via"] == "console" and verify.detail["up_to_seq"] == last.seq
    page = console.get("/audit/")
    section = chains_section(page)
    assert "Intact" in section and f"up to seq {last.seq}" in section and "1 newer not yet verified" in section
    assert f"is intact: {last.seq} events verified, up to seq {last.seq}" in page.content.decode()


def test_the_chain_status_shows_the_last_signed_head(console):
    last = history(3)[-1]
    audit.export_heads()
    section = chains_section(console.get("/audit/"))
    head = AuditChainHead.objects.get(chain="northside")
    assert f"{head.exported_at:%Y-%m-%d %H:%M} UTC, seq {last.seq}" in section


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the tamper drill needs PostgreSQL's superuser")
def test_a_broken_chain_is_shown_with_the_broken_message(console):
    events = history(5)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_event DISABLE TRIGGER audit_event_guard")
        cursor.execute("UPDATE audit_event SET detail = '{\"x\": 1}' WHERE id = %s", [events[2].pk])
        cursor.execute("ALTER TABLE audit_event ENABLE TRIGGER audit_event_guard")
    response = console.post("/audit/verify", {"chain": "northside"})
    assert response.status_code == 302
    page = console.get("/audit/")
    section = chains_section(page)
    assert "Broken" in section and f"event {events[2].pk} (chain northside, seq {events[2].seq})" in section
    assert "edited" in section


def test_verify_now_is_for_the_auditors_own_chains(console, other_clinic):
    history(2, chain="riverside")
    assert console.post("/audit/verify", {"chain": "riverside"}).status_code == 404
    assert AuditChainHead.objects.get(chain="riverside").verified_at is None


# ----- reviews of break-glass grants and lockouts ----------------------------------------------------


def reviews_section(response) -> str:
    return response.content.decode().split('id="reviews"', 1)[1].split('id="events"', 1)[0]


def test_break_glass_grants_and_lockouts_wait_for_review_and_are_marked_reviewed(
    console, auditor, therapist_a, patient_b
):
    grant = services.break_glass_grant(user=therapist_a, patient=patient_b, reason="Patient called in crisis, T-B away")
    lockout = record(actor="therapist.b", action=AuditAction.LOCKOUT, outcome=AuditOutcome.DENIED, ip="10.1.2.3")
    record(action=AuditAction.PATIENT_READ, patients=["p-a1"])
    section = reviews_section(console.get("/audit/"))
    assert section.count('class="review-item ') == 2
    assert "Patient called in crisis, T-B away" in section and "p-b1" in section
    assert "Lockout" in section and "10.1.2.3" in section
    grant_event = AuditEvent.objects.get(object=f"break_glass:{grant.pk}")

    response = console.post(f"/audit/reviews/{grant_event.pk}", {"note": "Called T-B: justified"})
    assert response.status_code == 302 and response["Location"].endswith("#reviews")
    review = AuditReview.objects.get(event_id=grant_event.pk)
    assert review.reviewed_by == auditor and review.note == "Called T-B: justified" and review.chain == "northside"
    recorded = AuditEvent.objects.get(object=f"review:{grant_event.pk}")
    assert recorded.action == AuditAction.AUDIT_VERIFY and recorded.actor == auditor.username
    assert recorded.patients == ["p-b1"]
    assert "Called T-B" not in json.dumps(recorded.detail)

    section = reviews_section(console.get("/audit/"))
    pending = section.split("Reviewed recently", 1)[0]
    assert f'data-event-id="{grant_event.pk}"' not in pending and f'data-event-id="{lockout.pk}"' in pending
    assert "Reviewed recently (1)" in section and "Called T-B: justified" in section


def test_a_review_stands_once_made(console, auditor):
    lockout = record(actor="therapist.b", action=AuditAction.LOCKOUT, outcome=AuditOutcome.DENIED)
    console.post(f"/audit/reviews/{lockout.pk}", {"note": "first"})
    console.post(f"/audit/reviews/{lockout.pk}", {"note": "second"})
    assert AuditReview.objects.get(event_id=lockout.pk).note == "first"
    assert AuditEvent.objects.filter(object=f"review:{lockout.pk}").count() == 1


def test_only_break_glass_and_lockout_events_of_ones_chain_are_reviewed(console, other_clinic):
    read = record(action=AuditAction.PATIENT_READ)
    foreign = record("riverside", actor="therapist.river", action=AuditAction.LOCKOUT)
    for event_id in (read.pk, foreign.pk, 999999, 10**30):
        assert console.post(f"/audit/reviews/{event_id}", {"note": "x"}).status_code == 404
    assert not AuditReview.objects.exists()


def test_a_review_note_with_a_nul_is_refused(console):
    lockout = record(actor="therapist.b", action=AuditAction.LOCKOUT, outcome=AuditOutcome.DENIED)
    response = console.post(f"/audit/reviews/{lockout.pk}", {"note": "a\x00b"}, follow=True)
    assert response.status_code == 200 and "NUL" in response.content.decode()
    assert not AuditReview.objects.exists()


# ----- identifiers and actions, never clinical content -----------------------------------------------


def test_a_detail_is_shown_as_field_names_and_counts_only(console):
    record(
        action=AuditAction.CONFIG_CHANGE,
        detail={"changed": ["timezone"], "before": {"timezone": CANARY}, "batch": 3, "comment": CANARY},
    )
    html = console.get("/audit/").content.decode()
    assert CANARY not in html
    assert "batch: 3" in html and "before (timezone)" in html and "changed: 1" in html and "comment" in html


def test_many_patients_are_shortened(console):
    record(action=AuditAction.CASELOAD_READ, patients=[f"p-x{n}" for n in range(10)])
    html = console.get("/audit/").content.decode()
    assert "+7 more" in html


def test_no_clinical_content_reaches_any_auditor_page(api, console, clinic, therapist_a, patient_a):
    """The canary goes in through ingest (a crisis reason, a marker description) and an acknowledgement
    note; no page of the auditor's, and not the export, shows it."""
    response = api.post(
        "/api/v1/ingest", data=json.dumps(canary_batch(patient_a.player_id)), content_type="application/json"
    )
    assert response.status_code in (200, 201), response.content
    alert = Alert.objects.get(alert_id=f"{patient_a.player_id}-ca1")
    therapist = logged_in(therapist_a)
    assert CANARY in therapist.get(f"/patients/{patient_a.player_id}/").content.decode()  # the canary is there
    therapist.post(f"/patients/{patient_a.player_id}/alerts/{alert.pk}/acknowledge", {"note": f"{CANARY} note"})
    record(actor="therapist.b", action=AuditAction.LOCKOUT, outcome=AuditOutcome.DENIED)

    pages = [
        console.get("/audit/"),
        console.get("/audit/", {"action": "ingest"}),
        console.get("/audit/", {"action": "alert.acknowledge"}),
        console.get("/audit/", {"actor": therapist_a.username}),
    ]
    console.post("/audit/patient-filter", {"player_id": patient_a.player_id})
    pages.append(console.get("/audit/"))
    console.post("/audit/verify", {"chain": "northside"})
    pages.append(console.get("/audit/"))
    for page in pages:
        assert page.status_code == 200
        assert CANARY not in page.content.decode()
    export = b"".join(console.get("/audit/export.csv").streaming_content).decode()
    assert CANARY not in export


# ----- the demo's history ------------------------------------------------------------------------------


def test_the_demo_seeds_a_realistic_audit_history_once(db):
    now = datetime(2026, 3, 18, 14, 30, tzinfo=UTC)
    with mock.patch("django.utils.timezone.now", return_value=now):
        call_command("seed_demo", "--patients", "12", "--days", "30", stdout=io.StringIO(), stderr=io.StringIO())
    events = list(AuditEvent.objects.filter(chain="northside").order_by("seq"))
    actions = {e.action for e in events}
    assert actions >= {
        "auth.login", "auth.login_failed", "auth.lockout", "auth.logout", "caseload.read", "patient.read", "ingest",
        "break_glass", "export",
    }  # fmt: skip
    assert [e.at for e in events] == sorted(e.at for e in events) and all(e.at < now for e in events)
    grant = next(e for e in events if e.action == "break_glass")
    assert grant.detail["reason"] and grant.patients
    [result] = audit.verify_chains(["northside"])
    assert result.broken is None
    page = logged_in(get_user_model().objects.get(username="auditor.northside")).get("/audit/")
    assert "Break-glass" in reviews_section(page) and "Lockout" in reviews_section(page)
    count = AuditEvent.objects.count()
    with mock.patch("django.utils.timezone.now", return_value=now + timedelta(hours=1)):
        call_command(
            "seed_demo", "--patients", "12", "--days", "30", "--reset", stdout=io.StringIO(), stderr=io.StringIO()
        )
    assert AuditEvent.objects.count() == count  # the log outlives --reset, and is not seeded twice
