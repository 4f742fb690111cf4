"""Prometheus metrics of an app (``app.serve_metrics()``, ``trioweb run --metrics``).

Nothing here runs per message. A session is counted when it starts and when it ends (through
the registry's observer hook, ``_registry.py``); its messages and bytes are the counts its
:class:`~trioweb._connection.Connection` keeps anyway for the session log line, added to the
counters once a second (:data:`FLUSH_INTERVAL`), at the session's end and at each scrape. The
hub's and the rooms' counts (``_reporting.py``) are read on the same beat, and their brokers
checked every :data:`PROBE_INTERVAL` seconds.

Under ``trioweb run --workers N`` the CLI gives the workers a fresh ``PROMETHEUS_MULTIPROC_DIR``:
prometheus-client then keeps every value in a file per process there, and a scrape on any
worker reads them all. Without it each App has a registry of its own. prometheus-client is
imported only when an app turns metrics on: an app without metrics does not need it installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from ._connection import Connection
from ._lifespan import Lifecycle
from ._metrics_dir import multiprocess_dir
from ._phases import Phase
from ._registry import ConnectionRegistry
from ._reporting import Reporting, reporters
from .http import Request, Response
from .routing import Router

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "FLUSH_INTERVAL",
    "NO_ROUTE",
    "PROBE_INTERVAL",
    "Metrics",
    "MetricsMethods",
]

#: Seconds between two additions of the live sessions' counts to the counters.
FLUSH_INTERVAL = 1.0
#: Seconds between two checks of the brokers (``trioweb_broker_up``).
PROBE_INTERVAL = 5.0
#: The ``route`` label of a handshake no route matched.
NO_ROUTE = "<none>"
#: The buckets of ``trioweb_websocket_session_seconds``: from a bounce to a day.
SESSION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
#: The text format every Prometheus reads (the response adds ``charset=utf-8``).
CONTENT_TYPE = "text/plain; version=0.0.4"

F = TypeVar("F", bound=Callable[..., Any])


class MetricsHost(Protocol):
    """What the metrics need of an app (``App`` is one)."""

    connections: ConnectionRegistry
    lifecycle: Lifecycle


class Metrics:
    """The metrics of one app, in the Prometheus text format (see docs/operations.md)."""

    def __init__(self, app: MetricsHost) -> None:
        # Imported here, as the hub imports its Redis backend: prometheus-client is an optional
        # extra, and its multiprocess mode is chosen when it is first imported.
        import prometheus_client as prom
        from prometheus_client import multiprocess

        self._prom = prom
        self._multiprocess = multiprocess
        self._app = app
        # In multiprocess mode values live in files, read by the scrape: no registry to keep.
        self.registry: CollectorRegistry | None = (
            None if multiprocess_dir() is not None else prom.CollectorRegistry()
        )
        counter = partial_metric(prom.Counter, self.registry)
        gauge = partial_metric(prom.Gauge, self.registry)
        self._open = gauge(
            "trioweb_websocket_connections_open", "Open WebSockets.", ["route"],
            multiprocess_mode="livesum",
        )  # fmt: skip
        self._total = counter(
            "trioweb_websocket_connections", "WebSockets admitted to a route.", ["route"]
        )
        self._denied = counter(
            "trioweb_websocket_handshakes_denied",
            "WebSocket handshakes denied, by HTTP status.",
            ["route", "status"],
        )
        self._closes = counter(
            "trioweb_websocket_closes",
            "WebSocket sessions ended, by close code.",
            ["route", "code"],
        )
        self._messages = counter(
            "trioweb_websocket_messages", "WebSocket messages.", ["route", "direction"]
        )
        self._bytes = counter(
            "trioweb_websocket_bytes", "WebSocket message payload bytes.", ["route", "direction"]
        )
        self._seconds = prom.Histogram(
            "trioweb_websocket_session_seconds",
            "How long accepted WebSocket sessions lasted.",
            ["route"],
            buckets=SESSION_BUCKETS,
            registry=self.registry,
        )
        self._dropped = counter(
            "trioweb_broadcast_dropped", "Broadcast messages dropped, by policy.", ["policy"]
        )
        self._slow = counter(
            "trioweb_broadcast_slow_closed", "Subscribers ended for being too slow."
        )
        self._gaps = counter("trioweb_broadcast_gaps", "Gaps announced to subscribers.")
        self._broker_up = gauge(
            "trioweb_broker_up", "1 if the broker answers, else 0.", ["broker"],
            multiprocess_mode="livemin",
        )  # fmt: skip
        self._failures = counter(
            "trioweb_background_task_failures", "Tasks in app.nursery that failed."
        )
        self._members = gauge(
            "trioweb_room_members", "Room members in this process.", multiprocess_mode="livesum"
        )
        self._rooms = gauge(
            "trioweb_rooms_open", "Rooms open in this process.", multiprocess_mode="livesum"
        )
        # Each live session: its route's series and its counts as last added to the counters.
        self._live: dict[Connection, list[Any]] = {}
        self._series: dict[str, _RouteSeries] = {}
        self._last_failures = 0
        self._last_dropped: dict[str, int] = {}
        self._last_slow = 0
        self._last_gaps = 0

    # -- sessions (the registry's observer) ------------------------------------------------

    def opened(self, connection: Connection, route: Any) -> None:
        """A session started on ``route``."""
        series = self._series.get(route.path)
        if series is None:
            series = self._series[route.path] = _RouteSeries(self, route.path)
        series.open.inc()
        series.total.inc()
        self._live[connection] = [series, 0, 0, 0, 0]

    def closed(self, connection: Connection, route: Any) -> None:
        """A session ended: its last counts, its close code (or denial) and its duration."""
        entry = self._live.pop(connection, None)
        if entry is None:
            return
        series: _RouteSeries = entry[0]
        series.add(self._delta(connection, entry))
        series.open.dec()
        if connection.denial_status is not None:  # by a hook or the handler
            self._denied.labels(series.label, str(connection.denial_status)).inc()
            return
        label = close_label(connection)
        closes = series.closes.get(label)
        if closes is None:
            closes = series.closes[label] = self._closes.labels(series.label, label)
        closes.inc()
        if connection.accepted:
            series.seconds.observe(trio.current_time() - connection.opened_at)

    def refused(self, route: Any, status: int) -> None:
        """A handshake was denied before its handler ran."""
        self._denied.labels(NO_ROUTE if route is None else route.path, str(status)).inc()

    # -- the periodic part -----------------------------------------------------------------

    def flush(self) -> None:
        """Add what happened since the last flush to the counters; set the room gauges."""
        per_route: dict[_RouteSeries, list[int]] = {}
        for connection, entry in self._live.items():
            delta = self._delta(connection, entry)
            if any(delta):
                sums = per_route.setdefault(entry[0], [0, 0, 0, 0])
                for i, value in enumerate(delta):
                    sums[i] += value
        for series, sums in per_route.items():
            series.add(sums)
        failures = self._app.lifecycle.background.failures
        if failures < self._last_failures:  # a new lifespan started the count again
            self._last_failures = 0
        if failures > self._last_failures:
            self._failures.inc(failures - self._last_failures)
            self._last_failures = failures
        self._flush_reports(reporters(self._app.lifecycle.extensions))

    def _flush_reports(self, extensions: list[Reporting]) -> None:
        dropped: dict[str, int] = {}
        slow = gaps = rooms = members = 0
        for report in (extension.report() for extension in extensions):
            for policy, count in report.dropped.items():
                dropped[policy] = dropped.get(policy, 0) + count
            slow += report.slow_closed
            gaps += report.gaps
            rooms += report.rooms_open
            members += report.room_members
        for policy, count in dropped.items():
            if count > self._last_dropped.get(policy, 0):
                self._dropped.labels(policy).inc(count - self._last_dropped.get(policy, 0))
        self._last_dropped = dropped
        if slow > self._last_slow:
            self._slow.inc(slow - self._last_slow)
        if gaps > self._last_gaps:
            self._gaps.inc(gaps - self._last_gaps)
        self._last_slow, self._last_gaps = slow, gaps
        self._rooms.set(rooms)
        self._members.set(members)

    async def probe(self) -> None:
        """Check every broker once, for ``trioweb_broker_up``."""
        up: dict[str, int] = {}
        for extension in reporters(self._app.lifecycle.extensions):
            broker = extension.report().broker
            answers = await extension.check_broker() is None
            up[broker] = min(up.get(broker, 1), int(answers))  # two hubs: both must answer
        for broker, value in up.items():
            self._broker_up.labels(broker).set(value)

    @staticmethod
    def _delta(connection: Connection, entry: list[Any]) -> tuple[int, int, int, int]:
        """The session's counts since ``entry`` last saw them; ``entry`` now holds the new."""
        now = (
            connection.messages_in,
            connection.messages_out,
            connection.bytes_in,
            connection.bytes_out,
        )
        delta = (now[0] - entry[1], now[1] - entry[2], now[2] - entry[3], now[3] - entry[4])
        entry[1:] = now
        return delta

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[Metrics]:
        """Flush and probe while the app runs (``serve_metrics`` registers this)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._every, FLUSH_INTERVAL, self._flush_async)
            nursery.start_soon(self._every, PROBE_INTERVAL, self.probe)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()
        self.flush()

    async def _flush_async(self) -> None:
        self.flush()
        await trio.lowlevel.checkpoint()

    @staticmethod
    async def _every(interval: float, action: Callable[[], Any]) -> None:
        while True:
            await action()
            await trio.sleep(interval)

    # -- the scrape --------------------------------------------------------------------------

    async def exposition(self) -> bytes:
        """Every metric in the text format: this app's, or every worker's in multiprocess mode."""
        self.flush()
        if self.registry is not None:
            return bytes(self._prom.generate_latest(self.registry))
        # Reading every worker's files: off the event loop.
        return await trio.to_thread.run_sync(self._read_all)

    def _read_all(self) -> bytes:
        registry = self._prom.CollectorRegistry()
        self._multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(self._prom.generate_latest(registry))


class _RouteSeries:
    """One route's series, looked up once: a session's start and end then cost a few
    increments, not a label lookup (and its lock) each."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "closes",
        "label",
        "messages_in",
        "messages_out",
        "open",
        "seconds",
        "total",
    )

    def __init__(self, metrics: Metrics, label: str) -> None:
        self.label = label
        self.open = metrics._open.labels(label)
        self.total = metrics._total.labels(label)
        self.seconds = metrics._seconds.labels(label)
        self.messages_in = metrics._messages.labels(label, "in")
        self.messages_out = metrics._messages.labels(label, "out")
        self.bytes_in = metrics._bytes.labels(label, "in")
        self.bytes_out = metrics._bytes.labels(label, "out")
        #: By the label of the close code.
        self.closes: dict[str, Any] = {}

    def add(self, counts: Any) -> None:
        """Add messages in and out, bytes in and out."""
        messages_in, messages_out, bytes_in, bytes_out = counts
        if messages_in:
            self.messages_in.inc(messages_in)
        if messages_out:
            self.messages_out.inc(messages_out)
        if bytes_in:
            self.bytes_in.inc(bytes_in)
        if bytes_out:
            self.bytes_out.inc(bytes_out)


def close_label(connection: Connection) -> str:
    """The ``code`` label of a session's end: its close code, but a code the client chose
    from the 2000 of 3000-4999 only by its range (``"4xxx"``), so that no client can grow
    the series without bound; the app's own codes, bounded by its code, stay exact."""
    code = connection.close_code
    if code is None:
        return "none"
    chosen_by_client = (
        connection.phase is Phase.CLOSED_BY_CLIENT and not connection.closed_by_server
    )
    if chosen_by_client and 3000 <= code <= 4999:
        return f"{code // 1000}xxx"
    return str(code)


def partial_metric(kind: Any, registry: Any) -> Callable[..., Any]:
    """``kind(name, documentation, labels, registry=registry, ...)``; the multiprocess mode
    of a gauge is ignored by other kinds."""

    def make(name: str, documentation: str, labels: Any = (), **options: Any) -> Any:
        return kind(name, documentation, labels, registry=registry, **options)

    return make


class _Served(Protocol):
    router: Router
    connections: ConnectionRegistry
    lifecycle: Lifecycle
    metrics: Metrics | None

    def use(self, extension: Any) -> Any: ...

    def get(self, path: str, **options: Any) -> Callable[[F], F]: ...


class MetricsMethods:
    """The metrics method of :class:`~trioweb.App`."""

    #: The app's metrics, once turned on.
    metrics: Metrics | None

    def serve_metrics(self: _Served, path: str | None = "/metrics") -> Metrics:
        """Count sessions, messages, closes, denials and the hub's and rooms' troubles, and
        serve them at ``path`` (GET) in the Prometheus text format (``None``: at no path, for
        a port of their own); returns the :class:`Metrics`. Needs ``prometheus-client``
        (``pip install trioweb[metrics]``).

        See docs/operations.md for every metric. Call it before the app starts; a route of
        the app that already answers GET at ``path`` is a ``ValueError``.
        """
        if path is not None:
            self.router.ensure_free(path)
        metrics = self.metrics
        if metrics is None:
            self.metrics = metrics = Metrics(self)
            self.use(metrics)
            self.connections.observer = metrics
        if path is None:
            return metrics
        served = metrics

        async def prometheus_metrics(request: Request) -> Response:
            return Response(await served.exposition(), media_type=CONTENT_TYPE)

        self.get(path)(prometheus_metrics)
        return metrics
