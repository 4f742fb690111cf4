"""The supervisor of ``trioweb run --workers N``: worker processes on one shared socket, started,
announced and stopped together.

hypercorn's own supervisor would bypass trioweb's shutdown trigger, so the workers are plain
processes (``cli.py`` starts them), each running ``serve()``, which drains its sockets with
1001. Each worker reports through a pipe when it serves or why it could not start; this module
reads those reports, relays SIGINT and SIGTERM, and decides the exit status.

The supervisor is the only process that hears a terminal: a Ctrl+C is SIGINT to the whole
foreground process group, and a worker in that group would get it twice (the terminal's, then
the relayed one), the second cutting its drain short. So each worker is born ignoring SIGINT
and, first thing, leaves for a session of its own (:func:`leave_terminal`); it then obeys the
supervisor's relay alone, and a second Ctrl+C, relayed too, cuts the drains short as it does
for one process.
"""

from __future__ import annotations

import logging
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import trio

__all__ = [
    "SUPERVISOR_CHECK_INTERVAL",
    "Supervisor",
    "leave_terminal",
    "supervise",
    "supervisor_gone",
]

logger = logging.getLogger("trioweb")

#: Seconds between two checks by a worker that its supervisor still runs.
SUPERVISOR_CHECK_INTERVAL = 1.0


async def supervisor_gone(supervisor: int) -> None:
    """Return once process ``supervisor`` is no longer this worker's parent: it died without
    stopping its workers (SIGKILL, the OOM killer), and they must not go on serving alone,
    holding the port a restarted service needs. Checked every SUPERVISOR_CHECK_INTERVAL s."""
    while True:  # no event tells a process that its parent died: ask the kernel
        if os.getppid() != supervisor:
            break
        await trio.sleep(SUPERVISOR_CHECK_INTERVAL)
    logger.warning("the supervisor (pid %d) is gone: shutting down", supervisor)


def leave_terminal() -> None:
    """The first step of a worker: a session of its own, out of the terminal's reach (its
    Ctrl+C and Ctrl+Z go to the supervisor alone; no SIGTTOU for writing to it either, as a
    background process group would get under ``stty tostop``), then SIGINT back to Python's
    default, which :func:`supervise` had the worker ignore until here."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.default_int_handler)


class Supervisor:
    """The workers of ``--workers``: started on one shared socket, stopped together.

    A signal goes on to every worker that serves; one still starting gets SIGTERM once it
    reports it serves (its own signal handling is in place from then on: before, a signal
    would kill it mid-import). The first worker that cannot start has its error printed,
    once, and the others are stopped.
    """

    def __init__(self, processes: list[Any], reports: list[Any], with_traceback: bool) -> None:
        #: Each worker's report pipe -> its process.
        self.reports = dict(zip(reports, processes, strict=True))
        self.started: set[Any] = set()
        self.stopping = False
        self.failed = False
        self.with_traceback = with_traceback

    def relay(self, signum: int, frame: Any = None) -> None:
        """Pass ``signum`` to every worker that serves; the others get SIGTERM when they do."""
        self.stopping = True
        for process in self.started:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    def read(self, report: multiprocessing.connection.Connection) -> bool:
        """Handle one message of a worker; False once its pipe is closed."""
        try:
            message = report.recv()
        except (EOFError, OSError):
            return False
        process = self.reports[report]
        if message[0] == "started":
            self.started.add(process)
            if self.stopping:
                os.kill(process.pid, signal.SIGTERM)
        elif message[0] == "failed":
            if not self.failed:  # every worker fails alike (a broker down): say it once
                sys.stderr.write(message[2] if self.with_traceback else message[1])
                sys.stderr.flush()
            self.failed = True
            if not self.stopping:
                self.relay(signal.SIGTERM)
        return True


def supervise(
    processes: list[Any],
    pipes: list[tuple[Any, Any]],
    announcement: str,
    with_traceback: bool,
    worker_exited: Callable[[int], None] | None = None,
) -> int:
    """Start ``processes`` (each with the sending end of its pipe in ``pipes``), print
    ``announcement`` once every one of them serves, relay signals, and wait for them all; the
    exit status: 1 if one could not start or failed, else 0."""
    supervisor = Supervisor(processes, [receiver for receiver, _ in pipes], with_traceback)
    # In place before the first worker starts: a signal from now on stops them all.
    signal.signal(signal.SIGTERM, supervisor.relay)
    # Each worker inherits SIGINT ignored (a disposition survives exec), so that a Ctrl+C while
    # it imports, still in the terminal's process group, does not reach it: leave_terminal()
    # then takes it out. A Ctrl+C in the milliseconds the starts take is lost; another stops all.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for process, (_, sender) in zip(processes, pipes, strict=True):
            process.start()
            sender.close()  # the worker's end: the parent's copy would hide the worker's exit
    finally:
        signal.signal(signal.SIGINT, supervisor.relay)
    # A worker killed by a signal (sent straight to it, not relayed) stopped normally too.
    stopped = {0, -signal.SIGINT, -signal.SIGTERM}
    announced = False
    running = list(processes)
    reports = list(supervisor.reports)
    while running:  # each pass reads a report or sees a worker end
        ended = multiprocessing.connection.wait([p.sentinel for p in running] + reports)
        for report in [r for r in reports if r in ended]:
            if not supervisor.read(report):
                reports.remove(report)
        if not announced and len(supervisor.started) == len(processes) and not supervisor.stopping:
            announced = True
            print(announcement)
            sys.stdout.flush()
        for process in [p for p in running if p.sentinel in ended]:
            if any(supervisor.reports[r] is process for r in reports):
                continue  # its last report first (it may say why it failed)
            process.join()
            running.remove(process)
            if worker_exited is not None and process.pid is not None:
                worker_exited(process.pid)  # its live gauges no longer count
            if process.exitcode not in stopped:
                supervisor.failed = True
                if not supervisor.stopping:  # once: a second SIGTERM would cut the drains short
                    supervisor.relay(signal.SIGTERM)
    return 1 if supervisor.failed else 0
