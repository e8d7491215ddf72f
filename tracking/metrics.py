"""The counters and histograms of DESIGN §10, and the one-line hooks the services call to record them.

The gauges are not here: they are read from the database when /metrics is scraped
(`tracking.metrics_views`), so they stay true with any number of processes. What is counted here is
counted where it happens, in whichever process does it: ingest and HTTP timings in the web workers, the
recompute, escalations and most audit events in the Celery worker's pool. `tracking.metrics_files` says
where those values are kept so that one scrape adds up every process.

No label ever carries a player id, a clinic's name or any free text: the labels are the ingest's kinds
and results, a view's name (the URL pattern's name, never the URL), and the audit log's action names.
A counter moves only once the transaction that did the work has committed (`transaction.on_commit`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction
from prometheus_client import CollectorRegistry, Counter, Histogram, values

from tracking import metrics_files

logger = logging.getLogger(__name__)


def _multiprocess_values() -> bool:
    """prometheus_client's multiprocess mode, with this project's process names (tracking.metrics_files),
    when PROMETHEUS_MULTIPROC_DIR is set and usable; else values in the process (with a warning when the
    directory was set but cannot be written). Chosen before any metric below is made."""
    path = metrics_files.directory()
    if not path:
        values.ValueClass = values.MutexValue
        return False
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(path)
    except OSError as error:
        logger.warning("metrics kept in this process: %s is not writable (%s)", path, type(error).__name__)
        values.ValueClass = values.MutexValue
        return False
    values.ValueClass = values.MultiProcessValue(process_identifier=metrics_files.process_identity)
    return True


MULTIPROCESS = _multiprocess_values()

# The metrics of this process (what a scrape reads when there is no multiprocess directory).
REGISTRY = CollectorRegistry(auto_describe=True)

INGEST_KINDS = ("sessions", "markers", "outcomes", "alerts")
INGEST_RESULTS = ("created", "updated", "unchanged", "rejected")

INGEST_ITEMS = Counter(
    "progress_ingest_items",
    "Items posted to the ingest API, by kind and result (rejected: the items a refused batch's errors "
    "name, or all of the batch when an error names none; a refused batch stores nothing).",
    ["kind", "result"],
    registry=REGISTRY,
)
INGEST_SECONDS = Histogram(
    "progress_ingest_request_seconds",
    "Time to handle an ingest request (validation and the stored batch), accepted or refused.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "progress_http_request_seconds",
    "Time to answer a request, by view (the URL pattern's name, else the view's dotted path; "
    "'unresolved' when no URL matched). A stream is timed until its response starts.",
    ["view"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RECOMPUTE_SECONDS = Histogram(
    "progress_recompute_seconds",
    "Time of one analytics recompute of a group of patients (tracking.recompute.patients_recompute).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
ALERT_ESCALATIONS = Counter(
    "progress_alert_escalations",
    "Urgent alerts escalated to their clinic's admins (e-mail sent) because nobody acknowledged them.",
    registry=REGISTRY,
)
AUDIT_EVENTS = Counter(
    "progress_audit_events",
    "Audit events written (committed), by action.",
    ["action"],
    registry=REGISTRY,
)

for _kind in INGEST_KINDS:  # every series exists from the start, at 0: a rate of "rejected" is never absent
    for _result in INGEST_RESULTS:
        INGEST_ITEMS.labels(kind=_kind, result=_result)


# ----- the hooks ------------------------------------------------------------------------------------------


def after_commit(record: Any) -> None:
    """Runs `record` once the current transaction commits (at once outside one); a failure to record is
    logged, never raised into the work it counts."""
    transaction.on_commit(record, robust=True)


def ingest_stored(counts: Mapping[str, Mapping[str, int]]) -> None:
    """A batch stored (and committed): its counts per kind, as IngestResult.as_dict() gives them."""
    for kind, by_result in counts.items():
        if kind in INGEST_KINDS:
            for result in ("created", "updated", "unchanged"):
                if by_result.get(result):
                    INGEST_ITEMS.labels(kind=kind, result=result).inc(by_result[result])


def ingest_refused(body: object, errors: Iterable[Mapping[str, object]]) -> None:
    """A batch refused (400): each item an error names is rejected; when an error names no item (the
    body, a whole list), every item of the batch is. Nothing of the batch was stored."""
    named: set[tuple[str, int]] = set()
    whole_batch = False
    for error in errors:
        kind, index = error.get("kind"), error.get("index")
        if isinstance(kind, str) and kind in INGEST_KINDS and isinstance(index, int):
            named.add((kind, index))
        else:
            whole_batch = True
    by_kind = dict.fromkeys(INGEST_KINDS, 0)
    if whole_batch and isinstance(body, Mapping):
        for kind in INGEST_KINDS:
            items = body.get(kind)
            by_kind[kind] = len(items) if isinstance(items, list) else 0
    for kind, _index in named:
        by_kind[kind] += 0 if whole_batch else 1
    for kind, count in by_kind.items():
        if count:
            INGEST_ITEMS.labels(kind=kind, result="rejected").inc(count)


def alert_escalated() -> None:
    after_commit(ALERT_ESCALATIONS.inc)


def audit_recorded(action: str) -> None:
    after_commit(AUDIT_EVENTS.labels(action=action).inc)


def view_timed(view: str, seconds: float) -> None:
    HTTP_SECONDS.labels(view=view).observe(seconds)
