"""The clinician dashboard in headless Chromium: caseload, patient page, recommendations, live updates."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.browser.conftest import log_in, screenshot
from tests.factories import PASSWORD, OutcomeResponseFactory, ProgressMarkerFactory, TherapySessionFactory
from tests.test_alerts import crisis_batch
from tests.test_ingest_concurrency import post_over_http
from tracking import history, recompute
from tracking.models import Recommendation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def plot_data(page, selector: str):
    """The traces Plotly drew into a chart element."""
    return page.evaluate(
        "(sel) => document.querySelector(sel).data.map(t => ({name: t.name, x: t.x, y: t.y}))", selector
    )


@pytest.fixture
def busy_patient(patient_a):
    """Sessions on each of the last 20 local days with a marker each, and three PHQ-9 scores."""
    tz = patient_a.tz_name
    today = history.local_today(tz)
    for d in range(20):
        start = history.local_midnight(today - timedelta(days=d), tz) + timedelta(hours=18)
        session = TherapySessionFactory(patient=patient_a, started_at=start, duration_minutes=10 + d)
        ProgressMarkerFactory(session=session, type="skill_acquired" if d % 2 else "insight")
    for days_ago, total in ((60, 16), (30, 12), (2, 8)):
        OutcomeResponseFactory(
            patient=patient_a, total=total, administered_at=timezone.now() - timedelta(days=days_ago)
        )
    recompute.patient_recompute(patient_a.pk)
    return patient_a


def test_caseload_lists_the_therapists_patients_and_sorts_and_filters(
    page, live_server, therapist_a, patients_a, patient_b, foreign_patient
):
    for n, patient in enumerate(patients_a):
        TherapySessionFactory(patient=patient, started_at=timezone.now() - timedelta(days=3 * n + 1))
        recompute.patient_recompute(patient.pk)
    log_in(page, live_server, therapist_a.username, PASSWORD)
    ids = lambda: page.locator("#caseload tbody tr").evaluate_all("rows => rows.map(r => r.dataset.playerId)")  # noqa: E731
    assert sorted(ids()) == ["p-a1", "p-a2", "p-a3"]

    page.get_by_role("link", name="Last active").click()
    page.wait_for_url("**/?sort=last_active")
    assert ids() == ["p-a3", "p-a2", "p-a1"]  # oldest first
    page.get_by_role("link", name="Last active").click()
    page.wait_for_url("**/?sort=-last_active")
    assert ids() == ["p-a1", "p-a2", "p-a3"]
    assert page.locator("th[aria-sort=descending]").inner_text().startswith("Last active")

    page.get_by_role("button", name="Not active for 7 days").click()
    page.wait_for_url("**filter=inactive_7d")
    assert ids() == ["p-a3"]  # last active 7 days ago

    page.get_by_role("link", name="Clear filters").click()
    page.get_by_label("Player id").fill("p-a2")
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("#caseload")
    assert ids() == ["p-a2"]
    assert "p-a2" not in page.url
    assert page.console_errors == []


def test_patient_page_charts_recommendations_and_live_update(page, live_server, therapist_a, busy_patient, token):
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.goto(f"{live_server.url}/patients/{busy_patient.player_id}/")
    page.wait_for_selector("#activity-chart[data-chart-drawn]")
    activity = plot_data(page, "#activity-chart")
    assert [len(t["x"]) for t in activity] == [30, 30]
    assert sum(activity[0]["y"]) == 20 and sum(activity[1]["y"]) == sum(10 + d for d in range(20))
    assert sum(len(t["x"]) for t in plot_data(page, "[data-chart=markers]")) == 20
    phq9 = plot_data(page, "#outcome-phq9 [data-chart]")
    assert phq9[0]["y"] == [16, 12, 8]
    page.get_by_role("button", name="90 days").click()
    assert [len(t["x"]) for t in plot_data(page, "#activity-chart")] == [90, 90]
    page.wait_for_selector("#live-status:has-text('Live updates on')")
    screenshot(page, "patient-desktop")
    page.set_viewport_size({"width": 820, "height": 1100})
    page.reload()
    page.wait_for_selector("#activity-chart[data-chart-drawn]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 820  # nothing wider than a tablet
    screenshot(page, "patient-tablet")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.reload()

    # Dismiss a recommendation; it stays dismissed after a reload.
    recs = page.locator("#recommendations .recommendation h3")
    assert recs.count() == 2
    page.get_by_role("button", name="Dismiss “Maintain current pace”").click()
    page.wait_for_selector("text=dismissed.")
    page.reload()
    assert [t.split(" Priority")[0] for t in page.locator("#recommendations .recommendation h3").all_inner_texts()] == [
        "Continue mindfulness practice"
    ]
    assert Recommendation.objects.get(patient=busy_patient, type="maintain_pace").dismissed

    # The game posts three sessions today while the page is open: the chart shows them within 2 s.
    page.wait_for_selector("#live-status:has-text('Live updates on')")
    before = plot_data(page, "#activity-chart")[0]["y"][-1]
    now = timezone.now().replace(microsecond=0)
    midnight = history.local_midnight(history.local_today(busy_patient.tz_name), busy_patient.tz_name)
    batch = {
        "sessions": [
            {
                "session_id": f"live-{n}",
                "player_id": busy_patient.player_id,
                # a few seconds apart, never before today's local midnight (the bucket the chart must show)
                "started_at": max(now - timedelta(seconds=n), midnight).isoformat(),
                "status": "completed",
                "duration_minutes": 5,
            }
            for n in range(3)
        ]
    }
    assert post_over_http(live_server.url, token, batch)[0] == 201
    page.wait_for_function(
        "(n) => { const d = document.querySelector('#activity-chart').data; return d[0].y[d[0].y.length - 1] === n; }",
        arg=before + 3,
        timeout=2000,
    )
    # ... and the summary cards are recomputed and swapped in too.
    page.wait_for_selector("#summary-cards :text('23 sessions')", timeout=2000)
    assert page.console_errors == []


def test_a_new_alert_appears_in_the_header_inbox(page, live_server, therapist_a, patient_a, token):
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.wait_for_selector("#inbox-count:has-text('0')")
    status, _ = post_over_http(
        live_server.url, token, crisis_batch(patient_a.player_id, reason="Crisis phrase in chat")
    )
    assert status == 201
    page.wait_for_selector("#inbox-count:has-text('1')", timeout=3000)
    page.get_by_role("button", name="Alerts").click()
    assert "URGENT · p-a1" in page.locator("#inbox-list").inner_text()
    screenshot(page, "caseload-with-inbox")
