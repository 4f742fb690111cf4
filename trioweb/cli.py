"""``trioweb run MODULE:APP``: serve an app on hypercorn's trio worker; ``trioweb routes`` and
``trioweb asyncapi``: describe it."""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import logging
import logging.config
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from contextlib import nullcontext
from functools import partial
from typing import Any, NamedTuple

import trio

from ._failures import leaves
from ._metrics import serve_on_port, worker_metrics_dir
from .app import App
from .logs import logging_config
from .server import (
    DEFAULT_PING_INTERVAL,
    BackgroundTaskError,
    StartupError,
    dead_peer_timeout,
    make_config,
    serve,
)

__all__ = ["load_app", "main"]


class Operations(NamedTuple):
    """What ``--metrics``, ``--metrics-port`` and ``--health`` add to the app in each worker."""

    metrics: bool = False
    metrics_port: int | None = None
    health: bool = False

    def apply(self, app: App, host: str, workers: int) -> None:
        """Mount the endpoints asked for; serve the metrics port of a single process."""
        if self.metrics and app.metrics is None:  # (an app that serves its own keeps them)
            app.serve_metrics()
        elif self.metrics_port is not None and app.metrics is None:
            app.serve_metrics(None)  # counted, served on the port only
        if self.metrics_port is not None and workers == 1 and app.metrics is not None:
            _serve_metrics_port(host, self.metrics_port, app.metrics.registry)
        if self.health:
            app.serve_health()


NO_OPS = Operations()


class MetricsPortError(Exception):
    """The ``--metrics-port`` could not be listened on."""


def _serve_metrics_port(host: str, port: int, registry: Any = None) -> None:
    try:
        serve_on_port(host, port, registry)
    except OSError as exc:
        raise MetricsPortError(f"--metrics-port: {_address_error(host, port, exc)}") from None


class AppLoadError(Exception):
    """The MODULE:APP target could not be turned into an App."""


def load_app(target: str) -> App:
    """Import ``module:attribute`` (the attribute defaults to ``app``) and check it is an App."""
    module_name, _, attribute = target.partition(":")
    attribute = attribute or "app"
    if not module_name:
        raise AppLoadError(f"no module in {target!r} (expected MODULE:APP, e.g. examples.echo:app)")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(f"cannot import module {module_name!r}: not found") from None
        raise AppLoadError(f"importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise AppLoadError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(obj, App):
        raise AppLoadError(f"{target} is a {type(obj).__name__}, not a trioweb App")
    return obj


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trioweb", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve an app")
    run.add_argument("target", metavar="MODULE:APP", help="for example examples.chat:app")
    run.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.add_argument(
        "--graceful-timeout",
        type=float,
        default=10.0,
        help="seconds open sockets get to finish on shutdown (default 10)",
    )
    run.add_argument(
        "--ping-interval",
        type=float,
        default=DEFAULT_PING_INTERVAL,
        help=(
            f"seconds between WebSocket pings (default {DEFAULT_PING_INTERVAL:g}; 0: none); a peer "
            f"that answers none is dropped within two intervals "
            f"({dead_peer_timeout(DEFAULT_PING_INTERVAL):g} s by default)"
        ),
    )
    run.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="log every request and handshake with its status and duration (default: on)",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="trioweb's own log lines (sessions, warnings): text with timestamps, as hypercorn's "
        "(default), or one JSON object a line",
    )
    run.add_argument(
        "--metrics",
        action="store_true",
        help="serve Prometheus metrics at /metrics on the app's port (every worker's)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve the metrics on this port instead, from one process (same --host)",
    )
    run.add_argument(
        "--health",
        action="store_true",
        help="serve liveness at /healthz and readiness at /readyz",
    )
    routes = commands.add_parser("routes", help="list an app's routes")
    routes.add_argument("target", metavar="MODULE:APP", help="for example examples.chat:app")
    asyncapi = commands.add_parser(
        "asyncapi", help="print (or write) the AsyncAPI 3.0 document of an app's WebSocket routes"
    )
    asyncapi.add_argument("target", metavar="MODULE:APP", help="for example examples.chat:app")
    asyncapi.add_argument(
        "--output", "-o", metavar="FILE", help="write the document to FILE instead of stdout"
    )
    asyncapi.add_argument("--title", help="info.title (default: the app's, see App.asyncapi)")
    asyncapi.add_argument(
        "--version", dest="api_version", metavar="VERSION", help="info.version (likewise)"
    )
    return parser


def _write_asyncapi(args: argparse.Namespace) -> int:
    """``trioweb asyncapi``: the document as indented JSON, on stdout or in ``--output``."""
    try:
        app = load_app(args.target)
    except AppLoadError as exc:
        print(f"trioweb: error: {exc}", file=sys.stderr)
        return 2
    document = app.asyncapi(title=args.title, version=args.api_version)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        print(f"trioweb: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


#: One line per request or handshake: client, request line, status, size, duration.
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'


def _list_routes(app: App) -> str:
    """The route table as aligned text: kind, methods, path, handler."""
    rows = []
    for route in app.router.routes:
        methods = "WS" if route.methods is None else ",".join(sorted(route.methods))
        handler = getattr(route.handler, "__qualname__", repr(route.handler))
        module = getattr(route.handler, "__module__", "")
        rows.append((methods, route.path, f"{module}.{handler}" if module else handler))
    if not rows:
        return "(no routes)"
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "\n".join(f"{m:<{widths[0]}}  {p:<{widths[1]}}  {h}" for m, p, h in rows)


def _address_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"cannot serve on {host}:{port}: the port is already in use"
    if exc.errno == errno.EACCES:
        return f"cannot serve on {host}:{port}: permission denied (ports below 1024 need root)"
    return f"cannot serve on {host}:{port}: {exc.strerror or exc}"


def _serve_one(
    target: str,
    options: dict[str, Any],
    announce: str | None,
    fd: int | None = None,
    ops: Operations = NO_OPS,
    workers: int = 1,
) -> None:
    """Run one worker: load the app and serve it until a signal."""
    app = load_app(target)
    ops.apply(app, options["host"], workers)
    if fd is not None:
        options = {**options, "bind": [f"fd://{fd}"]}

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve, app, **options))
            if announce is not None:
                print(f"{announce} on {', '.join(urls)} (Ctrl+C to stop)", flush=True)

    try:
        trio.run(run)
    except BaseExceptionGroup as group:
        # What a user can cause (a failing startup, a port in use, a background task failing
        # under background_failure="exit") is one error: show it alone.
        failed, rest = group.split((StartupError, BackgroundTaskError, OSError))
        if failed is None or rest is not None:
            raise
        raise next(leaves(failed)) from None


def _worker_main(
    target: str,
    options: dict[str, Any],
    sock: socket.socket,
    log_format: str = "text",
    ops: Operations = NO_OPS,
) -> None:
    _configure_logging(log_format)  # a spawned process starts with logging unconfigured
    try:
        _serve_one(target, options, None, sock.fileno(), ops, workers=2)
    except BackgroundTaskError as exc:  # drained already: say why in one line, exit 1
        print(f"trioweb: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _run_workers(
    target: str,
    options: dict[str, Any],
    workers: int,
    log_format: str = "text",
    ops: Operations = NO_OPS,
    worker_exited: Any = None,
) -> int:
    """Start ``workers`` processes on one shared socket and relay SIGINT/SIGTERM to them.

    hypercorn's own supervisor would bypass trioweb's shutdown trigger, so the workers are
    plain processes each running :func:`serve`, which drains its sockets with 1001. A worker
    that exits with an error (a background task failed under ``background_failure="exit"``)
    makes the others stop the same way, and the exit status 1.
    """
    config = make_config(
        options["host"],
        options["port"],
        graceful_timeout=options["graceful_timeout"],
        ping_interval=None,
        options={},
    )
    sockets = config.create_sockets()  # OSError (port in use) is reported by main()
    (listener,) = sockets.insecure_sockets
    listener.listen(config.backlog)
    host, port = listener.getsockname()[:2]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker_main, args=(target, options, listener, log_format, ops), daemon=False
        )
        for _ in range(workers)
    ]
    if ops.metrics_port is not None:  # every worker's metrics, read from their files
        _serve_metrics_port(host, ops.metrics_port)  # (first: a port in use stops it all)
    for process in processes:
        process.start()

    stopping = False

    def relay(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signum)

    signal.signal(signal.SIGINT, relay)
    signal.signal(signal.SIGTERM, relay)
    print(f"trioweb: serving {target} on http://{host}:{port} with {workers} workers", flush=True)
    # A worker still booting when the signal came dies of it: that is a normal stop too.
    stopped = {0, -signal.SIGINT, -signal.SIGTERM}
    failed = False
    running = list(processes)
    while running:  # each pass sees at least one more worker end
        ended = multiprocessing.connection.wait([p.sentinel for p in running])
        for process in [p for p in running if p.sentinel in ended]:
            process.join()
            running.remove(process)
            if worker_exited is not None and process.pid is not None:
                worker_exited(process.pid)  # its live gauges no longer count
            if process.exitcode not in stopped:
                failed = True
                if not stopping:  # once: a second SIGTERM would cut the others' drain short
                    relay(signal.SIGTERM, None)
    return 1 if failed else 0


def _configure_logging(log_format: str = "text") -> None:
    """Show trioweb's log lines on stderr: the way hypercorn shows its own, or as JSON lines."""
    logging.config.dictConfig(logging_config(log_format))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``trioweb`` command."""
    args = _parser().parse_args(argv)
    _configure_logging(getattr(args, "log_format", "text"))
    if args.command == "asyncapi":
        return _write_asyncapi(args)
    if args.command == "routes":
        try:
            print(_list_routes(load_app(args.target)))
        except AppLoadError as exc:
            print(f"trioweb: error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.workers < 1:
        print("trioweb: error: --workers must be at least 1", file=sys.stderr)
        return 2
    if not args.ping_interval >= 0:
        print("trioweb: error: --ping-interval must be 0 (off) or positive", file=sys.stderr)
        return 2
    try:
        app = load_app(args.target)
    except AppLoadError as exc:
        print(f"trioweb: error: {exc}", file=sys.stderr)
        return 2
    ops = Operations(args.metrics, args.metrics_port, args.health)
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "graceful_timeout": args.graceful_timeout,
        "ping_interval": args.ping_interval or None,  # 0: no pings
    }
    if args.access_log:
        options.update(accesslog="-", access_log_format=ACCESS_LOG_FORMAT)
    if args.workers > 1:
        # One scrape of any worker covers them all: prometheus-client's multiprocess mode,
        # in a directory of this run's own.
        wanted = args.metrics or args.metrics_port is not None or app.metrics is not None
        try:
            with worker_metrics_dir() if wanted else nullcontext() as worker_exited:
                return _run_workers(
                    args.target, options, args.workers, args.log_format, ops, worker_exited
                )
        except OSError as exc:
            print(f"trioweb: error: {_address_error(args.host, args.port, exc)}", file=sys.stderr)
            return 1
        except MetricsPortError as exc:
            print(f"trioweb: error: {exc}", file=sys.stderr)
            return 1
    try:
        ops.apply(app, args.host, 1)  # the app _serve_one loads: the module is imported once
        _serve_one(args.target, options, f"trioweb: serving {args.target}")
    except (StartupError, BackgroundTaskError, MetricsPortError) as exc:
        print(f"trioweb: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"trioweb: error: {_address_error(args.host, args.port, exc)}", file=sys.stderr)
        return 1
    return 0
