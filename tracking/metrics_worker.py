"""The Celery worker's part of the metrics' multiprocess directory (tracking.metrics_files): its main
process names its pool's processes the `worker` service and removes the worker's files of the last run
before the pool starts (`worker_init`, sent in the main process before it forks the pool); a pool process
that exits is marked dead. Connected by TrackingConfig.ready (`connect`), in every process; only a worker sends
these signals."""

from typing import Any

from celery import signals

from tracking import metrics_files


def on_worker_init(**kwargs: Any) -> None:
    metrics_files.service_started("worker")


def on_worker_process_shutdown(pid: int | None = None, **kwargs: Any) -> None:
    if pid is not None:
        metrics_files.process_dead(pid)


def connect() -> None:
    signals.worker_init.connect(on_worker_init, dispatch_uid="metrics.worker_init")
    signals.worker_process_shutdown.connect(on_worker_process_shutdown, dispatch_uid="metrics.worker_process_shutdown")
