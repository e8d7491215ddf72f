"""Pages of the outcome reports and of alerts. Thin: check access, read the form, call a selector or a
service, render or redirect."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from reports import alerts, selectors
from reports.exports import aggregate_csv_rows, caseload_csv_rows, csv_text
from reports.forms import ClinicPeriodForm, PeriodForm
from reports.models import Alert
from tracking import access
from tracking.models import AuditAction, Role

THERAPISTS = [Role.THERAPIST]
CLINIC_ADMINS = [Role.CLINIC_ADMIN]


def patient_outcomes(request, player_id: str):
    patient = access.patient_for_user(request.user, player_id)
    response = render(
        request,
        "reports/patient_outcomes.html",
        {"patient": patient, "series": selectors.patient_outcome_series(patient)},
    )
    access.audit_read(request.user, [patient])
    return response


# ----- alerts -------------------------------------------------------------------------------------


def alerts_list(request):
    """The therapist's alerts, open ones most severe first, with filters."""
    access.require_role(request.user, [Role.THERAPIST])
    query = selectors.AlertQuery.from_params(request.GET)
    page = Paginator(selectors.therapist_alerts(request.user, query), 50).get_page(request.GET.get("page"))
    response = render(request, "tracking/alerts.html", {"page": page, "query": query, **selectors.ALERT_FILTERS})
    shown = list({alert.patient_id: alert.patient for alert in page.object_list}.values())
    access.audit_read(request.user, shown, action=AuditAction.CASELOAD_READ)
    return response


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
        done = alerts.alerts_acknowledge(
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
        alerts.patient_clear_risk_flag(patient=patient, user=request.user, note=request.POST.get("note", ""))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, "Risk flag cleared.")
    return redirect(reverse("patient", args=[player_id]))


# ----- a therapist's caseload ---------------------------------------------------------------------


def _caseload(request) -> dict:
    access.require_role(request.user, THERAPISTS)
    form = PeriodForm(request.GET)
    period = form.period()
    report = selectors.caseload_report(request.user, period) if period is not None else None
    return {"form": form, "report": report, "filter_query": _filter_query(form)}


def caseload_outcomes(request):
    context = _caseload(request)
    response = render(request, "reports/caseload_outcomes.html", context, status=_status(context))
    _audit_caseload_report(request, context, AuditAction.CASELOAD_READ, "page")
    return response


def caseload_outcomes_print(request):
    context = _caseload(request)
    response = render(request, "reports/caseload_print.html", context, status=_status(context))
    _audit_caseload_report(request, context, AuditAction.EXPORT, "print")
    return response


def caseload_outcomes_export(request):
    context = _caseload(request)
    if context["report"] is None:
        return HttpResponseBadRequest("Invalid date range.", content_type="text/plain")
    response = _csv_response(caseload_csv_rows(context["report"]), "outcomes-caseload", context["report"])
    _audit_caseload_report(request, context, AuditAction.EXPORT, "csv")
    return response


def _audit_caseload_report(request, context: dict, action: str, format: str) -> None:  # noqa: A002
    """The caseload report names every patient of the caseload (a row each): they are its patients. An
    invalid period (400) returned no report, and nothing is recorded."""
    report = context["report"]
    if report is None:
        return
    shown = access.caseload_patients(request.user, [row["player_id"] for row in report["rows"]])
    detail = {"report": "caseload", "format": format, "from": report["period"]["from"], "to": report["period"]["to"]}
    access.audit_read(request.user, shown, action=action, detail=detail)


# ----- a clinic (aggregates only) -----------------------------------------------------------------


def _clinic(request) -> dict:
    access.require_role(request.user, CLINIC_ADMINS)
    form = ClinicPeriodForm(request.GET, clinics=list(access.clinics_with_role(request.user, Role.CLINIC_ADMIN)))
    period, clinic = form.period(), form.selected_clinic()
    report = selectors.clinic_report(clinic, period) if period is not None else None
    return {"form": form, "clinic": clinic, "report": report, "filter_query": _filter_query(form)}


def clinic_report(request):
    context = _clinic(request)
    return render(request, "reports/clinic_report.html", context, status=_status(context))


def clinic_report_print(request):
    context = _clinic(request)
    response = render(request, "reports/clinic_print.html", context, status=_status(context))
    _audit_clinic_report(request, context, "print")
    return response


def clinic_report_export(request):
    context = _clinic(request)
    if context["report"] is None:
        return HttpResponseBadRequest("Invalid date range.", content_type="text/plain")
    response = _csv_response(
        aggregate_csv_rows(context["report"]), f"outcomes-{context['clinic'].slug}", context["report"]
    )
    _audit_clinic_report(request, context, "csv")
    return response


def _audit_clinic_report(request, context: dict, format: str) -> None:  # noqa: A002
    """The clinic report holds aggregates only, no patient: its exports (CSV, print) are recorded as
    `export` with an empty patient list, in the clinic's chain. The on-screen report is not recorded
    (it returns no patient data and nothing leaves the dashboard)."""
    report = context["report"]
    if report is None:
        return
    detail = {
        "report": "clinic",
        "format": format,
        "from": report["period"]["from"],
        "to": report["period"]["to"],
        "patients_in_scope": report["n_in_scope"],
    }
    access.audit_read(request.user, [], action=AuditAction.EXPORT, clinic=context["clinic"], detail=detail)


# ----- helpers ------------------------------------------------------------------------------------


def _status(context: dict) -> int:
    return 200 if context["report"] is not None else 400


def _filter_query(form: PeriodForm) -> str:
    """The filter as a query string for the export and print links (dates and clinic slug only)."""
    if not form.is_valid():
        return ""
    values = {k: v for k, v in form.cleaned_data.items() if v}
    return "?" + urlencode(values) if values else ""


def _csv_response(rows, name: str, report: dict) -> HttpResponse:
    period = report["period"]
    span = f"{period['from'] or 'start'}-to-{period['to'] or 'now'}" if period["from"] or period["to"] else "all-time"
    response = HttpResponse(csv_text(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{span}.csv"'
    response["Cache-Control"] = "no-store"
    return response
