"""Personas and shared fixtures. Tests run against PostgreSQL and Redis (see scripts/test)."""

import pytest
from django.core.cache import cache
from django.test import Client

from tests.factories import (
    CareAssignmentFactory,
    ClinicFactory,
    MembershipFactory,
    PatientFactory,
)
from tests.smtp import SMTPServer
from tracking.models import Role
from tracking.services import ingest_token_create


@pytest.fixture
def smtp():
    """A real SMTP server (tests/smtp.py) on a loopback port, for processes the test starts (smtp_env)."""
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _empty_cache():
    """Each test starts with an empty cache (Redis db of the test run): no state leaks between tests."""
    cache.clear()


@pytest.fixture
def clinic(db):
    return ClinicFactory(slug="northside", name="Northside", timezone="Europe/London")


@pytest.fixture
def other_clinic(db):
    return ClinicFactory(slug="riverside", name="Riverside", timezone="America/New_York")


def _member(clinic, role, username):
    return MembershipFactory(clinic=clinic, role=role, user__username=username).user


@pytest.fixture
def therapist_a(clinic):
    return _member(clinic, Role.THERAPIST, "therapist.a")


@pytest.fixture
def therapist_b(clinic):
    return _member(clinic, Role.THERAPIST, "therapist.b")


@pytest.fixture
def clinic_admin(clinic):
    return _member(clinic, Role.CLINIC_ADMIN, "admin.north")


@pytest.fixture
def auditor(clinic):
    return _member(clinic, Role.AUDITOR, "auditor.north")


@pytest.fixture
def foreign_therapist(other_clinic):
    return _member(other_clinic, Role.THERAPIST, "therapist.river")


@pytest.fixture
def patient_a(clinic, therapist_a):
    """A patient of therapist A."""
    return CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id="p-a1"), therapist=therapist_a).patient


@pytest.fixture
def patients_a(clinic, therapist_a, patient_a):
    more = [
        CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id=f"p-a{n}"), therapist=therapist_a).patient
        for n in (2, 3)
    ]
    return [patient_a, *more]


@pytest.fixture
def patient_b(clinic, therapist_b):
    """A patient of therapist B, same clinic."""
    return CareAssignmentFactory(patient=PatientFactory(clinic=clinic, player_id="p-b1"), therapist=therapist_b).patient


@pytest.fixture
def foreign_patient(other_clinic, foreign_therapist):
    return CareAssignmentFactory(
        patient=PatientFactory(clinic=other_clinic, player_id="p-r1"), therapist=foreign_therapist
    ).patient


@pytest.fixture
def token(clinic):
    return ingest_token_create(clinic=clinic, name="game")[1]


@pytest.fixture
def other_token(other_clinic):
    return ingest_token_create(clinic=other_clinic, name="game")[1]


@pytest.fixture
def api(token):
    """A client that speaks to the API with the clinic's ingest token."""
    return Client(headers={"Authorization": f"Bearer {token}"})


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def personas(
    db, therapist_a, therapist_b, clinic_admin, auditor, foreign_therapist, patient_a, patient_b, foreign_patient
):
    """Every persona by name: a logged-in Client, or an anonymous one."""
    return {
        "anonymous": Client(),
        "therapist_a": logged_in(therapist_a),
        "therapist_b": logged_in(therapist_b),
        "clinic_admin": logged_in(clinic_admin),
        "auditor": logged_in(auditor),
        "foreign_therapist": logged_in(foreign_therapist),
    }
