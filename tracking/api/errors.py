"""Every API error is a JSON body with a `detail` message; validation errors add an `errors` list that
names each bad item, field and reason."""

from django.core.exceptions import PermissionDenied
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from tracking.unavailable import API_DETAIL, RETRY_AFTER_SECONDS, database_unreachable, log_unreachable


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


class BatchInvalid(exceptions.APIException):
    """A batch with at least one invalid item: nothing of it was stored."""

    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid"

    def __init__(self, errors: list[dict]):
        self.errors = errors
        noun = "item" if len({(e.get("kind"), e.get("index")) for e in errors}) == 1 else "items"
        super().__init__(
            f"The batch was rejected and nothing was stored: {len(errors)} problem(s) in the {noun} listed."
        )


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A concurrent write conflicted with this batch; nothing was stored. Retry it."
    default_code = "conflict"


def unavailable_response() -> Response:
    response = Response(
        {"detail": API_DETAIL},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )
    # Logged once, as a warning with the exception's type only: not again by django.request with the path.
    response._has_been_logged = True
    return response


def exception_handler(exc, context):
    if database_unreachable(exc):
        log_unreachable(exc, "an API request")
        return unavailable_response()
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, BatchInvalid):
        response.data = {"detail": str(exc.detail), "errors": exc.errors}
    elif isinstance(exc, exceptions.ValidationError):
        response.data = {"detail": "Invalid request.", "errors": _flatten(exc.detail)}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"detail": str(response.data["detail"])}
    return response


def _flatten(detail, field: str = "") -> list[dict]:
    if isinstance(detail, dict):
        return [e for key, value in detail.items() for e in _flatten(value, f"{field}.{key}" if field else key)]
    if isinstance(detail, list):
        return [{"field": field or "non_field_errors", "reason": str(message)} for message in detail]
    return [{"field": field or "non_field_errors", "reason": str(detail)}]


class ErrorItemSerializer(serializers.Serializer):
    kind = serializers.CharField(required=False, help_text="sessions, markers, outcomes or alerts")
    index = serializers.IntegerField(required=False, help_text="position of the item in its list, from 0")
    item_id = serializers.CharField(required=False, help_text="the item's external id, when it has one")
    field = serializers.CharField()
    reason = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = ErrorItemSerializer(many=True, required=False)


def error_response(status_code: int, detail: str) -> Response:
    return Response({"detail": detail}, status=status_code)


# The documented error answers of every API operation (the schema lists each status an operation may give).
ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid request; `errors` names each bad item and field."),
    401: OpenApiResponse(ErrorSerializer, description="Missing, wrong or revoked credentials."),
    403: OpenApiResponse(ErrorSerializer, description="Authenticated, but not allowed."),
    404: OpenApiResponse(ErrorSerializer, description="No such patient (or not yours to see)."),
    503: OpenApiResponse(
        ErrorSerializer, description="The database is briefly unreachable: retry after the seconds in Retry-After."
    ),
}
READ_ERRORS = {k: ERRORS[k] for k in (400, 401, 403, 404)}
