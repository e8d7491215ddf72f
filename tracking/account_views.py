"""Logging in and the account's security (DESIGN §7): the second step, enrolment of an authenticator app,
backup codes, the password change and the locked-out page. Thin: the work is in tracking.accounts."""

from datetime import timedelta

import segno
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.shortcuts import redirect, render
from django.urls import reverse, reverse_lazy
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods, require_POST

from tracking import accounts, audit
from tracking.middleware import NEXT_PAGE_KEY


def _next_page(request) -> str:
    """Where the user was going before the second step (kept in the session, not in a URL)."""
    target = request.session.pop(NEXT_PAGE_KEY, "") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return reverse(settings.LOGIN_REDIRECT_URL)


class LoginView(auth_views.LoginView):
    """Django's login (django-axes counts its failures). After the password it goes to the page asked
    for before, which the session kept; SecondFactorMiddleware puts the second step in between."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def get_success_url(self):
        return self.get_redirect_url() or _next_page(self.request)


@require_http_methods(["GET", "POST"])
def second_factor(request):
    """The login's second step: a code from the authenticator app, or a backup code."""
    if request.user.is_verified() or not request.session.get(accounts.SESSION_NEEDS_CODE_KEY):
        return redirect(_next_page(request))
    error = ""
    if request.method == "POST":
        if accounts.verify_second_factor(request, request.POST.get("code", "")):
            return redirect(_next_page(request))
        error = "That code was not accepted. Enter the current 6-digit code from your app, or an unused backup code."
    return render(request, "registration/second_factor.html", {"error": error})


def _qr_svg(uri: str) -> str:
    """The otpauth:// URI as an inline SVG QR code, drawn here (segno): no image service sees the secret."""
    return segno.make(uri, error="m").svg_inline(border=2, omitsize=True, title="QR code for your authenticator app")


@require_http_methods(["GET", "POST"])
def enrol(request):
    """Set up an authenticator app: scan the QR code (or type the secret), confirm with a first code,
    and receive the backup codes, once."""
    if accounts.has_device(request.user) and request.method == "GET" and not request.user.is_verified():
        return redirect("mfa-verify")
    device = accounts.enrolment_device(request.user)
    error = ""
    if request.method == "POST":
        codes = accounts.confirm_enrolment(request, device, request.POST.get("code", ""))
        if codes is not None:
            return render(
                request,
                "registration/backup_codes.html",
                {"codes": codes, "enrolled": True, "next": _next_page(request)},
            )
        error = "That code did not match. Check that the app shows this account, then enter its current 6-digit code."
    context = {
        "qr_svg": mark_safe(_qr_svg(device.config_url(settings.MFA_ISSUER))),  # noqa: S308 (segno's own SVG)
        "secret": device.base32_secret(),
        "error": error,
        "required": settings.REQUIRE_MFA,
        "replacing": accounts.has_device(request.user),
    }
    return render(request, "registration/enrol.html", context)


def security(request):
    """The account's security: the second factor, backup codes left, the password."""
    started = accounts.session_started_at(request.session)
    context = {
        "enrolled": accounts.has_device(request.user),
        "backup_codes_left": accounts.backup_codes_left(request.user),
        "required": settings.REQUIRE_MFA,
        "session_started": started,
        "session_ends": (started or timezone.now()) + timedelta(hours=settings.SESSION_ABSOLUTE_HOURS),
    }
    return render(request, "registration/security.html", context)


@require_POST
def backup_codes_new(request):
    if not accounts.has_device(request.user):
        return redirect("mfa-enrol")
    codes = accounts.regenerate_backup_codes(request)
    return render(
        request,
        "registration/backup_codes.html",
        {"codes": codes, "enrolled": False, "next": reverse("account-security")},
    )


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change (the validators of AUTH_PASSWORD_VALIDATORS: 12 characters at least);
    afterwards every other session of the user ends."""

    template_name = "registration/password_change.html"
    success_url = reverse_lazy("account-security")

    def form_valid(self, form):
        old_session_key = self.request.session.session_key
        response = super().form_valid(form)
        accounts.password_changed(self.request, form.user, old_session_key=old_session_key)
        messages.success(self.request, "Your password was changed. Every other session of yours has ended.")
        return response


@login_not_required
def admin_login(request):
    """Django admin logs in through the product's login (the same lockout and second factor)."""
    if request.user.is_authenticated:
        # Logged in but not staff: admin would send them back here, in a loop. Say no instead.
        context = {"title": "Not allowed", "message": "Django admin is for the operators of the site."}
        return render(request, "error.html", context, status=403)
    return redirect(f"{reverse('login')}?next={reverse('admin:index')}")


def locked_out(request, original_response=None, credentials=None):
    """django-axes' answer to a locked username + IP (AXES_LOCKOUT_CALLABLE). The same page whoever
    asked, whether or not that user exists; it says when to try again."""
    cool_off = timedelta(minutes=settings.LOGIN_COOLOFF_MINUTES)
    username = str((credentials or {}).get("username", "") or request.POST.get("username", ""))[:150]
    last = (
        AccessAttempt.objects.filter(username=username, ip_address=audit.client_ip(request))
        .order_by("-attempt_time")
        .values_list("attempt_time", flat=True)
        .first()
    )
    until = (last or timezone.now()) + cool_off
    minutes = max(1, int((until - timezone.now()).total_seconds() // 60) + 1)
    return render(
        request,
        "registration/locked_out.html",
        {"until": until, "minutes": min(minutes, settings.LOGIN_COOLOFF_MINUTES)},
        status=429,
    )
