from django.contrib.sessions.middleware import SessionMiddleware

from tracking import audit


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
