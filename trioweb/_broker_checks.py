"""The brokers' checks behind readiness (``/readyz``): shared, reused, and discreet.

A load balancer polls readiness, and so can anyone who reaches the endpoint: a check per request
would cost one PING per broker per request. So each broker has at most one check in flight
(requests that come meanwhile wait for its answer) and its answer is reused for
``FRESH_FOR`` seconds. The answer names the broker in trioweb's own words; the broker client's
error (which can name hosts, ports, an authentication problem) goes to the server's log
instead, once each time a broker stops answering, with a line when it answers again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import trio

from ._reporting import BROKER_CHECK_TIMEOUT, Reporting, reporters

__all__ = ["FRESH_FOR", "BrokerChecks"]

logger = logging.getLogger("trioweb")

#: Seconds a broker's answer is reused for by readiness before it is asked again.
FRESH_FOR = 1.0
#: What the readiness answer calls each broker (``Report.broker``).
_NAMES = {"broadcast": "the broadcast hub's broker", "rooms": "the rooms' broker"}


class _BrokerCheck:
    """One extension's broker: its last answer, and the check in flight, if any."""

    def __init__(self, extension: Reporting) -> None:
        self.extension = extension
        broker = extension.report().broker
        self.name = _NAMES.get(broker, f"the {broker} broker")
        self.problem: str | None = None  # the client's own words; None: it answers
        self.checked_at = -math.inf
        self.running: trio.Event | None = None

    async def answers(self) -> bool:
        """Whether the broker answered its latest check (made now if none is fresh)."""
        if self.running is not None:  # one in flight: its answer is ours too
            await self.running.wait()
        elif trio.current_time() - self.checked_at < FRESH_FOR:
            await trio.lowlevel.checkpoint()
        else:
            await self._check()
        return self.problem is None

    async def _check(self) -> None:
        self.running = trio.Event()
        try:
            # Shielded (and bounded): the requests waiting for this answer must get it even if
            # the one that started the check is cancelled (its client went away).
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 2 * BROKER_CHECK_TIMEOUT
                problem = await self.extension.check_broker()
            if scope.cancelled_caught:
                problem = f"no answer within {2 * BROKER_CHECK_TIMEOUT:g} s"
            self._record(problem)
        finally:
            self.running.set()
            self.running = None

    def _record(self, problem: str | None) -> None:
        """Keep ``problem``; log it only when the broker goes down or comes back."""
        if problem is not None and self.problem is None:
            logger.warning("readiness: %s does not answer: %s", self.name, problem)
        elif problem is None and self.problem is not None:
            logger.info("readiness: %s answers again", self.name)
        self.problem = problem
        self.checked_at = trio.current_time()


class BrokerChecks:
    """The checks of an app's brokers for its readiness endpoint."""

    def __init__(self) -> None:
        self._checks: dict[int, _BrokerCheck] = {}

    async def problems(self, extensions: Iterable[Any]) -> list[str]:
        """A reason for each broker of ``extensions`` that does not answer (all at once)."""
        checks = [self._check_of(extension) for extension in reporters(extensions)]
        down: list[str | None] = [None] * len(checks)

        async def check(index: int) -> None:
            if not await checks[index].answers():
                down[index] = f"broker down: {checks[index].name} does not answer"

        async with trio.open_nursery() as nursery:
            for index in range(len(checks)):
                nursery.start_soon(check, index)
        return [reason for reason in down if reason is not None]

    def _check_of(self, extension: Reporting) -> _BrokerCheck:
        check = self._checks.get(id(extension))
        if check is None or check.extension is not extension:
            check = self._checks[id(extension)] = _BrokerCheck(extension)
        return check
