"""Out of file descriptors: one log line per episode, not a traceback a retry (docs/hypercorn.md,
fact 21).

The bug: hypercorn's trio worker accepts connections with ``trio.serve_listeners``. When
``accept()`` fails because the process or the system is out of a resource (``EMFILE``,
``ENFILE``, ``ENOBUFS``, ``ENOMEM``), trio's accept loop logs the error on logger
``trio.serve_listeners`` at ERROR, with a full traceback, sleeps 0.1 s and tries again, for as
long as a client waits in the listen backlog. A server out of file descriptors (the common case:
more clients than ``ulimit -n``) thus writes ten tracebacks a second (635 in a minute in the
issue), burying everything else in its log and filling disks and log quotas at the worst
moment. The retry is right (new clients wait in the backlog, and are served as soon as
descriptors free up); only the log is wrong. trio's main branch still logs each retry as of
August 2026.

The fix: a :class:`logging.Filter` on that logger (:class:`AcceptFailureDigest`) swallows those
records, and instead logs one WARNING line on logger ``trioweb`` when accepting starts failing,
naming the error, and one WARNING line when it works again, with the number of failed attempts
and how long accepting failed. Both are WARNING so that an operator who sees the first also
sees the second.

Working again is seen from the other side: hypercorn's worker creates a ``TCPServer`` for each
connection trio accepts, and :func:`install` points the worker at a subclass that tells the
filter first (``hypercorn/trio/run.py`` looks ``TCPServer`` up in its module each time). Failed
accepts go on only while a client waits in the backlog, so the first connection accepted after
them is when it worked again. Near the limit, though, accept flaps: a descriptor frees up, one
client gets in, the next one fails. So an episode ends only once accepting has worked and
nothing has failed for two seconds (a trio system task waits for that quiet spell; each failure
moves its deadline on), and the line that ends it dates the end to the first accept after the
last failure. Whatever the clients do, that is at most one pair of lines every two seconds. An
episode still open when the server stops gets no second line.

Only those records change: any other record of that logger, or one whose exception is not an
``OSError`` of those four errnos, goes through untouched. If trio ever logs differently, the
filter simply stops matching and trio's own lines come back, so it needs no version gate; the
``TCPServer`` hook is shape-checked like trioweb's other hypercorn guards.

Remove this module (and its line in ``_hypercorn_guard.install()``) once trio logs such an
episode once instead of on every retry, and point the EMFILE test in ``tests/test_http_edge.py``
at trio's own lines.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import hypercorn.trio.run
import trio
from hypercorn.trio.tcp_server import TCPServer

__all__ = ["CAPACITY_ERRNOS", "TRIO_LOGGER", "AcceptFailureDigest", "install"]

logger = logging.getLogger("trioweb")

#: The logger trio's accept loop complains on.
TRIO_LOGGER = "trio.serve_listeners"

#: The ``accept()`` errors trio's accept loop retries (``ACCEPT_CAPACITY_ERRNOS`` in trio).
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _Episode:
    """Failed accepts since accepting last worked without a failure for a quiet spell."""

    __slots__ = ("errors", "failures", "quiet", "recovered", "run", "started", "timer")

    def __init__(self, now: float, error: str) -> None:
        self.started = now
        self.failures = 1
        self.errors = [error]
        #: When a connection was first accepted after the last failure; None while failing.
        self.recovered: float | None = None
        #: Whether a task is waiting to end the episode.
        self.timer = False
        #: That task's wait: each failure moves its deadline on.
        self.quiet: trio.CancelScope | None = None
        #: The trio run that task lives in: only from there may its deadline be moved.
        self.run: trio.lowlevel.TrioToken | None = None


class AcceptFailureDigest(logging.Filter):
    """Turn trio's record-per-retry of a failing ``accept()`` into one line per episode.

    Added to logger ``trio.serve_listeners``, it drops each record whose exception is an
    ``OSError`` with an errno in :data:`CAPACITY_ERRNOS`; the first of an episode is replaced
    by a WARNING on ``report``. Call :meth:`accepted` for each accepted connection: once
    accepting has worked and nothing has failed for ``quiet`` seconds, the episode ends with a
    WARNING giving the number of failed attempts and how long accepting failed.
    """

    def __init__(
        self,
        report: logging.Logger,
        quiet: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._report = report
        self._quiet = quiet
        self._clock = clock
        self._lock = threading.Lock()  # logging may be called from any thread
        self._episode: _Episode | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop it) for a failed accept, which is counted; True for anything else."""
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, OSError) or exc.errno not in CAPACITY_ERRNOS:
            return True
        name = errno.errorcode[exc.errno]
        now = self._clock()
        with self._lock:
            episode = self._episode
            if episode is None:
                self._episode = _Episode(now, name)
            else:
                episode.failures += 1
                episode.recovered = None
                if name not in episode.errors:
                    episode.errors.append(name)
                if episode.quiet is not None and _current_run() is episode.run:
                    episode.quiet.deadline = trio.current_time() + self._quiet
        if episode is None:
            self._report.warning(
                "cannot accept new connections: accept() failed with %s (%s); they wait in "
                "the listen backlog while it is retried, and one more line will say when it "
                "works again",
                name,
                os.strerror(exc.errno),
            )
        return False

    def accepted(self) -> None:
        """A connection was accepted (call it from the trio thread, in a trio run)."""
        episode = self._episode
        if episode is None or episode.recovered is not None:
            return  # every connection passes here: nothing more unless it ends a failure
        with self._lock:
            if episode is not self._episode or episode.recovered is not None:
                return
            episode.recovered = self._clock()
            start_timer = not episode.timer
            if start_timer:
                episode.timer = True
                episode.run = _current_run()
        if start_timer:
            # A system task: it belongs to no connection, and ends with the run at the latest.
            trio.lowlevel.spawn_system_task(self._end_when_quiet, episode)

    async def _end_when_quiet(self, episode: _Episode) -> None:
        """End ``episode`` once nothing has failed for ``quiet`` seconds."""
        try:
            with trio.move_on_after(self._quiet) as episode.quiet:
                await trio.sleep_forever()
        finally:  # cancelled with the run: the episode stays open, a later accept ends it
            with self._lock:
                episode.timer = False
                episode.quiet = None
                episode.run = None
        with self._lock:
            # Failing again since (recovered is None): a later accept starts another wait.
            ended = self._episode is episode and episode.recovered is not None
            if ended:
                self._episode = None
        if ended:
            assert episode.recovered is not None
            self._report.warning(
                "accepting connections again, after %d failed accept() calls over %.1f s (%s)",
                episode.failures,
                episode.recovered - episode.started,
                ", ".join(episode.errors),
            )


def _current_run() -> trio.lowlevel.TrioToken | None:
    """The trio run this thread is in, if any."""
    try:
        return trio.lowlevel.current_trio_token()
    except RuntimeError:
        return None


#: The filter :func:`install` puts on ``trio.serve_listeners``, one per process.
DIGEST = AcceptFailureDigest(logger)


class _CountingTCPServer(TCPServer):
    """hypercorn's per-connection server, which first tells :data:`DIGEST` that accept worked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        DIGEST.accepted()
        super().__init__(*args, **kwargs)


def _shape_problem() -> str | None:
    """Why hypercorn's trio worker does not create its connections as expected, or None."""
    current = getattr(hypercorn.trio.run, "TCPServer", None)
    if current is not TCPServer and current is not _CountingTCPServer:
        return "hypercorn.trio.run no longer uses TCPServer"
    names = set(hypercorn.trio.run.worker_serve.__code__.co_names)
    missing = {"serve_listeners", "TCPServer"} - names
    if missing:
        return f"worker_serve no longer uses {', '.join(sorted(missing))}"
    return None


def install() -> bool:
    """Digest trio's accept-failure log; return whether the end of an episode is reported.

    Idempotent. If hypercorn's worker has changed shape, the end of an episode could not be
    seen: nothing is installed (trio's own log stays) and a warning says why.
    """
    problem = _shape_problem()
    if problem is not None:
        logger.warning(
            "not digesting trio's accept() failure log (%s): a server out of file descriptors "
            "logs a traceback every 0.1 s",
            problem,
        )
        return False
    trio_logger = logging.getLogger(TRIO_LOGGER)
    if DIGEST not in trio_logger.filters:
        trio_logger.addFilter(DIGEST)
    hypercorn.trio.run.TCPServer = _CountingTCPServer  # type: ignore[attr-defined]
    return True
