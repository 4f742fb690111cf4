"""The metrics on a port of their own (``trioweb run --metrics-port``), served from a thread.

prometheus-client's own ``start_http_server`` answers every path with the metrics: a readiness
probe pointed at this port by mistake (``/readyz``) would get a 200 whatever the app's state,
and keep a draining process in rotation. This one answers ``GET /metrics`` only, 404 elsewhere.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

__all__ = ["METRICS_PATH", "serve_on_port"]

#: The one path the metrics port answers.
METRICS_PATH = "/metrics"
_NOT_FOUND = f"not found: the metrics are at {METRICS_PATH}\n".encode()


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per scrape, none of them keeping the process alive."""

    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    """No line per scrape on stderr (the access log is the app's, not the scraper's)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing."""


def serve_on_port(host: str, port: int, registry: Any = None) -> None:
    """Serve the metrics at ``/metrics`` on ``host:port``, from a daemon thread:
    ``registry``'s, or every worker's (multiprocess mode) when it is ``None``. Raises
    ``OSError`` if the port cannot be listened on."""
    import prometheus_client as prom
    from prometheus_client import multiprocess

    if registry is None:
        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    metrics = prom.make_wsgi_app(registry)

    def only_metrics(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [_NOT_FOUND]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    server_class = type("_Server", (_Server,), {"address_family": _family(host, port)})
    server: WSGIServer = make_server(host, port, only_metrics, server_class, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="trioweb-metrics", daemon=True).start()


def _family(host: str, port: int) -> socket.AddressFamily:
    """IPv4 or IPv6, as ``host`` resolves (``::1`` needs a socket of the second kind)."""
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
