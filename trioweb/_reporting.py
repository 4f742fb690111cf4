"""What an extension (the broadcast hub, the rooms) reports to operations: counts for the
metrics, and a check of its broker for readiness.

The extensions keep plain integer counts where the work happens; the metrics read them once a
second (``_metrics.py``) and the readiness endpoint asks each one to check its broker
(``_health.py``). Neither the hub nor the rooms know about Prometheus.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import trio

__all__ = ["BROKER_CHECK_TIMEOUT", "Report", "Reporting", "bounded_check", "reporters"]

#: Seconds a broker gets to answer one PING of a check before it counts as unreachable.
BROKER_CHECK_TIMEOUT = 1.0


class Report(NamedTuple):
    """Counts since the extension was made (cumulative), and gauges as of now."""

    #: Which broker a check speaks for: ``"broadcast"`` or ``"rooms"``.
    broker: str
    #: Messages dropped by an overflow policy, by policy.
    dropped: Mapping[str, int] = {}
    #: Subscribers ended for being too slow (policy ``"close"``).
    slow_closed: int = 0
    #: Gaps announced to subscribers (a broker reconnect, an unconfirmed subscription).
    gaps: int = 0
    #: Rooms open in this process, and their members in this process.
    rooms_open: int = 0
    room_members: int = 0


@runtime_checkable
class Reporting(Protocol):
    """An extension with counts and a broker to check (``Broadcast`` and ``Rooms`` are)."""

    def report(self) -> Report:
        """Its counts, now."""
        ...

    async def check_broker(self) -> str | None:
        """``None`` if its broker answers (or it has none), else why not, in a few words."""
        ...


async def bounded_check(check: Callable[[], Awaitable[str | None]]) -> str | None:
    """``check()``'s answer, or "no answer" if it takes more than BROKER_CHECK_TIMEOUT."""
    with trio.move_on_after(BROKER_CHECK_TIMEOUT):
        return await check()
    return f"no answer within {BROKER_CHECK_TIMEOUT:g} s"


def reporters(extensions: Iterable[Any]) -> list[Reporting]:
    """The app's extensions that report."""
    return [extension for extension in extensions if isinstance(extension, Reporting)]
