"""Where the counters and histograms of `tracking.metrics` live when there are many processes.

With `PROMETHEUS_MULTIPROC_DIR` set (docker-compose.yml: a tmpfs volume that the web and worker containers
share), prometheus_client's multiprocess mode keeps each process's values in files of that directory,
and a scrape of /metrics in any web worker adds up the files of every process: gunicorn's web workers and
the Celery worker's pool processes alike. Without it (tests, the demo) the values live in the process.

prometheus_client names a process's files by pid. The containers share the directory but not their pid
namespaces (pid 7 of the web and pid 7 of the worker would write one file), so a process is named here
`<service>-<host>-<pid>`: the service is `web` in gunicorn's processes (gunicorn.conf.py), `worker` in
the Celery worker's (`tracking.metrics_worker`), `other` elsewhere (manage.py commands, beat). Nothing
in this module imports Django: gunicorn's master process reads it before the application is loaded.

The directory is wiped when a service starts: gunicorn's master removes the files of the web on its host
(and of one-off commands there, such as the migration compose runs before it) before it starts its
workers; the Celery worker's main process removes the worker's files of its host before its pool starts.
That service's counters then start again from 0, which Prometheus reads as a counter reset. The files of
a process that exits stay, so the sums never go backwards while the service runs.
"""

import contextlib
import glob
import os
import re
import socket

DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SERVICE_ENV = "PROGRESS_METRICS_SERVICE"
OTHER = "other"

# prometheus_client splits a file's name on "_" (its type comes first): the name of a host must have none.
HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"


def directory() -> str | None:
    return os.environ.get(DIR_ENV) or None


def service() -> str:
    return os.environ.get(SERVICE_ENV) or OTHER


def process_identity(pid: int | None = None) -> str:
    """This process's part of its files' names (prometheus_client's process identifier)."""
    return f"{service()}-{HOST}-{pid if pid is not None else os.getpid()}"


def _remove(pattern: str) -> int:
    path = directory()
    if not path:
        return 0
    removed = 0
    for name in glob.glob(os.path.join(glob.escape(path), pattern)):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
            removed += 1
    return removed


def service_started(name: str, *also: str) -> None:
    """Called by a service's main process before it starts the processes that do the work: names them
    `name` (they inherit the environment) and removes the files that service (and the services in `also`)
    left on this host. The files of this process itself from before it knew its name go too."""
    path = directory()
    own = process_identity()
    os.environ[SERVICE_ENV] = name
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for old in (name, *also):
        _remove(f"*_{old}-{HOST}-*.db")
    _remove(f"*_{own}.db")


def process_dead(pid: int) -> None:
    """prometheus_client's bookkeeping for a process that exited (only 'live' gauges need any: this
    project's gauges are read from the database at scrape time, so this removes nothing today)."""
    path = directory()
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(process_identity(pid), path)
