"""Pages. Thin: check access, call a selector, render."""

import logging
import sys

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST

from reports import selectors as report_selectors
from tracking import access, live, read_models, selectors, services, unavailable
from tracking.charts import activity_figure
from tracking.middleware import passive_session
from tracking.models import AuditAction, Recommendation, Role
from tracking.validators import text_error

SEARCH_SESSION_KEY = "caseload_search"
logger = logging.getLogger(__name__)


def home(request):
    """The caseload for therapists; the clinic's patient list for clinic admins; the audit console for auditors."""
    if access.has_role(request.user, [Role.THERAPIST]):
        query = selectors.CaseloadQuery.from_params(request.GET, search=request.session.get(SEARCH_SESSION_KEY, ""))
        page = selectors.caseload_page(request.user, query, request.GET.get("page"))
        context = {"page": page, "query": query, "filters": selectors.CaseloadQuery.FILTERS.items()}
        response = render(request, "tracking/caseload.html", context)
        access.audit_read(request.user, page.object_list, action=AuditAction.CASELOAD_READ)
        return response
    if access.has_role(request.user, [Role.CLINIC_ADMIN]):
        page = Paginator(selectors.clinic_patient_rows(request.user), 50).get_page(request.GET.get("page"))
        response = render(request, "tracking/clinic_patients.html", {"page": page})
        # Identifiers and assignment only, but which patients a clinic has is itself patient data.
        access.audit_read(request.user, page.object_list, action=AuditAction.CASELOAD_READ)
        return response
    access.require_role(request.user, [Role.AUDITOR])
    return redirect("audit")


@login_not_required
def healthz(request):
    """For load balancers and docker health checks: the database answers. No detail is revealed."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


@login_not_required
def readyz(request):
    """Readiness, for a load balancer or an orchestrator: the database and Redis (the cache) both answer. A
    failed dependency is named, never described (no host, no message): 503 with Retry-After."""
    failed = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        failed.append("database")
    try:
        cache.get("readyz")
    except Exception:  # the Redis client's connection errors, whatever their class
        failed.append("redis")
    if not failed:
        return JsonResponse({"status": "ready"})
    logger.warning("not ready: %s", ", ".join(failed))
    response = JsonResponse({"status": "unavailable", "failed": failed}, status=503)
    response["Retry-After"] = str(unavailable.RETRY_AFTER_SECONDS)
    response._has_been_logged = True  # the warning above is the log line
    return response


@require_POST
def caseload_search(request):
    """Keeps the search term in the session, so player ids never appear in a URL's query string."""
    access.require_role(request.user, [Role.THERAPIST])
    term = "" if request.POST.get("clear") else request.POST.get("q", "").strip()[:128]
    problem = text_error(term)
    if problem:
        messages.error(request, f"Search: {problem}")
        term = ""
    request.session[SEARCH_SESSION_KEY] = term
    return redirect("caseload")


def patient_detail(request, player_id: str):
    patient = access.patient_for_user(request.user, player_id)
    response = render(request, "tracking/patient.html", read_models.patient_page_or_recompute(patient))
    access.audit_read(request.user, [patient])
    return response


@require_POST
def recommendation_dismiss(request, player_id: str, recommendation_id: int):
    patient = access.patient_for_user(request.user, player_id)
    recommendation = get_object_or_404(Recommendation, pk=recommendation_id, patient=patient)
    services.recommendation_dismiss(recommendation=recommendation, user=request.user)
    messages.success(request, f"Recommendation “{recommendation.title}” dismissed. Undo it below.")
    return redirect(reverse("patient", args=[player_id]) + "#recommendations")


@require_POST
def recommendation_restore(request, player_id: str, recommendation_id: int):
    """Undo of a dismissal."""
    patient = access.patient_for_user(request.user, player_id)
    recommendation = get_object_or_404(Recommendation, pk=recommendation_id, patient=patient)
    services.recommendation_restore(recommendation=recommendation, user=request.user)
    messages.success(request, f"Recommendation “{recommendation.title}” is shown again.")
    return redirect(reverse("patient", args=[player_id]) + "#recommendations")


# ----- live updates (see tracking/live.py) ----------------------------------------------------------


def _event_stream_response(request, patient_id: int | None) -> StreamingHttpResponse:
    arguments = {
        "patient_id": patient_id,
        "clinic_ids": [c for c, r in access.roles_of(request.user).items() if r == Role.THERAPIST],
        "session_expires_at": request.session.get_expiry_date(),
    }
    # Django buffers a sync iterator whole under ASGI, and an async one whole under WSGI: under ASGI (the
    # deployed uvicorn workers) the async stream, which holds no thread; under WSGI (runserver, the browser
    # tests' live server) the generator, which holds its thread.
    is_asgi = isinstance(request, ASGIRequest)
    stream = live.aevent_stream(**arguments) if is_asgi else live.event_stream(**arguments)
    # The stream reads only the cache: give the database connection back rather than hold it for a minute
    # (not inside a transaction, which only a test wraps a request in).
    if not connection.in_atomic_block:
        connection.close()
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # let a reverse proxy pass events through at once
    return response


@passive_session
def live_events(request):
    """The event stream of pages without a patient: the header's alert inbox only."""
    access.require_role(request.user, [Role.THERAPIST])
    return _event_stream_response(request, None)


@passive_session
def patient_live(request, player_id: str):
    # Not an audited read: the stream carries only "changed" pings, never patient data (what changed is
    # then fetched from live.json, which is). A denied attempt is recorded by the access check.
    patient = access.patient_for_user(request.user, player_id)
    return _event_stream_response(request, patient.pk)


@passive_session
def patient_live_data(request, player_id: str):
    """What an open patient page redraws when its data changed: the activity series and its figure (drawn as it
    is by static/js/charts.js), the cards, the alerts card, the risk flag and the recommendations."""
    patient = access.patient_for_user(request.user, player_id)
    context = read_models.patient_live_or_recompute(patient)
    parts = {
        "cards_html": "tracking/_summary_cards.html",
        "alerts_html": "tracking/_alerts_card.html",
        "risk_flag_html": "tracking/_risk_flag.html",
        "recommendations_html": "tracking/_recommendations.html",
    }
    html = {key: render_to_string(name, context, request=request) for key, name in parts.items()}
    response = JsonResponse({"viz": context["viz"], "activity_figure": activity_figure(context["viz"]), **html})
    access.audit_read(request.user, [patient])
    return response


@passive_session
def live_inbox(request):
    """The header inbox. It names the patients of the latest open alerts (with kind and severity), so it
    is a read of their data: recorded as `caseload.read` naming them."""
    access.require_role(request.user, [Role.THERAPIST])
    inbox = report_selectors.alert_inbox(request.user)
    named = access.caseload_patients(request.user, [row["player_id"] for row in inbox["latest"]])
    access.audit_read(request.user, named, action=AuditAction.CASELOAD_READ)
    return JsonResponse(inbox)


# ----- error pages: JSON under /api/, a calm page elsewhere; never any detail of the request ----------


def _error(request, status: int, title: str, message: str):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=status)
    return render(request, "error.html", {"title": title, "message": message}, status=status)


def not_found(request, exception=None):
    return _error(request, 404, "Not found", "Not found.")


def permission_denied(request, exception=None):
    return _error(request, 403, "Not allowed", "Your role does not give access to this page.")


UNAVAILABLE_MESSAGE = "The dashboard is briefly unavailable. Please try again in a few seconds."


def server_error(request):
    # No template and no database: this page must render even when those are what failed.
    error = sys.exc_info()[1]
    if unavailable.database_unreachable(error):
        return _unavailable(request, error)
    message = "Something went wrong on our side; it has been logged."
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=500)
    return HttpResponse(f"<!doctype html><title>Error</title><h1>Something went wrong</h1><p>{message}</p>", status=500)


def _unavailable(request, error):
    """The database is unreachable (a middleware's session or user lookup, or the view): 503 with Retry-After,
    JSON under /api/, the product's error page elsewhere, drawn without the request (whose context processors
    read the database), and logged once as a warning naming the exception's type."""
    unavailable.log_unreachable(error, "an API request" if request.path.startswith("/api/") else "a page")
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": unavailable.API_DETAIL}, status=503)
    else:
        try:
            html = render_to_string("error.html", {"title": "Briefly unavailable", "message": UNAVAILABLE_MESSAGE})
        except Exception:  # the page must answer whatever else is wrong
            html = f"<!doctype html><title>Unavailable</title><h1>Briefly unavailable</h1><p>{UNAVAILABLE_MESSAGE}</p>"
        response = HttpResponse(html, status=503)
    response["Retry-After"] = str(unavailable.RETRY_AFTER_SECONDS)
    response._has_been_logged = True  # logged above as a warning, not again as django.request's error
    return response
