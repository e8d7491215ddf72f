"""
ASGI config for progress_site project: what the web tier serves (docker-compose.yml's `web`, gunicorn
with uvicorn workers).

It exposes the ASGI callable as a module-level variable named ``application``: Django's ASGI handler,
with two changes:
- The middleware chain is built as under WSGI (every middleware of ours runs sync, and so do the views'
  dispatch and process_view hooks) and entered with one handoff to the request's thread. Django's ASGI
  chain ran each async-capable middleware on the event loop and handed each of their hooks, and each
  process_view, to a thread and back: twelve handoffs for one request, three now (tests/test_web_tier.py),
  between threads contending for one GIL (issue 14). An async view (a live-update stream) still runs on
  the event loop, through async_to_sync as under WSGI, and its response streams there.
- A response streaming an async iterator (the live-update streams, tracking/live.py) gives back its
  request's thread before it streams. Django runs each request's sync code in a thread of the request's
  own, kept until the response has been sent: without this, each of a thousand open streams would keep an
  idle thread parked for its minute.

For more information on this file, see
https://docs.djangoproject.com/en/5.2/howto/deployment/asgi/
"""

import os

import django
from asgiref.sync import SyncToAsync, sync_to_async
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "progress_site.settings")


def release_request_thread() -> None:
    """Shuts down the current request's thread-sensitive executor (asgiref's per-request thread), idle once
    the view and the middleware have run; a later sync call of the request (the response's close) starts a
    new one, which the end of the request shuts down as usual."""
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None or getattr(context, "_executor", None) is not None:
        return  # no request context, or an executor its owner keeps
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)


class ASGIHandlerReleasingStreams(ASGIHandler):
    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)

    async def send_response(self, response, send):
        if response.streaming and response.is_async:
            release_request_thread()
        await super().send_response(response, send)


django.setup(set_prefix=False)
application = ASGIHandlerReleasingStreams()
