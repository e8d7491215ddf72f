"""What the pages say and how they stay current (DESIGN §4, §6, §7): "Review the open alert" from ingest
to the insights API, dismissals with Undo, the live redraw of alerts, risk flag and recommendations,
engagement labelled as engagement, the clinic admin's "First seen", and ids that can never exist."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from tests.conftest import logged_in
from tests.factories import (
    CareAssignmentFactory,
    OutcomeResponseFactory,
    PatientFactory,
    ProgressMarkerFactory,
    TherapySessionFactory,
)
from tests.test_alerts import crisis
from tracking import recompute
from tracking.history import open_alerts_by_patient
from tracking.models import Patient, ProgressHighlight, Recommendation


def insights(client, patient) -> list[dict]:
    response = client.get(f"/api/v1/patients/{patient.player_id}/insights")
    assert response.status_code == 200
    return response.json()["recommendations"]


def types(recommendations) -> list[str]:
    return [r["type"] for r in recommendations]


def steady_player(patient) -> None:
    """Active today and the 2 days before, 3 sessions this week, 10 markers: streak 3, momentum 0.68, so
    "Maintain current pace" applies (DESIGN §4) and nothing else does."""
    now = timezone.now()
    for days_ago in (0, 1, 2):
        session = TherapySessionFactory(patient=patient, started_at=now - timedelta(days=days_ago, minutes=1))
        for _ in range(3 if days_ago else 4):
            ProgressMarkerFactory(session=session, type="insight", achieved_at=session.started_at)


def text(response) -> str:
    return response.content.decode()


# ----- "Review the open alert", end to end ----------------------------------------------------------------


@pytest.mark.parametrize("level", ["urgent", "high"])
def test_an_open_serious_crisis_signal_puts_review_alert_first_until_acknowledged(api, therapist_a, patient_a, level):
    steady_player(patient_a)
    assert recompute.patient_recompute(patient_a.pk)
    assert types(insights(api, patient_a)) == ["maintain_pace"]

    alert = crisis(api, patient_a.player_id, level=level)
    assert recompute.patient_recompute(patient_a.pk)
    recommendations = insights(api, patient_a)
    assert types(recommendations)[0] == "review_alert"
    assert "maintain_pace" not in types(recommendations)
    review = recommendations[0]
    assert (review["title"], review["priority"]) == ("Review the open alert", 1)
    assert f"{level}: Crisis signal from the game" in review["reasoning"]

    client = logged_in(therapist_a)
    client.post(f"/patients/{patient_a.player_id}/alerts/{alert.pk}/acknowledge", {"note": "Called"})
    assert recompute.patient_recompute(patient_a.pk)
    assert types(insights(api, patient_a)) == ["maintain_pace"]
    assert Recommendation.objects.get(patient=patient_a, type="review_alert").expires_at is not None


def test_review_alert_shows_without_an_explicit_recompute(api, therapist_a, patient_a):
    """Ingest and acknowledgement leave the analytics stale, so the next read recomputes them."""
    alert = crisis(api, patient_a.player_id)
    assert types(insights(api, patient_a))[0] == "review_alert"
    logged_in(therapist_a).post(f"/patients/{patient_a.player_id}/alerts/{alert.pk}/acknowledge")
    assert "review_alert" not in types(insights(api, patient_a))


def test_a_moderate_alert_alone_does_not_ask_for_a_review(api, patient_a):
    steady_player(patient_a)
    crisis(api, patient_a.player_id, level="moderate")
    assert recompute.patient_recompute(patient_a.pk)
    assert types(insights(api, patient_a)) == ["maintain_pace"]


def test_the_recompute_reads_open_alerts_most_severe_first(api, therapist_a, patients_a):
    a1, a2, a3 = patients_a
    crisis(api, a1.player_id, "m", level="moderate")
    crisis(api, a1.player_id, "h", level="high")
    crisis(api, a1.player_id, "u", level="urgent")
    done = crisis(api, a2.player_id, "done", level="urgent")
    crisis(api, a3.player_id, "m3", level="moderate")
    logged_in(therapist_a).post(f"/patients/{a2.player_id}/alerts/{done.pk}/acknowledge")
    signal = "Crisis signal from the game"
    assert open_alerts_by_patient([a1.pk, a2.pk, a3.pk]) == {
        a1.pk: (("urgent", signal), ("high", signal), ("moderate", signal)),
        a3.pk: (("moderate", signal),),
    }


# ----- dismissed recommendations, with Undo ------------------------------------------------------------------


@pytest.fixture
def recommendation(patient_a) -> Recommendation:
    """A patient who never played: "Shorter, more frequent sessions" (dropout risk 0.8)."""
    assert recompute.patient_recompute(patient_a.pk)
    return Recommendation.objects.get(patient=patient_a, type="shorter_sessions")


def active_types(html: str) -> list[str]:
    return re.findall(r'<article class="recommendation" data-type="(\w+)">', html)


def dismissed_section(html: str) -> str:
    start = html.index('<h3 class="subhead">Dismissed</h3>')
    return html[start : html.index("</ul>", start)]


def test_a_dismissed_recommendation_is_listed_with_who_and_an_undo(api, therapist_a, patient_a, recommendation):
    client = logged_in(therapist_a)
    page = f"/patients/{patient_a.player_id}/"
    assert active_types(text(client.get(page))) == ["shorter_sessions"]
    assert "Dismissed</h3>" not in text(client.get(page))

    response = client.post(f"{page}recommendations/{recommendation.pk}/dismiss", follow=True)
    html = text(response)
    assert any("dismissed. Undo it below." in str(m) for m in response.context["messages"])
    assert active_types(html) == []
    dismissed = dismissed_section(html)
    assert 'data-type="shorter_sessions"' in dismissed and "Shorter, more frequent sessions" in dismissed
    assert "dismissed by therapist.a on " in dismissed
    assert f'action="{page}recommendations/{recommendation.pk}/restore"' in dismissed and ">Undo<" in dismissed
    assert types(insights(api, patient_a)) == []

    response = client.post(f"{page}recommendations/{recommendation.pk}/restore", follow=True)
    html = text(response)
    assert any("is shown again" in str(m) for m in response.context["messages"])
    assert active_types(html) == ["shorter_sessions"] and "Dismissed</h3>" not in html
    assert types(insights(api, patient_a)) == ["shorter_sessions"]
    recommendation.refresh_from_db()
    assert (recommendation.dismissed, recommendation.dismissed_at, recommendation.dismissed_by) == (False, None, None)


def test_a_dismissal_survives_a_recompute_and_can_still_be_undone(api, therapist_a, patient_a, recommendation):
    client = logged_in(therapist_a)
    page = f"/patients/{patient_a.player_id}/"
    client.post(f"{page}recommendations/{recommendation.pk}/dismiss")
    Patient.objects.filter(pk=patient_a.pk).update(data_changed_at=timezone.now())
    assert recompute.patient_recompute(patient_a.pk)
    assert "dismissed by therapist.a" in dismissed_section(text(client.get(page)))
    client.post(f"{page}recommendations/{recommendation.pk}/restore")
    assert types(insights(api, patient_a)) == ["shorter_sessions"]


def test_another_therapist_can_neither_dismiss_nor_restore(therapist_a, therapist_b, patient_a, recommendation):
    page = f"/patients/{patient_a.player_id}/"
    other = logged_in(therapist_b)
    assert other.post(f"{page}recommendations/{recommendation.pk}/dismiss").status_code == 404
    logged_in(therapist_a).post(f"{page}recommendations/{recommendation.pk}/dismiss")
    assert other.post(f"{page}recommendations/{recommendation.pk}/restore").status_code == 404
    recommendation.refresh_from_db()
    assert recommendation.dismissed is True


# ----- the patient page and its live redraw -----------------------------------------------------------------------


def test_live_json_redraws_alerts_risk_flag_recommendations_and_cards(api, therapist_a, patient_a):
    client = logged_in(therapist_a)
    url = f"/patients/{patient_a.player_id}/live.json"
    before = client.get(url).json()
    assert set(before) == {
        "alerts_html",
        "risk_flag_html",
        "recommendations_html",
        "cards_html",
        "viz",
        "activity_figure",
    }
    assert "Risk flag raised" not in before["risk_flag_html"] and "Crisis phrase" not in before["alerts_html"]
    assert len(before["viz"]["time_buckets"]) == 90
    assert "Game progress score" in before["cards_html"] and "Recommendations" in before["recommendations_html"]

    alert = crisis(api, patient_a.player_id, reason="Typed a crisis phrase in the journal")
    after = client.get(url).json()
    assert f'data-alert-id="{alert.pk}"' in after["alerts_html"]
    assert "Typed a crisis phrase in the journal" in after["alerts_html"]
    assert "badge--urgent" in after["alerts_html"] and "1 open" in after["alerts_html"]
    assert "Risk flag raised" in after["risk_flag_html"]
    assert 'data-type="review_alert"' in after["recommendations_html"]

    client.post(f"/patients/{patient_a.player_id}/alerts/{alert.pk}/acknowledge", {"note": "Called"})
    done = client.get(url).json()
    assert "acknowledged by therapist.a" in done["alerts_html"] and "Called" in done["alerts_html"]
    assert 'data-type="review_alert"' not in done["recommendations_html"]
    assert "Risk flag raised" in done["risk_flag_html"]  # only a therapist's note clears it
    client.post(f"/patients/{patient_a.player_id}/risk-flag/clear", {"note": "Safety plan reviewed"})
    cleared = client.get(url).json()["risk_flag_html"]
    assert "Risk flag raised" not in cleared and "Risk flag cleared" in cleared and "by therapist.a" in cleared


def test_live_json_is_for_those_who_may_see_the_patient(personas, patient_a):
    url = f"/patients/{patient_a.player_id}/live.json"
    assert personas["therapist_b"].get(url).status_code == 404
    assert personas["foreign_therapist"].get(url).status_code == 404


def test_patient_page_labels_engagement_as_engagement(api, therapist_a, patient_a):
    for n in range(5):  # five sessions: a milestone with its highlight
        TherapySessionFactory(
            patient=patient_a, started_at=timezone.now() - timedelta(days=n, hours=1), approaches=["cbt", "act"]
        )
    client = logged_in(therapist_a)
    page = f"/patients/{patient_a.player_id}/"
    html = text(client.get(page))
    for phrase in ("Engagement in the game", "Game progress score", "Engagement trend"):
        assert phrase in html
    highlight = ProgressHighlight.objects.get(patient=patient_a)
    assert highlight.title in html
    assert api.post(f"/api/v1/patients/{patient_a.player_id}/highlights/{highlight.pk}/celebrated").status_code == 200
    for shown in (html, text(client.get(page))):
        assert "celebrated in the game" not in shown and "not yet shown in the game" not in shown


@pytest.mark.parametrize(
    ("approaches", "shown"),
    [
        (["cbt", "act", "dbt"], "CBT, ACT, DBT"),
        (["mindfulness", "cbt"], "mindfulness, CBT"),
        (["DBT"], "DBT"),
        ([], "—"),
    ],
)
def test_recent_sessions_write_approaches_as_clinicians_do(therapist_a, patient_a, approaches, shown):
    TherapySessionFactory(patient=patient_a, started_at=timezone.now() - timedelta(hours=2), approaches=approaches)
    html = text(logged_in(therapist_a).get(f"/patients/{patient_a.player_id}/"))
    sessions = html[html.index('id="sessions-title"') :]
    sessions = sessions[: sessions.index("</table>")]
    assert f"<td>{shown}</td>" in sessions


# ----- the clinic admin's "First seen" ----------------------------------------------------------------------------


def first_seen(html: str, player_id: str) -> str:
    match = re.search(
        rf'<th scope="row">{re.escape(player_id)}</th>.*?<time datetime="[^"]*">([^<]*)</time>', html, re.S
    )
    assert match, player_id
    return match.group(1)


def test_first_seen_is_the_patients_first_data_in_their_time_zone(clinic, personas, patient_a):
    patient_a.timezone = "Asia/Tokyo"
    patient_a.save()
    # the row was created when the patient was provisioned, long before any data
    Patient.objects.filter(pk=patient_a.pk).update(created_at=datetime(2025, 6, 1, 8, 0, tzinfo=UTC))
    TherapySessionFactory(patient=patient_a, started_at=datetime(2026, 2, 3, 14, 5, tzinfo=UTC))
    TherapySessionFactory(patient=patient_a, started_at=datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
    html = text(personas["clinic_admin"].get("/"))
    assert first_seen(html, patient_a.player_id) == "2026-02-03 23:05"  # 14:05 UTC in Tokyo


@pytest.mark.parametrize(
    ("session_at", "response_at", "expected"),
    [
        # a questionnaire before the first session: the questionnaire (London is UTC in winter)
        (datetime(2026, 2, 3, 14, 5, tzinfo=UTC), datetime(2026, 1, 20, 9, 30, tzinfo=UTC), "2026-01-20 09:30"),
        # a session before the first questionnaire: the session (BST in summer)
        (datetime(2026, 7, 3, 14, 5, tzinfo=UTC), datetime(2026, 8, 1, 9, 30, tzinfo=UTC), "2026-07-03 15:05"),
        (None, datetime(2026, 1, 20, 9, 30, tzinfo=UTC), "2026-01-20 09:30"),
        (datetime(2026, 2, 3, 14, 5, tzinfo=UTC), None, "2026-02-03 14:05"),
    ],
)
def test_first_seen_is_the_earliest_session_or_questionnaire(personas, patient_b, session_at, response_at, expected):
    if session_at:
        TherapySessionFactory(patient=patient_b, started_at=session_at)
    if response_at:
        OutcomeResponseFactory(patient=patient_b, administered_at=response_at)
    html = text(personas["clinic_admin"].get("/"))
    assert first_seen(html, patient_b.player_id) == expected


def test_first_seen_without_any_data_is_when_the_patient_was_created(clinic, personas):
    quiet = CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id="quiet")).patient
    Patient.objects.filter(pk=quiet.pk).update(created_at=datetime(2026, 5, 6, 7, 8, tzinfo=UTC))
    assert first_seen(text(personas["clinic_admin"].get("/")), "quiet") == "2026-05-06 08:08"


# ----- ids that cannot exist -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("player_id", ["a%00b", "%00", "a%0Ab", "a%20b", "a%2Fb"])
@pytest.mark.parametrize(
    "path",
    [
        "/patients/{}/",
        "/patients/{}/live.json",
        "/patients/{}/outcomes/",
        "/api/v1/patients/{}/progress",
        "/api/v1/patients/{}/insights",
    ],
)
def test_an_impossible_player_id_is_404_never_500(api, personas, path, player_id):
    url = path.format(player_id)
    assert personas["therapist_a"].get(url).status_code == 404
    if url.startswith("/api/"):
        response = api.get(url)
        assert response.status_code == 404 and response.json() == {"detail": "Not found."}


@pytest.mark.parametrize("path", ["/patients/a%00b/alerts/acknowledge", "/patients/a%00b/alerts/1/acknowledge"])
def test_posting_to_an_impossible_player_id_is_404(personas, path):
    assert personas["therapist_a"].post(path, {"alert": "1", "note": "x"}).status_code == 404
