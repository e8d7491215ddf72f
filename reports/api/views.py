"""Outcome reads for the game server (its clinic's token) and for the patient's therapists."""

import dataclasses

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from reports import selectors
from reports.api.serializers import (
    AlertOutSerializer,
    EffectivenessSerializer,
    MeasuresDueSerializer,
    OutcomeScoreSerializer,
)
from tracking import access
from tracking.api.errors import ERRORS
from tracking.api.errors import READ_ERRORS as PATIENT_READ_ERRORS  # with 400, as before the move

READ_ERRORS = {code: ERRORS[code] for code in (401, 403, 404)}


class PatientOutcomesView(APIView):
    @extend_schema(
        responses={200: OutcomeScoreSerializer(many=True), **READ_ERRORS},
        summary="A patient's PHQ-9 and GAD-7 scores, oldest first, with their bands",
    )
    def get(self, request, player_id: str):
        patient = access.patient_for_request(request, player_id)
        response = Response(OutcomeScoreSerializer(selectors.outcome_scores_for_patient(patient), many=True).data)
        access.audit_read(request.user, [patient])
        return response


class PatientEffectivenessView(APIView):
    @extend_schema(
        responses={200: EffectivenessSerializer, **READ_ERRORS},
        summary="A patient's NHS Talking Therapies outcome classification (DESIGN §5)",
        description="The same object as one element of `patients` in `manage.py effectiveness_report`.",
    )
    def get(self, request, player_id: str):
        patient = access.patient_for_request(request, player_id)
        response = Response(selectors.patient_effectiveness(patient))
        access.audit_read(request.user, [patient])
        return response


class PatientAlertsView(APIView):
    @extend_schema(responses={200: AlertOutSerializer(many=True), **PATIENT_READ_ERRORS})
    def get(self, request, player_id: str):
        patient = access.patient_for_request(request, player_id)
        response = Response(AlertOutSerializer(selectors.alerts_for_patient(patient), many=True).data)
        access.audit_read(request.user, [patient])
        return response


class PatientMeasuresDueView(APIView):
    @extend_schema(
        responses={200: MeasuresDueSerializer, **READ_ERRORS},
        summary="The questionnaires due for a patient (DESIGN §8), so the game can offer them in play",
        description=(
            "A measure is due for an active patient (a session in the 30 local days ending today) when it "
            "was never given, or when today is on or after its last local date + the clinic's interval."
        ),
    )
    def get(self, request, player_id: str):
        patient = access.patient_for_request(request, player_id)
        due = [dataclasses.asdict(measure) for measure in selectors.measures_due(patient)]
        response = Response(MeasuresDueSerializer({"due": due}).data)
        access.audit_read(request.user, [patient])
        return response


FHIR_JSON = "application/fhir+json"


class PatientFhirView(APIView):
    @extend_schema(
        responses={(200, FHIR_JSON): OpenApiTypes.OBJECT, **READ_ERRORS},
        summary="A patient's questionnaire data as a FHIR R4 Bundle (DESIGN §8)",
        description=(
            "A Bundle of type `collection`: the Patient (identifier system `SITE_URL/clinics/<slug>/players`), "
            "and per response a QuestionnaireResponse (LOINC questionnaire) and an Observation of its total "
            "derived from it."
        ),
    )
    def get(self, request, player_id: str):
        patient = access.patient_for_request(request, player_id)
        response = Response(selectors.fhir_bundle(patient, settings.SITE_URL), content_type=FHIR_JSON)
        access.audit_read(request.user, [patient])
        return response
