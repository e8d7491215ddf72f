"""Pages of the outcome reports. Thin: check access, read the filter, call a selector, render."""

from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils.http import urlencode

from reports import selectors
from reports.exports import aggregate_csv_rows, caseload_csv_rows, csv_text
from reports.forms import ClinicPeriodForm, PeriodForm
from tracking import access
from tracking.models import Role

THERAPISTS = [Role.THERAPIST]
CLINIC_ADMINS = [Role.CLINIC_ADMIN]


def patient_outcomes(request, player_id: str):
    patient = access.patient_for_user(request.user, player_id)
    return render(
        request,
        "reports/patient_outcomes.html",
        {"patient": patient, "series": selectors.patient_outcome_series(patient)},
    )


# ----- a therapist's caseload ---------------------------------------------------------------------


def _caseload(request) -> dict:
    access.require_role(request.user, THERAPISTS)
    form = PeriodForm(request.GET)
    period = form.period()
    report = selectors.caseload_report(request.user, period) if period is not None else None
    return {"form": form, "report": report, "filter_query": _filter_query(form)}


def caseload_outcomes(request):
    context = _caseload(request)
    return render(request, "reports/caseload_outcomes.html", context, status=_status(context))


def caseload_outcomes_print(request):
    context = _caseload(request)
    return render(request, "reports/caseload_print.html", context, status=_status(context))


def caseload_outcomes_export(request):
    context = _caseload(request)
    if context["report"] is None:
        return HttpResponseBadRequest("Invalid date range.", content_type="text/plain")
    return _csv_response(caseload_csv_rows(context["report"]), "outcomes-caseload", context["report"])


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
    return render(request, "reports/clinic_print.html", context, status=_status(context))


def clinic_report_export(request):
    context = _clinic(request)
    if context["report"] is None:
        return HttpResponseBadRequest("Invalid date range.", content_type="text/plain")
    return _csv_response(aggregate_csv_rows(context["report"]), f"outcomes-{context['clinic'].slug}", context["report"])


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
