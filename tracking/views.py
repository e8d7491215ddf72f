"""Pages. Thin: check access, call a selector, render."""

from django.contrib.auth.decorators import login_not_required
from django.core.paginator import Paginator
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import render

from tracking import access, selectors
from tracking.models import Role


def home(request):
    """The caseload for therapists; the clinic's patient list for clinic admins; a pointer for auditors."""
    if access.has_role(request.user, [Role.THERAPIST]):
        page = Paginator(selectors.caseload_rows(request.user), 50).get_page(request.GET.get("page"))
        return render(request, "tracking/caseload.html", {"page": page})
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
