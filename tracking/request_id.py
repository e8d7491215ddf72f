"""The request id (DESIGN §10): one id per HTTP request, on every log line the request causes, here and in
the Celery tasks it enqueues.

- `RequestIdMiddleware` (first in settings.MIDDLEWARE) keeps an incoming `X-Request-ID` when it is a safe
  token (1 to 64 characters of `[A-Za-z0-9._-]`: a proxy's id is kept, anything else could carry data
  into the logs) and otherwise makes one; it holds the request in a contextvar for the time of the
  request (sync views run in asgiref's threads under ASGI, which copy the contextvars), returns the id in
  the response's `X-Request-ID` header and logs one access line per request, by view name, never by path
  (a path can hold a player id: the servers' own access logs are off, settings.LOGGING).
- Celery: `before_task_publish` writes the id (and the user id) into the message headers of every task
  sent while it is set, `task_prerun` / `task_postrun` set and clear it in the worker, so that a task's
  lines carry the id of the request that enqueued it, and so do the tasks that task sends in turn. A
  debounced task (`enqueue_once`) carries the id of the request that queued it first.
- `install(app)` connects those, and makes the worker and beat log through Django's LOGGING
  (`setup_logging`): their lines are formatted like the web's.

tracking/logs.py reads `current()` into every record."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.utils.functional import SimpleLazyObject, empty

HEADER = "X-Request-ID"
META_KEY = "HTTP_X_REQUEST_ID"
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
TASK_REQUEST_HEADER = "progress_request_id"
TASK_USER_HEADER = "progress_user_id"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

access_logger = logging.getLogger("progress.requests")


@dataclass(frozen=True)
class Context:
    request_id: str | None = None
    request: Any = None  # the HttpRequest, whose user is read when a line is logged
    user_id: int | None = None  # in a task: the user of the request that sent it
    task: str | None = None
    task_id: str | None = None


_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar("progress_log_context", default=None)


def current() -> Context | None:
    return _context.get()


def safe_id(value: object) -> str | None:
    return value if isinstance(value, str) and SAFE_ID.fullmatch(value) else None


def new_id() -> str:
    return uuid.uuid4().hex


def user_id_of(request: Any) -> int | None:
    """The internal id of the request's user, if it is known without a query: a log line never evaluates
    the lazy `request.user` (Django's auth caches the user it loaded; DRF sets `user` itself)."""
    if request is None:
        return None
    values = vars(request)
    user = values.get("_cached_user")
    if user is None:
        user = values.get("user")
        if isinstance(user, SimpleLazyObject):
            user = None if user._wrapped is empty else user._wrapped
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return pk if isinstance(pk, int) else None


def current_user_id() -> int | None:
    context = _context.get()
    if context is None:
        return None
    return context.user_id if context.request is None else user_id_of(context.request)


class RequestIdMiddleware:
    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        request_id = safe_id(request.META.get(META_KEY)) or new_id()
        request.request_id = request_id
        token = _context.set(Context(request_id=request_id, request=request))
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response[HEADER] = request_id
            match = getattr(request, "resolver_match", None)
            access_logger.info(
                "%s %s %s %sms",
                request.method if request.method in METHODS else "OTHER",
                match.view_name if match is not None else "-",
                response.status_code,
                round((time.monotonic() - started) * 1000),
            )
            return response
        finally:
            _context.reset(token)


# ----- Celery ---------------------------------------------------------------------------------------

_task_tokens: dict[str | None, contextvars.Token] = {}


def on_before_task_publish(headers: dict | None = None, **kwargs: Any) -> None:
    context = _context.get()
    if headers is None or context is None or context.request_id is None:
        return
    headers.setdefault(TASK_REQUEST_HEADER, context.request_id)
    headers.setdefault(TASK_USER_HEADER, current_user_id())


def on_task_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    request = getattr(task, "request", None)
    if request is None or getattr(request, "is_eager", False):
        return  # run in-process (the demo): the caller's context is already there
    user_id = request.get(TASK_USER_HEADER)
    context = Context(
        request_id=safe_id(request.get(TASK_REQUEST_HEADER)),
        user_id=user_id if isinstance(user_id, int) else None,
        task=getattr(task, "name", None),
        task_id=task_id,
    )
    _task_tokens[task_id] = _context.set(context)


def on_task_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    token = _task_tokens.pop(task_id, None)
    if token is None:
        return
    try:
        _context.reset(token)
    except ValueError:  # set in another context: clear it
        _context.set(None)


def on_setup_logging(**kwargs: Any) -> None:
    """The worker and beat log through Django's LOGGING instead of Celery's own handlers."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    logging.captureWarnings(True)  # a warning's text goes through the same handler (py.warnings)


def _json_logs() -> bool:
    from django.conf import settings

    return getattr(settings, "LOG_FORMAT", "text") == "json"


def on_celeryd_init(instance: Any = None, **kwargs: Any) -> None:
    """The worker's banner is printed, not logged: with JSON logs it is left out (its lines would not be
    JSON); Celery logs `ready` itself. Its warnings go through logging."""
    logging.captureWarnings(True)  # the worker's own warnings (running as root...) are log lines too
    if instance is not None and _json_logs():
        instance.quiet = True


def install(app: Any) -> None:
    from celery import signals

    signals.setup_logging.connect(on_setup_logging, weak=False, dispatch_uid="progress.setup_logging")
    signals.celeryd_init.connect(on_celeryd_init, weak=False, dispatch_uid="progress.celeryd_init")
    signals.before_task_publish.connect(on_before_task_publish, weak=False, dispatch_uid="progress.publish")
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid="progress.prerun")
    signals.task_postrun.connect(on_task_postrun, weak=False, dispatch_uid="progress.postrun")

    base = app.Beat

    class Beat(base):  # type: ignore[misc, valid-type]
        """Beat prints its banner too; quiet with JSON logs, as the worker."""

        def __init__(self, *args: Any, quiet: bool = False, **kwargs: Any) -> None:
            super().__init__(*args, quiet=quiet or _json_logs(), **kwargs)

    app.Beat = Beat
