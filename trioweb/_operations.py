"""What ``trioweb run --metrics``, ``--metrics-port`` and ``--health`` add to the app: checked
once before anything starts (a path the app already serves, a multiprocess directory that is
not there), then applied in each worker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ._health import serves_health
from ._metrics_dir import multiprocess_dir_problem
from ._metrics_port import serve_on_port
from ._startup import address_error

if TYPE_CHECKING:
    from .app import App

__all__ = ["NO_OPS", "MetricsPortError", "Operations", "serve_metrics_port"]


class Operations(NamedTuple):
    """What ``--metrics``, ``--metrics-port`` and ``--health`` add to the app in each worker."""

    metrics: bool = False
    metrics_port: int | None = None
    health: bool = False

    def clash(self, app: App) -> str | None:
        """Why what was asked for cannot be set up (a path the app serves, a bad directory)."""
        if (self.metrics or self.metrics_port is not None) and not _prometheus_installed():
            flag = "--metrics" if self.metrics else "--metrics-port"
            return f"{flag} needs prometheus-client: pip install 'trioweb[metrics]'"
        counting = self.metrics or self.metrics_port is not None or app.metrics is not None
        if counting and (problem := multiprocess_dir_problem()) is not None:
            return problem
        paths = {"--metrics": ["/metrics"] if self.metrics and app.metrics is None else []}
        health = self.health and not serves_health(app.router)
        paths["--health"] = ["/healthz", "/readyz"] if health else []
        for flag, wanted in paths.items():
            for path in wanted:
                try:
                    app.router.ensure_free(path)
                except ValueError as exc:
                    return f"{flag}: {exc}"
        return None

    def apply(self, app: App, host: str, workers: int) -> None:
        """Mount the endpoints asked for; serve the metrics port of a single process."""
        if self.metrics and app.metrics is None:  # (an app that serves its own keeps them)
            app.serve_metrics()
        elif self.metrics_port is not None and app.metrics is None:
            app.serve_metrics(None)  # counted, served on the port only
        if self.metrics_port is not None and workers == 1 and app.metrics is not None:
            serve_metrics_port(host, self.metrics_port, app.metrics.registry)
        if self.health and not serves_health(app.router):  # (likewise)
            app.serve_health()


NO_OPS = Operations()


class MetricsPortError(Exception):
    """The ``--metrics-port`` could not be listened on."""


def serve_metrics_port(host: str, port: int, registry: Any = None) -> None:
    """Serve the metrics on ``host:port`` (see ``serve_on_port``); MetricsPortError if not."""
    try:
        serve_on_port(host, port, registry)
    except OSError as exc:
        raise MetricsPortError(
            f"--metrics-port: {address_error([f'{host}:{port}'], exc)}"
        ) from None


def _prometheus_installed() -> bool:
    """Whether prometheus-client can be imported (an optional extra: ``trioweb[metrics]``)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True
