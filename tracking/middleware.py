from django.contrib.sessions.middleware import SessionMiddleware


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
