"""Django admin is the operators' tool (issue 12 item 4): superusers only, no clinical free text, and the
risk flag and alert acknowledgement read-only there."""

import pytest
from django.utils import timezone

from reports.models import Alert
from tests.conftest import logged_in
from tests.factories import UserFactory
from tracking.models import Patient, ProgressMarker, TherapySession

pytestmark = pytest.mark.django_db
CANARY = "canary-free-text-4417"


@pytest.fixture
def operator(db):
    return logged_in(UserFactory(username="operator", is_staff=True, is_superuser=True))


def test_only_superusers_reach_django_admin(clinic_admin):
    staff = UserFactory(username="staff.member", is_staff=True)
    for user in (staff, clinic_admin):
        response = logged_in(user).get("/admin/")
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
        assert logged_in(user).get("/admin/login/?next=/admin/").status_code == 403
    assert logged_in(staff).get("/admin/tracking/patient/").status_code == 302


def test_admin_shows_no_clinical_free_text_and_the_flag_and_acknowledgement_are_read_only(operator, patient_a):
    now = timezone.now()
    Patient.objects.filter(pk=patient_a.pk).update(risk_flag=True, risk_flag_clear_note=CANARY + "-flag")
    alert = Alert.objects.create(
        clinic=patient_a.clinic, patient=patient_a, kind="crisis", severity="urgent", reason=CANARY + "-reason",
        occurred_at=now, note=CANARY + "-note",
    )  # fmt: skip
    session = TherapySession.objects.create(
        clinic=patient_a.clinic,
        patient=patient_a,
        session_id="s-1",
        started_at=now,
        status="completed",
        key_achievements=[CANARY + "-ach"],
    )
    marker = ProgressMarker.objects.create(
        clinic=patient_a.clinic, patient=patient_a, session=session, marker_id="m-1", type="skill_acquired",
        description=CANARY + "-desc", achieved_at=now, therapeutic_value=0.5,
    )  # fmt: skip
    pages = {
        "patient": operator.get(f"/admin/tracking/patient/{patient_a.pk}/change/"),
        "alert": operator.get(f"/admin/reports/alert/{alert.pk}/change/"),
        "session": operator.get(f"/admin/tracking/therapysession/{session.pk}/change/"),
        "marker": operator.get(f"/admin/tracking/progressmarker/{marker.pk}/change/"),
    }
    for name, response in pages.items():
        assert response.status_code == 200, name
        assert CANARY not in response.content.decode(), name
    patient_form = pages["patient"].content.decode()
    assert 'name="risk_flag"' not in patient_form and "Risk flag" in patient_form  # shown, not editable
    alert_form = pages["alert"].content.decode()
    assert 'name="acknowledged_at_0"' not in alert_form and 'name="acknowledged_by"' not in alert_form
