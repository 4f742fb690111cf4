"""Liveness and readiness endpoints (``app.serve_health()``, ``trioweb run --health``).

Liveness answers 200 for as long as the process answers HTTP at all: a probe that gets no
answer is what says the process is stuck. Readiness says whether this process should get new
clients. It answers 503, with the reasons as JSON, while any of these holds:

- the app is not serving: starting up, or draining for shutdown (new handshakes get 503 then);
- a task in ``app.nursery`` failed and no task of the same name has been started there since
  (the app did not restart it);
- a broker does not answer a PING within a second: the broadcast hub's Redis, the rooms'
  store (every extension that reports, ``_reporting.py``); checked at most once at a time
  and reused for a second, the detail logged rather than answered (``_broker_checks.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ._broker_checks import BrokerChecks
from ._lifespan import Lifecycle
from ._registry import ConnectionRegistry
from .http import JSONResponse, Request
from .routing import Router

__all__ = ["HealthMethods", "readiness_problems", "serves_health"]

F = TypeVar("F", bound=Callable[..., Any])
#: Probes must see the state of now, never a cached answer.
_NO_CACHE = {"Cache-Control": "no-store"}


class HealthHost(Protocol):
    """What the health endpoints need of an app (``App`` is one)."""

    connections: ConnectionRegistry
    lifecycle: Lifecycle
    router: Router

    def get(self, path: str, **options: Any) -> Callable[[F], F]:
        """Register a GET handler."""
        ...


async def readiness_problems(app: HealthHost, brokers: BrokerChecks) -> list[str]:
    """Why ``app`` is not ready for new clients, in short sentences (empty: it is ready);
    ``brokers`` checks its brokers."""
    lifecycle = app.lifecycle
    problems: list[str] = []
    if app.connections.draining:
        problems.append("draining: the server is shutting down")
    elif not lifecycle.serving:
        problems.append("not serving: the app is starting or has stopped")
    failed = lifecycle.background.unrecovered()
    if failed:
        problems.append(f"background task failed and was not restarted: {', '.join(failed)}")
    problems.extend(await brokers.problems(lifecycle.extensions))
    return problems


def serves_health(router: Router) -> bool:
    """Whether the app already serves health endpoints (its own ``serve_health()`` call):
    ``trioweb run --health`` then leaves them as they are, as ``--metrics`` does."""
    return any(route.handler.__module__ == __name__ for route in router.routes)


class HealthMethods:
    """The health method of :class:`~trioweb.App`."""

    def serve_health(
        self: HealthHost, liveness: str = "/healthz", readiness: str = "/readyz"
    ) -> None:
        """Serve a liveness endpoint at ``liveness`` and a readiness one at ``readiness`` (GET).

        Liveness answers 200 ``{"status": "alive"}`` while the process serves HTTP. Readiness
        answers 200 ``{"status": "ready"}``, or 503 ``{"status": "unavailable", "reasons":
        [...]}`` while the app is starting or draining for shutdown, while a broker (the
        hub's, the rooms' store) does not answer a PING within a second (checked once at a
        time, the answer reused for a second; the broker client's error is logged, not
        answered), and once a task in
        ``app.nursery`` has failed until a task of the same name is started there again. See
        docs/operations.md. A route of the app that already answers GET at either path is
        a ``ValueError``.
        """
        self.router.ensure_free(liveness)
        self.router.ensure_free(readiness)
        app = self
        brokers = BrokerChecks()  # shared by every request to this endpoint

        async def liveness_probe(request: Request) -> JSONResponse:
            return JSONResponse({"status": "alive"}, headers=_NO_CACHE)

        async def readiness_probe(request: Request) -> JSONResponse:
            problems = await readiness_problems(app, brokers)
            if problems:
                body = {"status": "unavailable", "reasons": problems}
                return JSONResponse(body, 503, headers=_NO_CACHE)
            return JSONResponse({"status": "ready"}, headers=_NO_CACHE)

        self.get(liveness)(liveness_probe)
        self.get(readiness)(readiness_probe)
