"""factory_boy factories for the domain."""

from datetime import UTC, datetime, timedelta

import factory
from django.contrib.auth import get_user_model

from reports.models import OutcomeResponse
from tracking.models import CareAssignment, Clinic, Membership, Patient, ProgressMarker, Role, TherapySession

PASSWORD = "correct-horse-battery-staple"


class ClinicFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Clinic

    name = factory.Sequence(lambda n: f"Clinic {n}")
    slug = factory.Sequence(lambda n: f"clinic-{n}")
    timezone = "Europe/London"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    clinic = factory.SubFactory(ClinicFactory)
    role = Role.THERAPIST


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    clinic = factory.SubFactory(ClinicFactory)
    player_id = factory.Sequence(lambda n: f"player-{n:04d}")


class CareAssignmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CareAssignment

    patient = factory.SubFactory(PatientFactory)
    therapist = factory.SubFactory(UserFactory)


class TherapySessionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TherapySession

    patient = factory.SubFactory(PatientFactory)
    clinic = factory.SelfAttribute("patient.clinic")
    session_id = factory.Sequence(lambda n: f"s-{n}")
    started_at = factory.Sequence(lambda n: datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(hours=n))
    ended_at = factory.LazyAttribute(lambda o: o.started_at + timedelta(minutes=20))
    status = "completed"
    duration_minutes = 20.0
    approaches = factory.LazyFunction(lambda: ["mindfulness"])


class ProgressMarkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProgressMarker

    session = factory.SubFactory(TherapySessionFactory)
    patient = factory.SelfAttribute("session.patient")
    clinic = factory.SelfAttribute("session.clinic")
    marker_id = factory.Sequence(lambda n: f"m-{n}")
    type = "skill_acquired"
    achieved_at = factory.LazyAttribute(lambda o: o.session.started_at + timedelta(minutes=5))
    therapeutic_value = 0.5


class OutcomeResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = OutcomeResponse

    patient = factory.SubFactory(PatientFactory)
    clinic = factory.SelfAttribute("patient.clinic")
    response_id = factory.Sequence(lambda n: f"r-{n}")
    instrument = "phq9"
    administered_at = datetime(2026, 1, 1, 12, tzinfo=UTC)
    total = 12
