"""The audit pages (DESIGN §6, §7): the auditor's console at `/audit/` (the events of their clinic's chain,
its CSV export, the patient filter, "Verify now", the reviews of break-glass grants and lockouts), and the
therapist's emergency access at `/break-glass/`, which the auditor reviews.

Thin, like tracking/views.py: check access, validate, call one selector or service, answer. Patient
identifiers and actions only, never clinical content; a player id never goes into a URL's query string
(the console's patient filter and the break-glass form are POSTed).
"""

import csv
from collections.abc import Iterator
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from reports.exports import safe_text
from tracking import access, audit, selectors, services
from tracking.models import AuditAction, AuditEvent, AuditOutcome, Role
from tracking.validators import external_id_error, text_error

PATIENT_FILTER_KEY = "audit_patient_filter"
BIGINT_MAX = 2**63 - 1


def _chains(request) -> list[str]:
    """The auditor's chains (their clinics' slugs); 403 for anyone else."""
    access.require_role(request.user, [Role.AUDITOR])
    chains = selectors.auditor_chains(request.user)
    if not chains:
        raise PermissionDenied("Your role does not give access to this page.")
    return chains


def _query(request, chains: list[str], params) -> selectors.AuditQuery:
    patient = request.session.get(PATIENT_FILTER_KEY, "")
    return selectors.AuditQuery.from_params(params, chains=chains, patient=patient if isinstance(patient, str) else "")


def _console_url(params: dict[str, str], anchor: str = "") -> str:
    return reverse("audit") + ("?" + urlencode(params) if params else "") + anchor


# ----- the console -----------------------------------------------------------------------------------


def audit_log(request):
    chains = _chains(request)
    query = _query(request, chains, request.GET)
    page = selectors.audit_page(query, before=request.GET.get("before", ""), after=request.GET.get("after", ""))
    params = query.link_params()
    context = {
        "query": query,
        "page": page,
        "chains": chains,
        "params": params,
        "statuses": selectors.audit_chain_status(chains),
        "reviews": selectors.audit_reviews(chains),
        "actions": AuditAction.choices,
        "outcomes": AuditOutcome.choices,
        "page_size": selectors.AUDIT_PAGE_SIZE,
        "newest_url": _console_url(params),
        "newer_url": _console_url({**params, "after": page.newer}) if page.newer else "",
        "older_url": _console_url({**params, "before": page.older}) if page.older else "",
        "export_url": reverse("audit-export") + ("?" + urlencode(params) if params else ""),
    }
    for error in query.errors:
        messages.error(request, error)
    return render(request, "tracking/audit.html", context)


@require_POST
def audit_patient_filter(request):
    """Keeps the patient filter in the session, so a player id never appears in a URL's query string. The
    other filters come back as hidden fields and go on into the redirect."""
    chains = _chains(request)
    term = "" if request.POST.get("clear") else request.POST.get("player_id", "").strip()
    problem = term and (text_error(term) or external_id_error(term))
    if problem:
        messages.error(request, f"Patient: {problem}")
        term = ""
    request.session[PATIENT_FILTER_KEY] = term
    return redirect(_console_url(_query(request, chains, request.POST).link_params()))


class _Echo:
    """A file-like object whose write returns the line: csv.writer's rows, streamed."""

    def write(self, value: str) -> str:
        return value


def _csv_cell(value):
    cell = audit.export_cell(value)
    return safe_text(cell) if isinstance(cell, str) else cell


def _csv_lines(events: Iterator[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    yield writer.writerow(audit.EXPORT_FIELDS)
    for event in events:
        fields = audit.event_fields(event)
        yield writer.writerow([_csv_cell(fields[name]) for name in audit.EXPORT_FIELDS])


def audit_export(request):
    """The filtered events as CSV, with the fields of DESIGN §7 and spreadsheet formulas escaped. The
    export is itself audited (`audit.export`, with the filters and the count)."""
    chains = _chains(request)
    query = _query(request, chains, request.GET)
    count, events = selectors.audit_export(query)
    services.audit_export_record(
        user=request.user,
        chain=query.chain,
        filters=query.described(),
        patients=[query.patient] if query.patient else [],
        count=count,
        ip=audit.client_ip(request),
    )
    response = StreamingHttpResponse(_csv_lines(events), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="audit-{query.chain}-{timezone.now():%Y%m%d-%H%M%S}.csv"'
    response["Cache-Control"] = "no-store"
    return response


@require_POST
def audit_verify(request):
    """Verify now: the chain recomputed and its signed heads checked, as the nightly task does."""
    chains = _chains(request)
    chain = request.POST.get("chain") or chains[0]
    if chain not in chains:
        raise Http404("No such chain.")
    [result] = audit.verify_chains([chain], via="console", actor=request.user.get_username(), role="auditor")
    if result.broken:
        messages.error(request, f"Chain {chain}: {result.broken}")
    else:
        messages.success(
            request, f"Chain {chain} is intact: {result.events} events verified, up to seq {result.last_seq}."
        )
    return redirect(_console_url({"chain": chain}, "#chains"))


@require_POST
def audit_review(request, event_id: int):
    """Marks a break-glass or lockout event reviewed, with an optional note."""
    chains = _chains(request)
    event = selectors.audit_reviewable_event(chains, event_id) if event_id <= BIGINT_MAX else None
    if event is None:
        raise Http404("No such event to review.")
    try:
        review, created = services.audit_review(
            event=event, user=request.user, note=request.POST.get("note", ""), ip=audit.client_ip(request)
        )
    except ValueError as error:
        messages.error(request, str(error))
    else:
        if created:
            messages.success(request, f"Event {event.chain} #{event.seq} ({event.action}) marked reviewed.")
        else:
            messages.info(request, f"Event {event.chain} #{event.seq} was already reviewed by {review.reviewed_by}.")
    return redirect(_console_url({"chain": event.chain}, "#reviews"))


# ----- break-glass: a therapist's emergency access -----------------------------------------------------

NO_SUCH_PATIENT = (
    "No patient with this id in your clinic. Check the id: emergency access reaches only patients of your own clinic."
)


@require_http_methods(["GET", "POST"])
def break_glass(request):
    """The emergency-access form (player id and reason). The player id is POSTed, never put in a URL's
    query string; an unknown id and another clinic's get the same answer. A grant opens the patient page,
    which carries a banner while it lasts."""
    access.require_role(request.user, [Role.THERAPIST])
    values = {"player_id": "", "reason": ""}
    errors: dict[str, str] = {}
    if request.method == "POST":
        player_id = request.POST.get("player_id", "").strip()
        reason = request.POST.get("reason", "")
        values["player_id"] = player_id[:128] if not external_id_error(player_id) else ""
        values["reason"] = reason if not text_error(reason) else ""
        reason_problem = services.break_glass_reason_error(reason)
        if reason_problem:
            errors["reason"] = reason_problem
        patient = access.break_glass_candidate(request.user, player_id) if player_id else None
        if not player_id:
            errors["player_id"] = "Give the player id of the patient."
        elif patient is None:
            errors["player_id"] = NO_SUCH_PATIENT
            if not reason_problem:
                clinic = access.clinics_with_role(request.user, Role.THERAPIST).order_by("slug").first()
                if clinic is not None:
                    services.break_glass_refused(
                        user=request.user, clinic=clinic, player_id=player_id, ip=audit.client_ip(request)
                    )
        if patient is not None and not errors:
            if patient.assignments.filter(therapist=request.user).exists():
                messages.info(request, f"{patient.player_id} is assigned to you: no emergency access is needed.")
                return redirect("patient", patient.player_id)
            services.break_glass_grant(user=request.user, patient=patient, reason=reason, ip=audit.client_ip(request))
            return redirect("patient", patient.player_id)
    context = {"values": values, "errors": errors, "minutes": settings.BREAK_GLASS_MINUTES}
    return render(request, "tracking/break_glass.html", context)
