"""The directory of prometheus-client's multiprocess mode for ``trioweb run --workers N``.

Each worker keeps its values in files there, and a scrape on any worker reads them all. The
run makes a fresh directory and removes it at its end; a supervisor killed outright cannot,
so each of the run's processes holds a shared lock on it, and the last to leave removes it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["multiprocess_dir", "sharing_run_dir", "worker_metrics_dir"]

_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: In a directory ``trioweb run`` made: each of the run's processes holds a shared lock on it.
_RUN_LOCK = ".trioweb-run.lock"


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, if it is on."""
    return os.environ.get(_ENV) or os.environ.get(_ENV.lower())


@contextmanager
def worker_metrics_dir() -> Iterator[Callable[[int], None]]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for the workers to come, removed at the end (one
    set by the user is used as it is, and kept); yields what to call when a worker exits."""
    from prometheus_client import multiprocess

    given = multiprocess_dir()
    directory = given or tempfile.mkdtemp(prefix="trioweb-metrics-")
    os.environ[_ENV] = directory
    try:
        if given is not None:
            yield lambda pid: multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            return
        # Held shared until the end: while this process lives no worker removes the directory.
        with open(os.path.join(directory, _RUN_LOCK), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield lambda pid: multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    finally:
        if given is None:
            del os.environ[_ENV]
            shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def sharing_run_dir() -> Iterator[None]:
    """In a worker of ``trioweb run``: share the run's metrics directory while it runs. If the
    supervisor was killed outright (SIGKILL: no cleanup of its own), the last of its workers
    to leave removes the directory; the user's own directory is never removed."""
    directory = multiprocess_dir()
    if directory is None or not os.path.exists(os.path.join(directory, _RUN_LOCK)):
        yield
        return
    with open(os.path.join(directory, _RUN_LOCK)) as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            try:  # exclusive only once nobody else holds it: the supervisor and workers are gone
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last = True
            except BlockingIOError:
                last = False
            if last:
                shutil.rmtree(directory, ignore_errors=True)
