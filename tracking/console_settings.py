"""The console's settings: milestone rules, alert escalation, crisis resources, the measurement interval
and the webhook (DESIGN §6).

One page, `/clinic/settings/` (the admin's clinic; `/clinic/settings/<slug>/` when they run several),
with one form per setting, each posting to `/clinic/settings/<slug>/<form>`. An invalid form re-renders
the page (400) with the error next to its field. A clinic where the user is not an admin is a 404.
"""

import json
import urllib.error
import urllib.request

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from tracking import access, analytics, clinic_settings, webhooks
from tracking.models import Clinic, Role

FORMS = ("milestones", "milestones-defaults", "escalation", "crisis", "interval", "webhook", "webhook-test", "secret")


def _clinic(request, slug: str | None) -> Clinic:
    access.require_role(request.user, [Role.CLINIC_ADMIN])
    clinic = clinic_settings.admin_clinic(request.user, slug)
    if clinic is None:
        raise Http404
    return clinic


def _rules_text(rules: list[tuple[int, str]]) -> str:
    return "\n".join(f"{threshold} {title}" for threshold, title in rules)


def _render(request, clinic: Clinic, *, errors=None, values=None, status=200, new_secret: str | None = None):
    own = clinic_settings.milestone_rules(clinic)
    defaults = clinic_settings.default_milestone_rules()
    uses_defaults = not any(own.values())
    values = values or {}
    errors = {field: " ".join(found) for field, found in (errors or {}).items()}
    families = [
        {
            "name": family,
            "label": clinic_settings.FAMILY_LABELS[family],
            "text": values.get(family, _rules_text(defaults[family] if uses_defaults else own[family])),
            "defaults": defaults[family],
            "error": errors.get(family, ""),
        }
        for family in analytics.MILESTONE_FAMILIES
    ]
    context = {
        "clinic": clinic,
        "clinics": clinic_settings.admin_clinics(request.user),
        "families": families,
        "uses_defaults": uses_defaults,
        "errors": errors,
        "values": values,
        "deliveries": clinic_settings.delivery_log(clinic),
        "secret_set": bool(clinic.webhook_secret),
        "new_secret": new_secret,
        "limits": {
            "escalation": clinic_settings.ESCALATION_MINUTES,
            "interval": clinic_settings.MEASURE_INTERVAL_DAYS,
            "crisis": clinic_settings.CRISIS_RESOURCES_MAX,
        },
    }
    response = render(request, "tracking/console_settings.html", context, status=status)
    if new_secret:
        response["Cache-Control"] = "no-store"
    return response


@require_GET
def clinic_settings_page(request, slug: str | None = None):
    clinic = _clinic(request, slug)
    return _render(request, clinic)


def _send_test(clinic: Clinic) -> tuple[str, int | None, str]:
    """One signed POST of a test event to the clinic's URL: (status, HTTP status, error class)."""
    payload = {"event": clinic_settings.TEST_EVENT, "clinic": clinic.slug, "sent_at": timezone.now().isoformat()}
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    request = urllib.request.Request(  # noqa: S310 (an http/https URL validated when set)
        clinic.webhook_url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            webhooks.SIGNATURE_HEADER: webhooks.sign(body, clinic.webhook_secret or ""),
            webhooks.EVENT_HEADER: clinic_settings.TEST_EVENT,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=webhooks.TIMEOUT_SECONDS) as response:  # noqa: S310
            return "delivered", response.status, ""
    except urllib.error.HTTPError as error:
        return "failed", error.code, f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return "failed", None, type(error).__name__ + ": " + str(getattr(error, "reason", error))[:160]
    except Exception as error:  # noqa: BLE001 (a URL urllib cannot use...: a failed delivery, never a 500)
        return "failed", None, type(error).__name__


@require_POST
def clinic_settings_save(request, slug: str, form: str):
    clinic = _clinic(request, slug)
    if form not in FORMS:
        raise Http404
    post = request.POST
    user = request.user
    values: dict[str, str] = {}
    try:
        if form == "milestones":
            rules = {}
            errors: dict[str, list[str]] = {}
            for family in analytics.MILESTONE_FAMILIES:
                values[family] = post.get(family, "")
                try:
                    rules[family] = clinic_settings.parse_family_lines(family, values[family])
                except ValidationError as error:
                    for field, found in error.message_dict.items():
                        errors.setdefault(field, []).extend(found)
            if errors:
                raise ValidationError(errors)
            changed = clinic_settings.milestone_rules_set(clinic=clinic, user=user, rules=rules)
            note = "Milestone rules saved; the next recompute uses them." if changed else "Milestone rules unchanged."
        elif form == "milestones-defaults":
            changed = clinic_settings.milestone_rules_set(clinic=clinic, user=user, rules={})
            note = "The default milestone rules apply again." if changed else "The defaults already applied."
        elif form == "escalation":
            values["alert_escalation_minutes"] = post.get("alert_escalation_minutes", "")
            clinic_settings.escalation_minutes_set(clinic=clinic, user=user, minutes=values["alert_escalation_minutes"])
            note = f"Urgent alerts now escalate after {clinic.alert_escalation_minutes} minutes."
        elif form == "crisis":
            values["crisis_resources"] = post.get("crisis_resources", "")
            clinic_settings.crisis_resources_set(clinic=clinic, user=user, text=values["crisis_resources"])
            note = "Crisis resources saved; they show on every alert."
        elif form == "interval":
            values["measure_interval_days"] = post.get("measure_interval_days", "")
            clinic_settings.measure_interval_set(clinic=clinic, user=user, days=values["measure_interval_days"])
            note = f"PHQ-9 and GAD-7 are now due every {clinic.measure_interval_days} days."
        elif form == "webhook":
            values["webhook_url"] = post.get("webhook_url", "")
            clinic_settings.webhook_url_set(clinic=clinic, user=user, url=values["webhook_url"])
            note = "Webhook URL saved." if clinic.webhook_url else "Webhook turned off (no URL)."
        elif form == "webhook-test":
            if not clinic.webhook_url:
                raise ValidationError({"webhook_url": "Set a webhook URL before sending a test delivery."})
            status, http_status, error = _send_test(clinic)
            clinic_settings.webhook_test_record(
                clinic=clinic, user=user, status=status, http_status=http_status, error=error
            )
            if status == "delivered":
                messages.success(request, f"Test delivery answered HTTP {http_status}.")
            else:
                messages.error(request, f"Test delivery failed: {error or 'no answer'}. See the delivery log.")
            return redirect(_page(clinic) + "#webhook")
        else:  # secret
            secret = clinic_settings.webhook_secret_rotate(clinic=clinic, user=user)
            messages.success(request, "A new webhook secret was generated. Copy it now: it is not shown again.")
            return _render(request, clinic, new_secret=secret)
    except ValidationError as error:
        found = error.message_dict if hasattr(error, "error_dict") else {"general": error.messages}
        return _render(request, clinic, errors=found, values=values, status=400)
    messages.success(request, note)
    return redirect(_page(clinic))


def _page(clinic: Clinic) -> str:
    return reverse("clinic-settings-clinic", args=[clinic.slug])


# Mounted under /clinic/ by tracking.console_urls.
urlpatterns = [
    path("settings/", clinic_settings_page, name="clinic-settings"),
    path("settings/<slug:slug>/", clinic_settings_page, name="clinic-settings-clinic"),
    path("settings/<slug:slug>/<str:form>", clinic_settings_save, name="clinic-settings-save"),
]
