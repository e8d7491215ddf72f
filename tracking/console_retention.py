"""The console's retention policies and their preview (DESIGN §7).

One page, `/clinic/retention/` (the admin's clinic; `/clinic/retention/<slug>/` when they run several),
with one form per category posting to `/clinic/retention/<slug>/<category>`: a number of days, or "keep
forever". An invalid form re-renders the page (400) with the error next to its field. A clinic where the
user is not an admin is a 404; another role is a 403. The preview counts what tonight's run would remove.
"""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST

from tracking import access, retention
from tracking.models import Clinic, RetentionCategory, Role


def _clinic(request, slug: str | None) -> Clinic:
    access.require_role(request.user, [Role.CLINIC_ADMIN])
    clinic = retention.admin_clinic(request.user, slug)
    if clinic is None:
        raise Http404
    return clinic


def _render(request, clinic: Clinic, *, errors=None, values=None, status=200):
    errors, values = errors or {}, values or {}
    rows = retention.console_rows(clinic)
    for row in rows:
        days = row["days"]
        row["value"] = values.get(row["category"], "" if days is None else str(days))
        row["error"] = errors.get(row["category"], "")
    context = {"clinic": clinic, "clinics": retention.admin_clinics(request.user), "rows": rows}
    return render(request, "tracking/console_retention.html", context, status=status)


@require_GET
def clinic_retention_page(request, slug: str | None = None):
    return _render(request, _clinic(request, slug))


@require_POST
def clinic_retention_save(request, slug: str, category: str):
    clinic = _clinic(request, slug)
    if category not in RetentionCategory.values:
        raise Http404
    label = RetentionCategory(category).label
    if request.POST.get("keep") == "forever":
        cleared = retention.policy_clear(clinic=clinic, category=category, by=request.user)
        messages.success(request, f"{label}: kept forever." if cleared else f"{label}: already kept forever.")
        return redirect(_page(clinic))
    raw = request.POST.get("days", "").strip()
    try:
        try:
            days = int(raw)
        except ValueError:
            raise ValidationError({"days": "Enter a whole number of days, or choose “keep forever”."}) from None
        retention.policy_set(clinic=clinic, category=category, days=days, by=request.user)
    except ValidationError as error:
        found = error.message_dict if hasattr(error, "error_dict") else {"days": error.messages}
        errors = {category: " ".join(" ".join(v) for v in found.values())}
        return _render(request, clinic, errors=errors, values={category: raw}, status=400)
    messages.success(request, f"{label}: kept {days} days. Tonight's run applies it.")
    return redirect(_page(clinic))


def _page(clinic: Clinic) -> str:
    return reverse("clinic-retention-clinic", args=[clinic.slug])


# Mounted under /clinic/ by tracking.console_urls.
urlpatterns = [
    path("retention/", clinic_retention_page, name="clinic-retention"),
    path("retention/<slug:slug>/", clinic_retention_page, name="clinic-retention-clinic"),
    path("retention/<slug:slug>/<str:category>", clinic_retention_save, name="clinic-retention-save"),
]
