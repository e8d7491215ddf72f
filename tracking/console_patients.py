"""The console's patients: search, assignment, display names and time zones (DESIGN §6).

For the clinic admins of the patient's clinic only: therapists and auditors get 403, and a clinic admin
of another clinic gets 404 for this clinic's patients. A patient's page is addressed by the patient's
record id (opaque), and a search term travels in a POST and stays in the session, so no player id ever
appears in a query string. The pages show identifiers and assignment, never clinical detail.
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from tracking import access, assignment
from tracking.models import AuditAction, Role

SEARCH_SESSION_KEY = "clinic_patients_search"
PAGE_SIZE = 50
FILTERS = {"unassigned": "No therapist"}


def _require_admin(request) -> None:
    access.require_role(request.user, [Role.CLINIC_ADMIN])


def _patient(request, patient_id: int):
    """The clinic admin's patient `patient_id`: 403 for another role, 404 for a patient of another clinic
    and for no patient alike. Either refusal is recorded (`access.denied`)."""
    if not access.has_role(request.user, [Role.CLINIC_ADMIN]):
        assignment.patient_denied(request.user, patient_id, status=403)
        raise PermissionDenied("Your role does not give access to this page.")
    patient = assignment.clinic_patient(request.user, patient_id)
    if patient is None:
        assignment.patient_denied(request.user, patient_id, status=404)
        raise Http404("No such patient.")
    return patient


def clinic_patients(request):
    """The clinic's patients: player id, display name, therapists, first seen and last active."""
    _require_admin(request)
    search = request.session.get(SEARCH_SESSION_KEY, "")
    active_filter = request.GET.get("filter", "")
    if active_filter not in FILTERS:
        active_filter = ""
    rows = assignment.clinic_patients(request.user, search=search, unassigned=active_filter == "unassigned")
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "search": search, "active_filter": active_filter, "filters": FILTERS.items()}
    response = render(request, "tracking/console_patients.html", context)
    # Identifiers and assignment only, but which patients a clinic has is itself patient data.
    access.audit_read(request.user, page.object_list, action=AuditAction.CASELOAD_READ)
    return response


@require_POST
def clinic_patients_search(request):
    """Keeps the search term in the session, so player ids never appear in a URL's query string."""
    _require_admin(request)
    term = "" if request.POST.get("clear") else request.POST.get("q", "").strip()[: assignment.SEARCH_MAX]
    problem = assignment.search_error(term)
    if problem:
        messages.error(request, f"Search (player id): {problem}")
        term = ""
    request.session[SEARCH_SESSION_KEY] = term
    return redirect("clinic-patients")


def _patient_page(request, patient, *, errors=None, values=None, status=200):
    therapists = assignment.clinic_therapists(patient.clinic_id)
    assigned = assignment.assigned_therapists(patient)
    assigned_ids = {t.pk for t in assigned}
    context = {
        "patient": patient,
        "assigned": assigned,
        "assignable": [t for t in therapists if t.pk not in assigned_ids],
        "time_zones": assignment.time_zones(),
        "errors": errors or {},
        "values": values or {"display_name": patient.display_name, "timezone": patient.timezone},
        "name_max": assignment.DISPLAY_NAME_MAX,
    }
    response = render(request, "tracking/console_patient.html", context, status=status)
    access.audit_read(request.user, [patient])  # the player id and display name are the patient's data
    return response


@require_http_methods(["GET", "POST"])
def clinic_patient(request, patient_id: int):
    """A patient's clinic-side record: display name and time zone (POST saves them), and therapists."""
    patient = _patient(request, patient_id)
    if request.method == "GET":
        return _patient_page(request, patient)
    values = {
        "display_name": request.POST.get("display_name", "").strip(),
        "timezone": request.POST.get("timezone", "").strip(),
    }
    try:
        changed = assignment.patient_details_update(
            patient=patient, display_name=values["display_name"], timezone_name=values["timezone"]
        )
    except ValidationError as error:
        errors = {field: " ".join(problems) for field, problems in error.message_dict.items()}
        return _patient_page(request, patient, errors={"details": errors}, values=values, status=400)
    if changed:
        labels = {"display_name": "display name", "timezone": "time zone"}
        messages.success(request, f"Saved the {' and '.join(labels[f] for f in changed)} of {patient.player_id}.")
    else:
        messages.info(request, "Nothing changed.")
    return redirect("clinic-patient", patient_id=patient.pk)


def _chosen(request, patient, form: str, field: str, *, assigned: bool):
    """The therapist a form chose in `field` (one of the patient's therapists, or one of the clinic's), or
    the page again with the field's error."""
    candidates = (
        assignment.assigned_therapists(patient) if assigned else assignment.clinic_therapists(patient.clinic_id)
    )
    therapist, problem = assignment.therapist_choice(candidates, request.POST.get(field, ""))
    if problem:
        return None, _patient_page(request, patient, errors={form: {field: problem}}, status=400)
    return therapist, None


@require_POST
def clinic_patient_assign(request, patient_id: int):
    patient = _patient(request, patient_id)
    therapist, error_page = _chosen(request, patient, "assign", "therapist", assigned=False)
    if error_page:
        return error_page
    if assignment.patient_assign(patient=patient, therapist=therapist):
        messages.success(request, f"Assigned {patient.player_id} to {therapist.get_username()}.")
    else:
        messages.info(request, f"{therapist.get_username()} was already assigned to {patient.player_id}.")
    return redirect("clinic-patient", patient_id=patient.pk)


@require_POST
def clinic_patient_unassign(request, patient_id: int):
    patient = _patient(request, patient_id)
    therapist, error_page = _chosen(request, patient, "unassign", "therapist", assigned=True)
    if error_page:
        return error_page
    if assignment.patient_unassign(patient=patient, therapist=therapist):
        messages.success(request, f"{patient.player_id} is no longer assigned to {therapist.get_username()}.")
    else:
        messages.info(request, f"{therapist.get_username()} was not assigned to {patient.player_id}.")
    return redirect("clinic-patient", patient_id=patient.pk)


@require_POST
def clinic_patient_reassign(request, patient_id: int):
    """Hands the patient from one of their therapists to another therapist of the clinic."""
    patient = _patient(request, patient_id)
    source, error_page = _chosen(request, patient, "reassign", "from_therapist", assigned=True)
    if error_page:
        return error_page
    target, error_page = _chosen(request, patient, "reassign", "to_therapist", assigned=False)
    if error_page:
        return error_page
    if source.pk == target.pk:
        return _patient_page(
            request,
            patient,
            errors={"reassign": {"to_therapist": "Choose a different therapist from the current one."}},
            status=400,
        )
    if assignment.patient_reassign(patient=patient, from_therapist=source, to_therapist=target):
        messages.success(request, f"Moved {patient.player_id} from {source.get_username()} to {target.get_username()}.")
    else:
        return _patient_page(
            request,
            patient,
            errors={"reassign": {"from_therapist": f"{source.get_username()} is not assigned to this patient."}},
            status=400,
        )
    return redirect("clinic-patient", patient_id=patient.pk)


# Mounted under /clinic/ by tracking.console_urls.
urlpatterns = [
    path("patients/", clinic_patients, name="clinic-patients"),
    path("patients/search", clinic_patients_search, name="clinic-patients-search"),
    path("patients/<int:patient_id>/", clinic_patient, name="clinic-patient"),
    path("patients/<int:patient_id>/assign", clinic_patient_assign, name="clinic-patient-assign"),
    path("patients/<int:patient_id>/unassign", clinic_patient_unassign, name="clinic-patient-unassign"),
    path("patients/<int:patient_id>/reassign", clinic_patient_reassign, name="clinic-patient-reassign"),
]
