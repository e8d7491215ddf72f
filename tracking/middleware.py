from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth import middleware as auth_middleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.http import JsonResponse
from django.shortcuts import redirect
from django.utils.cache import patch_cache_control

from tracking import accounts, audit


class SessionMiddlewareWithPassiveRequests(SessionMiddleware):
    """Django's session middleware, except that requests marked passive (live-update streams and the
    fetches they trigger) do not extend the idle timeout: an open tab must not keep a login alive."""

    def process_response(self, request, response):
        if getattr(request, "session_passive", False):
            return response
        return super().process_response(request, response)


def passive_session(view):
    def wrapper(request, *args, **kwargs):
        request.session_passive = True
        return view(request, *args, **kwargs)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


class AuditRequestMiddleware:
    """Keeps the current request where the audit helpers find it (tracking.audit.current_request): who
    asks (request.user, or the game server once DRF has authenticated its token) and from which IP. A
    service deep below the view records its event with both, without being handed the request. Outside
    a request (commands, tasks) there is none, and events say `system`."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = audit.request_bind(request)
        try:
            return self.get_response(request)
        finally:
            audit.request_unbind(token)


# Powerful browser features the dashboard never uses, denied to it and to anything it could embed.
PERMISSIONS_POLICY = ", ".join(
    f"{feature}=()"
    for feature in (
        "accelerometer", "autoplay", "camera", "display-capture", "encrypted-media", "fullscreen",
        "geolocation", "gyroscope", "hid", "idle-detection", "magnetometer", "microphone", "midi",
        "payment", "picture-in-picture", "publickey-credentials-get", "screen-wake-lock", "serial",
        "usb", "xr-spatial-tracking",
    )
)  # fmt: skip


class PrivateResponseMiddleware:
    """Every response the application makes (pages, the API, exports; static files are served before
    this) carries patient data or could: no browser or proxy may store it (DESIGN §7). And the
    Permissions-Policy header that denies the powerful features."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "no-store" not in response.get("Cache-Control", ""):
            patch_cache_control(response, no_store=True)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        return response


class SessionLimitMiddleware:
    """A login lasts SESSION_ABSOLUTE_HOURS at most, whatever the activity: past it the session is
    logged out (audited like any logout), and LoginRequiredMiddleware sends the request to the login."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated and accounts.session_expired(request.session):
            logout(request)
        return self.get_response(request)


# The page a request asked for before the login or its second step: kept in the session, so that a
# player id in its path never travels in a `?next=` query string.
NEXT_PAGE_KEY = "next_page"


def remember_next_page(request) -> None:
    if request.method == "GET" and not request.path.startswith("/api/"):
        request.session[NEXT_PAGE_KEY] = request.get_full_path()


class LoginRequiredMiddleware(auth_middleware.LoginRequiredMiddleware):
    """Django's LoginRequiredMiddleware, redirecting to a bare /login/ (the page asked for is kept in the
    session). The API answers 403 as it did before."""

    def handle_no_permission(self, request, view_func):
        if request.path.startswith("/api/"):
            return super().handle_no_permission(request, view_func)
        remember_next_page(request)
        return redirect(self.get_login_url(view_func))


SECOND_STEP_VIEWS = frozenset({"mfa-verify", "logout"})
ENROLMENT_VIEWS = frozenset({"mfa-enrol", "logout"})


class SecondFactorMiddleware:
    """A session that logged in with the password alone reaches only its second step: the code, when
    the user has a device; enrolment, when REQUIRE_MFA is on and they have none. Django admin included.
    Pages are redirected (the page asked for is kept in the session, never in a query string); the API
    answers 403."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        user = request.user
        if not user.is_authenticated or user.is_verified():
            return None
        if request.session.get(accounts.SESSION_NEEDS_CODE_KEY):
            allowed, target, message = SECOND_STEP_VIEWS, "mfa-verify", "Enter the code of your second factor first."
        elif settings.REQUIRE_MFA:
            allowed, target, message = ENROLMENT_VIEWS, "mfa-enrol", "Set up a second factor first."
        else:
            return None
        match = request.resolver_match
        if match is not None and match.url_name in allowed:
            return None
        if request.path.startswith("/api/"):
            # The API's views are open to Django's login check (DRF authenticates them), but a session
            # that owes its second step must not read through them.
            return JsonResponse({"detail": message}, status=403)
        if not getattr(view_func, "login_required", True):
            return None
        remember_next_page(request)
        return redirect(target)
