"""Pages. Thin: check access, call a selector, render."""

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_POST

from reports import selectors as report_selectors
from reports import services as report_services
from reports.models import Alert
from tracking import access, live, progress, selectors, services
from tracking.middleware import passive_session
from tracking.models import Recommendation, Role
from tracking.validators import text_error

SEARCH_SESSION_KEY = "caseload_search"


def home(request):
    """The caseload for therapists; the clinic's patient list for clinic admins; a pointer for auditors."""
    if access.has_role(request.user, [Role.THERAPIST]):
        query = selectors.CaseloadQuery.from_params(request.GET, search=request.session.get(SEARCH_SESSION_KEY, ""))
        page = selectors.caseload_page(request.user, query, request.GET.get("page"))
        context = {"page": page, "query": query, "filters": selectors.CaseloadQuery.FILTERS.items()}
        return render(request, "tracking/caseload.html", context)
    if access.has_role(request.user, [Role.CLINIC_ADMIN]):
        page = Paginator(selectors.clinic_patient_rows(request.user), 50).get_page(request.GET.get("page"))
        return render(request, "tracking/clinic_patients.html", {"page": page})
    access.require_role(request.user, [Role.AUDITOR])
    return render(request, "tracking/auditor_home.html")


@login_not_required
def healthz(request):
    """For load balancers and docker health checks: the database answers. No detail is revealed."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok"})


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
    return render(request, "tracking/patient.html", progress.patient_page_read(patient))


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
    services.recommendation_restore(recommendation=recommendation)
    messages.success(request, f"Recommendation “{recommendation.title}” is shown again.")
    return redirect(reverse("patient", args=[player_id]) + "#recommendations")


# ----- live updates (see tracking/live.py) ----------------------------------------------------------


def _event_stream_response(request, patient_id: int | None) -> StreamingHttpResponse:
    stream = live.event_stream(
        patient_id=patient_id,
        clinic_ids=[c for c, r in access.roles_of(request.user).items() if r == Role.THERAPIST],
        session_expires_at=request.session.get_expiry_date(),
    )
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
    patient = access.patient_for_user(request.user, player_id)
    return _event_stream_response(request, patient.pk)


@passive_session
def patient_live_data(request, player_id: str):
    """What an open patient page redraws when its data changed: the activity series and its figure (drawn as it
    is by static/js/charts.js), the cards, the alerts card, the risk flag and the recommendations."""
    from tracking.charts import activity_figure

    patient = access.patient_for_user(request.user, player_id)
    context = progress.patient_live_read(patient)
    parts = {
        "cards_html": "tracking/_summary_cards.html",
        "alerts_html": "tracking/_alerts_card.html",
        "risk_flag_html": "tracking/_risk_flag.html",
        "recommendations_html": "tracking/_recommendations.html",
    }
    html = {key: render_to_string(name, context, request=request) for key, name in parts.items()}
    return JsonResponse({"viz": context["viz"], "activity_figure": activity_figure(context["viz"]), **html})


@passive_session
def live_inbox(request):
    access.require_role(request.user, [Role.THERAPIST])
    return JsonResponse(report_selectors.alert_inbox(request.user))


def alerts_list(request):
    """The therapist's alerts, open ones most severe first, with filters."""
    access.require_role(request.user, [Role.THERAPIST])
    query = report_selectors.AlertQuery.from_params(request.GET)
    page = Paginator(report_selectors.therapist_alerts(request.user, query), 50).get_page(request.GET.get("page"))
    return render(request, "tracking/alerts.html", {"page": page, "query": query, **report_selectors.ALERT_FILTERS})


@require_POST
def alert_acknowledge(request, player_id: str, alert_id: int):
    patient = access.patient_for_user(request.user, player_id)
    alert = get_object_or_404(Alert, pk=alert_id, patient=patient)
    return _acknowledge(request, patient, [alert.pk])


@require_POST
def alerts_acknowledge(request, player_id: str):
    """Several open alerts of one patient, acknowledged together with one note."""
    patient = access.patient_for_user(request.user, player_id)
    ids = [int(v) for v in request.POST.getlist("alert") if v.isascii() and v.isdigit() and len(v) <= 18]
    if not ids:
        messages.error(request, "Select the alerts to acknowledge.")
        return redirect(reverse("patient", args=[player_id]) + "#alerts")
    return _acknowledge(request, patient, ids)


def _acknowledge(request, patient, alert_ids: list[int]):
    try:
        done = report_services.alerts_acknowledge(
            patient=patient, alert_ids=alert_ids, user=request.user, note=request.POST.get("note", "")
        )
    except ValidationError as error:
        messages.error(request, "Note: " + " ".join(error.messages))
    else:
        n = len(done)
        if n == 0:
            messages.info(request, "Already acknowledged: nothing changed.")
        else:
            messages.success(request, "Alert acknowledged." if n == 1 else f"{n} alerts acknowledged.")
    return redirect(reverse("patient", args=[patient.player_id]) + "#alerts")


@require_POST
def risk_flag_clear(request, player_id: str):
    patient = access.patient_for_user(request.user, player_id)
    try:
        report_services.patient_clear_risk_flag(patient=patient, user=request.user, note=request.POST.get("note", ""))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, "Risk flag cleared.")
    return redirect(reverse("patient", args=[player_id]))


# ----- error pages: JSON under /api/, a calm page elsewhere; never any detail of the request ----------


def _error(request, status: int, title: str, message: str):
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=status)
    return render(request, "error.html", {"title": title, "message": message}, status=status)


def not_found(request, exception=None):
    return _error(request, 404, "Not found", "Not found.")


def permission_denied(request, exception=None):
    return _error(request, 403, "Not allowed", "Your role does not give access to this page.")


def server_error(request):
    # No template and no database: this page must render even when those are what failed.
    message = "Something went wrong on our side; it has been logged."
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": message}, status=500)
    return HttpResponse(f"<!doctype html><title>Error</title><h1>Something went wrong</h1><p>{message}</p>", status=500)
