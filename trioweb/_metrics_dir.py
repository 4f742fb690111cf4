"""The directory of prometheus-client's multiprocess mode for ``trioweb run --workers N``.

Each worker keeps its values in files there, and a scrape on any worker reads them all. The
run makes a fresh directory and removes it at its end; a supervisor killed outright cannot,
so each of the run's processes holds a shared lock on it, and the last to leave removes it.
When the whole run is killed at once (``kill -9`` of the group, the OOM killer), nobody is left
to: the next run removes it. The lock says when: the kernel lets go of a dead process's locks,
so a run directory whose lock can be taken exclusively has no process of its run alive (a
check of pids could be fooled by a pid the system has given to another process since).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = [
    "multiprocess_dir",
    "multiprocess_dir_problem",
    "sharing_run_dir",
    "worker_metrics_dir",
]

logger = logging.getLogger("trioweb")

_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How the directories ``trioweb run`` makes are named (then the supervisor's pid, for people).
_PREFIX = "trioweb-metrics-"
#: In a directory ``trioweb run`` made: each of the run's processes holds a shared lock on it.
_RUN_LOCK = ".trioweb-run.lock"
#: The pid in the name of a prometheus-client value file.
_FILE_PID = re.compile(r"_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, if it is on."""
    return os.environ.get(_ENV) or os.environ.get(_ENV.lower())


def multiprocess_dir_problem() -> str | None:
    """Why the directory set for prometheus-client's multiprocess mode cannot be used, in
    one line (it must exist: a volume not mounted is the usual cause), or None."""
    directory = multiprocess_dir()
    if directory is None or os.path.isdir(directory):
        return None
    return f"{_ENV}={directory} is not a directory"


@contextmanager
def worker_metrics_dir() -> Iterator[Callable[[int], None]]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for the workers to come, removed at the end (one
    set by the user is used as it is, and kept); yields what to call when a worker exits."""
    from prometheus_client import multiprocess

    given = multiprocess_dir()
    _remove_abandoned_runs(keep=given)
    directory = given or tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
    os.environ[_ENV] = directory
    try:
        if given is not None:
            for pid in _dead_writers(directory):  # a run before, killed outright (OOM)
                multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            yield lambda pid: multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            return
        # Held shared until the end: while this process lives no worker removes the directory,
        # and no later run either. Locked before it gets its name: a later run's cleanup never
        # sees the marker of a run that is starting unlocked.
        pending = os.path.join(directory, _RUN_LOCK + ".new")
        with open(pending, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            os.rename(pending, os.path.join(directory, _RUN_LOCK))
            yield lambda pid: multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    finally:
        if given is None:
            del os.environ[_ENV]
            shutil.rmtree(directory, ignore_errors=True)


def _remove_abandoned_runs(keep: str | None) -> None:
    """Remove the directories that runs before made in the temporary directory and left
    behind, all their processes killed at once. Only this user's, only those with the run's
    lock file (a directory of the operator's has none; ``keep``, the one set now, is never
    touched), and only when no process holds that lock: none of that run is alive."""
    parent = tempfile.gettempdir()
    try:
        entries = [entry for entry in os.scandir(parent) if entry.name.startswith(_PREFIX)]
    except OSError:
        return
    for entry in entries:
        if keep is not None and os.path.realpath(entry.path) == os.path.realpath(keep):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.geteuid():
                continue
            marker = os.open(os.path.join(entry.path, _RUN_LOCK), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # no lock file: not a run's (or one still being made), leave it
            continue
        try:
            fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a process of that run holds it: the run is alive
            os.close(marker)
            continue
        try:  # held while removing: a second run starting now skips it
            shutil.rmtree(entry.path, ignore_errors=True)
        finally:
            os.close(marker)
        logger.info("removed %s, left by a run of trioweb killed outright", entry.path)


def _dead_writers(directory: str) -> set[int]:
    """The processes that left value files in ``directory`` (``gauge_livesum_1234.db``) and
    no longer run: their live gauges must not count. (A pid the system has given to another
    process since is taken as alive: its gauges linger, as they did before.)"""
    dead: set[int] = set()
    for name in os.listdir(directory):
        found = _FILE_PID.search(name)
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:  # another user's: alive
            pass
    return dead


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
