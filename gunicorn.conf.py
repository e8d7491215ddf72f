"""Gunicorn's configuration hooks for the web service. Gunicorn reads ./gunicorn.conf.py by default (its
`--config`), so compose's and the image's command line stays as it is. The options themselves are on that
command line.

Metrics (tracking.metrics_files): the master names its workers the `web` service and removes the web's
metric files of the last run before it starts them; a worker that exits is marked dead.
"""

from tracking import metrics_files


def on_starting(server):
    metrics_files.service_started("web", metrics_files.OTHER)


def child_exit(server, worker):
    metrics_files.process_dead(worker.pid)


def _django_logging() -> dict:
    """The master logs through Django's LOGGING too (JSON in production, DESIGN §10), as its workers do."""
    import os

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "progress_site.settings")
    from django.conf import settings

    return settings.LOGGING


logconfig_dict = _django_logging()
