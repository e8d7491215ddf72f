"""Pages of the outcome reports and of alerts. Thin: check access, read the form, call a selector or a
service, render or redirect."""

from pathlib import Path

from django.contrib import messages
from django.contrib.staticfiles import finders
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_POST

from reports import alerts, notes, patient_report, selectors
from reports.exports import aggregate_csv_rows, caseload_csv_rows, csv_text
from reports.forms import ClinicPeriodForm, NoteForm, PeriodForm
from reports.models import Alert
from tracking import access, read_models
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


# ----- clinical notes (the patient page shows them: templates/reports/_notes.html) -----------------


def _notes_anchor(player_id: str) -> str:
    return reverse("patient", args=[player_id]) + "#notes"


def _form_with_errors(form: NoteForm, error: ValidationError) -> None:
    for field, messages_ in error.message_dict.items():
        form.add_error(field if field in form.fields else None, messages_)


@require_POST
def note_add(request, player_id: str):
    """A therapist who may see the patient writes a note. Saved: back to the notes; refused: the form
    again with what was typed and the errors (400)."""
    patient = access.patient_for_user(request.user, player_id)
    form = NoteForm(request.POST)
    if form.is_valid():
        try:
            notes.note_create(patient=patient, author=request.user, **form.cleaned_data)
        except ValidationError as error:
            _form_with_errors(form, error)
        else:
            messages.success(request, "Note saved.")
            return redirect(_notes_anchor(player_id))
    return render(request, "reports/note_form.html", {"patient": patient, "form": form, "note": None}, status=400)


def _own_note(request, player_id: str, note_id: int):
    """The patient (access checked) and one of its notes written by the user: 404 for a note of
    another patient, 403 (recorded as a denied access) for another author's note."""
    patient = access.patient_for_user(request.user, player_id)
    note = patient_report.note_of_patient(patient, note_id)
    if note is None:
        raise Http404("No such note.")
    if note.author_id != request.user.pk:
        notes.note_edit_refused(note=note, user=request.user)
        raise PermissionDenied("Only the author of a note can edit it.")
    return patient, note


@require_http_methods(["GET", "POST"])
def note_edit(request, player_id: str, note_id: int):
    patient, note = _own_note(request, player_id, note_id)
    if request.method == "POST":
        form = NoteForm(request.POST)
        if form.is_valid():
            try:
                notes.note_edit(note=note, user=request.user, **form.cleaned_data)
            except ValidationError as error:
                _form_with_errors(form, error)
            else:
                messages.success(request, "Note updated; the earlier version is kept in its history.")
                return redirect(_notes_anchor(player_id))
        return render(request, "reports/note_form.html", {"patient": patient, "form": form, "note": note}, status=400)
    form = NoteForm(initial={"written_on": note.written_on, "body": note.body})
    response = render(request, "reports/note_form.html", {"patient": patient, "form": form, "note": note})
    access.audit_read(request.user, [patient], detail={"note": note.pk})
    return response


def note_history(request, player_id: str, note_id: int):
    """A note and its earlier versions: for every therapist who may see the patient."""
    patient = access.patient_for_user(request.user, player_id)
    note = patient_report.note_of_patient(patient, note_id)
    if note is None:
        raise Http404("No such note.")
    context = {"patient": patient, "note": patient_report.note_history(note)}
    response = render(request, "reports/note_history.html", context)
    access.audit_read(request.user, [patient], detail={"note": note.pk})
    return response


# ----- the patient report (HTML and PDF from one template) ----------------------------------------


def _patient_report(request, player_id: str):
    patient = access.patient_for_user(request.user, player_id)
    report = patient_report.patient_report(
        patient, viewer=request.user, engagement=read_models.read_model_or_recompute(patient)
    )
    return patient, {"patient": patient, "report": report}


def patient_report_page(request, player_id: str):
    patient, context = _patient_report(request, player_id)
    response = render(request, "reports/patient_report.html", context)
    response["Cache-Control"] = "no-store"
    access.audit_read(
        request.user, [patient], action=AuditAction.EXPORT, detail={"report": "patient", "format": "html"}
    )
    return response


def patient_report_pdf(request, player_id: str):
    patient, context = _patient_report(request, player_id)
    html = render_to_string("reports/patient_report.html", {**context, "pdf": True}, request=request)
    response = HttpResponse(_pdf(html), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="patient-report-{patient.player_id}.pdf"'
    response["Cache-Control"] = "no-store"
    access.audit_read(request.user, [patient], action=AuditAction.EXPORT, detail={"report": "patient", "format": "pdf"})
    return response


def _pdf(html: str) -> bytes:
    """The report's HTML as a PDF, by WeasyPrint with the report's stylesheet and Debian's fonts. It
    fetches nothing: the charts are inline SVG, and every URL (file, http, data) is refused."""
    import weasyprint  # loaded on first use: it takes a moment, and only this view needs it

    css = Path(finders.find("css/report.css")).read_text(encoding="utf-8")
    fetcher = weasyprint.URLFetcher(allowed_protocols=[])
    document = weasyprint.HTML(string=html, url_fetcher=fetcher, base_url=None)
    return document.write_pdf(stylesheets=[weasyprint.CSS(string=css, url_fetcher=fetcher)])


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
