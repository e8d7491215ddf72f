"""The HTTP API: ingest for the game server, reads for the game server and for staff."""

from django.conf import settings
from django.db import IntegrityError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from tracking import access, metrics, read_models, services
from tracking.api.errors import ERRORS, READ_ERRORS, BatchInvalid, Conflict, ErrorSerializer, PayloadTooLarge
from tracking.api.serializers import IngestResultSerializer
from tracking.ingest import IngestBatchSerializer, IngestRejected, batch_validate, ingest_batch
from tracking.models import IngestToken


class HasIngestToken(permissions.BasePermission):
    message = "This endpoint takes a clinic's ingest token."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, IngestToken)


class IngestView(APIView):
    permission_classes = [HasIngestToken]

    @extend_schema(
        request=IngestBatchSerializer,
        responses={
            200: IngestResultSerializer,
            201: IngestResultSerializer,
            400: ERRORS[400],
            401: ERRORS[401],
            403: ERRORS[403],
            409: OpenApiResponse(ErrorSerializer, description="A concurrent write conflicted; retry the batch."),
            413: OpenApiResponse(ErrorSerializer, description="Body larger than the cap."),
            503: ERRORS[503],
        },
        summary="Post a batch of sessions, markers, outcomes and crisis signals",
        description="All-or-nothing and idempotent by external id. 201 when something was created, else 200.",
    )
    @metrics.INGEST_SECONDS.time()
    def post(self, request):
        try:
            items = batch_validate(request.data, max_items=settings.INGEST_MAX_ITEMS)
            result = ingest_batch(clinic=request.auth.clinic, items=items, token_name=request.auth.name)
        except IngestRejected as rejected:
            metrics.ingest_refused(request.data, rejected.errors)
            raise BatchInvalid(rejected.errors) from None
        except IntegrityError:
            # Two concurrent batches gave the same new external id to different players.
            raise Conflict() from None
        metrics.ingest_stored(result.as_dict())  # committed: ingest_batch's transaction is the outermost
        code = status.HTTP_201_CREATED if result.created_any else status.HTTP_200_OK
        return Response(result.as_dict(), status=code)

    def initial(self, request, *args, **kwargs):
        # Checked before the body is parsed, so a huge body is refused without reading it.
        if int(request.META.get("CONTENT_LENGTH") or 0) > settings.INGEST_MAX_BODY_BYTES:
            self.perform_authentication(request)
            raise PayloadTooLarge(f"Request body is larger than {settings.INGEST_MAX_BODY_BYTES} bytes.")
        super().initial(request, *args, **kwargs)


PROGRESS_DOC = "The stored summary of DESIGN §4 with `explanations` (the terms and inputs behind each score)."


class PatientProgressView(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT, **READ_ERRORS}, description=PROGRESS_DOC)
    def get(self, request, player_id: str):
        patient = access.patient_for_request(request, player_id)
        response = Response(read_models.progress_read_or_recompute(patient, "progress"))
        access.audit_read(request.user, [patient])
        return response


class PatientMilestonesView(APIView):
    @extend_schema(
        responses={200: OpenApiTypes.OBJECT, **READ_ERRORS},
        description="`milestones` achieved (stored once, with the moment the threshold was crossed), "
        "`in_progress` (the next threshold of each family, with a percentage) and `highlights`.",
    )
    def get(self, request, player_id: str):
        patient = access.patient_for_request(request, player_id)
        response = Response(read_models.progress_read_or_recompute(patient, "milestones"))
        access.audit_read(request.user, [patient])
        return response


class PatientInsightsView(APIView):
    @extend_schema(
        responses={200: OpenApiTypes.OBJECT, **READ_ERRORS},
        description="`recommendations` that apply now and were not dismissed, each with its `reasoning`.",
    )
    def get(self, request, player_id: str):
        patient = access.patient_for_request(request, player_id)
        response = Response(read_models.progress_read_or_recompute(patient, "insights"))
        access.audit_read(request.user, [patient])
        return response


class VizQuerySerializer(serializers.Serializer):
    days = serializers.IntegerField(
        required=False,
        default=14,
        min_value=1,
        max_value=90,
        error_messages={
            "min_value": "days must be between 1 and 90.",
            "max_value": "days must be between 1 and 90.",
            "invalid": "days must be a whole number between 1 and 90.",
        },
    )


class PatientVizView(APIView):
    @extend_schema(
        parameters=[VizQuerySerializer],
        responses={200: OpenApiTypes.OBJECT, **READ_ERRORS},
        description="ProgressVizSeries: `days` patient-local daily buckets ending today (1–90, default 14).",
    )
    def get(self, request, player_id: str):
        patient = access.patient_for_request(request, player_id)
        query = VizQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        response = Response(read_models.patient_viz_read(patient, query.validated_data["days"]))
        access.audit_read(request.user, [patient])
        return response


class HighlightCelebratedView(APIView):
    @extend_schema(request=None, responses={200: OpenApiTypes.OBJECT, **READ_ERRORS})
    def post(self, request, player_id: str, highlight_id: int):
        patient = access.patient_for_request(request, player_id)
        highlight = services.highlight_mark_celebrated(patient=patient, highlight_id=highlight_id)
        return Response({"id": highlight.pk, "celebration_shown": True, "celebrated_at": highlight.celebrated_at})
