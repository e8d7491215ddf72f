"""The caseload's measurement-based-care filters in headless Chromium (DESIGN §8): "Not on track" lists
exactly the patients the clinic's expected-recovery refresh found not on track (from real scores), "PHQ-9
due" exactly the active patients whose PHQ-9 is due, each row with its mark."""

from datetime import timedelta

import pytest

from reports.expected_recovery import clinic_refresh
from reports.models import MeasureStatus
from tests.browser.conftest import log_in, screenshot
from tests.factories import (
    PASSWORD,
    CareAssignmentFactory,
    OutcomeResponseFactory,
    PatientFactory,
    TherapySessionFactory,
)
from tracking import history, recompute

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _ids(page) -> list[str]:
    return sorted(page.locator("#caseload tbody tr").evaluate_all("rows => rows.map(r => r.dataset.playerId)"))


@pytest.fixture
def measured_caseload(clinic, therapist_a):
    """Eleven patients with a moderately severe first PHQ-9 (16) at week 0, 12 at week 4 and a latest at
    week 8: ten recovered to 8, one still at 17, above the clinic's 75th percentile (8) of eleven patients.
    One patient with a severe first score (22, a band with no reference) still at 20 at week 9: not on
    track without a reference. All of them active, their PHQ-9 given two days ago: not due. And: an active
    patient whose PHQ-9 is 20 days old (due), an active one never given it (due), an inactive one whose
    PHQ-9 is 40 days old (nothing due)."""
    tz = clinic.timezone
    today = history.local_today(tz)

    def at(days_ago):  # midday on a local day, so the local date (and week) is beyond doubt
        return history.local_midnight(today - timedelta(days=days_ago), tz) + timedelta(hours=12)

    def patient(player_id, *, session_days_ago=1, phq9=()):
        p = PatientFactory(clinic=clinic, player_id=player_id)
        CareAssignmentFactory(patient=p, therapist=therapist_a)
        TherapySessionFactory(patient=p, started_at=at(session_days_ago))
        for days_ago, total in phq9:
            OutcomeResponseFactory(patient=p, instrument="phq9", total=total, administered_at=at(days_ago))
        recompute.patient_recompute(p.pk)  # the engagement columns, as the page normally has them
        return p

    for n in range(10):
        patient(f"rec-{n:02d}", phq9=((58, 16), (30, 12), (2, 8)))
    patient("stuck-ref", phq9=((58, 16), (30, 16), (2, 17)))
    patient("stuck-flat", phq9=((65, 22), (35, 21), (2, 20)))
    patient("due-old", phq9=((20, 11),))
    patient("due-never")
    patient("inactive", session_days_ago=35, phq9=((40, 14),))
    clinic_refresh(clinic.pk)
    return clinic


def test_not_on_track_and_phq9_due_filters_list_exactly_the_seeded_patients(
    page, live_server, therapist_a, measured_caseload
):
    off_track = MeasureStatus.objects.filter(not_on_track=True)
    assert sorted(off_track.values_list("patient__player_id", "basis")) == [
        ("stuck-flat", "no_reliable_improvement"),
        ("stuck-ref", "clinic_reference"),
    ]
    log_in(page, live_server, therapist_a.username, PASSWORD)
    page.wait_for_selector("#caseload")
    assert len(_ids(page)) == 15

    page.get_by_role("button", name="Not on track").click()
    page.wait_for_url("**filter=not_on_track")
    assert _ids(page) == ["stuck-flat", "stuck-ref"]
    marks = page.locator("[data-mark=not-on-track]")
    assert marks.count() == 2 and all(marks.nth(i).is_visible() for i in range(2))
    reference = page.locator("tr[data-player-id=stuck-ref] [data-mark=not-on-track]")
    assert reference.get_attribute("title") == (
        "PHQ-9 not on track. Week 8: 17 is above the clinic's 75th percentile 8 (11 patients, 11 scores)."
    )
    flat = page.locator("tr[data-player-id=stuck-flat] [data-mark=not-on-track]")
    assert "Week 9: 20 is still at caseness (10 or more), with no reliable improvement" in flat.get_attribute("title")
    reference.hover()
    screenshot(page, "caseload-not-on-track")

    page.get_by_role("link", name="Clear filters").click()
    page.wait_for_selector("#caseload")
    page.get_by_role("button", name="PHQ-9 due").click()
    page.wait_for_url("**filter=phq9_due")
    assert _ids(page) == ["due-never", "due-old"]
    for player_id in ("due-never", "due-old"):
        mark = page.locator(f"tr[data-player-id={player_id}] td[data-col=phq9] [data-mark=due]")
        assert mark.is_visible() and mark.inner_text().startswith("PHQ-9 due")
    since = (history.local_today(measured_caseload.timezone) - timedelta(days=6)).isoformat()
    old = page.locator("tr[data-player-id=due-old] td[data-col=phq9] [data-mark=due]")
    assert old.get_attribute("title").startswith(f"PHQ-9 due since {since}: last given ")
    screenshot(page, "caseload-phq9-due")

    # both filters together: nobody is due and not on track
    page.get_by_role("button", name="Not on track").click()
    page.wait_for_url("**filter=not_on_track**")
    assert page.get_by_text("No patient matches.").is_visible()

    page.set_viewport_size({"width": 820, "height": 900})
    page.goto(f"{live_server.url}/?filter=not_on_track")
    page.wait_for_selector("#caseload")
    assert _ids(page) == ["stuck-flat", "stuck-ref"]
    screenshot(page, "caseload-not-on-track-820")
    assert page.console_errors == []
