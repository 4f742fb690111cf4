"""``trioweb run MODULE:APP``: serve an app on hypercorn's trio worker; ``trioweb routes`` and
``trioweb asyncapi``: describe it."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import logging.config
import multiprocessing
import multiprocessing.connection
import os
import socket
import sys
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from typing import Any

import trio

from ._failures import leaves
from ._metrics_dir import sharing_run_dir, worker_metrics_dir
from ._operations import NO_OPS, MetricsPortError, Operations, serve_metrics_port
from ._startup import bind, error_lines
from ._workers import leave_terminal, supervise, supervisor_gone
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
        "--traceback",
        action="store_true",
        help="when the server cannot start, print the error's traceback after its one line",
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


def _serve_one(
    target: str,
    options: dict[str, Any],
    started: Callable[[list[str]], None],
    fd: int | None = None,
    ops: Operations = NO_OPS,
    workers: int = 1,
) -> None:
    """Run one worker: load the app, serve it until a signal; ``started(urls)`` once it is up."""
    app = load_app(target)
    ops.apply(app, options["host"], workers)
    if fd is not None:
        options = {**options, "bind": [f"fd://{fd}"]}

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            started(await nursery.start(partial(serve, app, **options)))

    try:
        trio.run(run)
    except BaseExceptionGroup as group:
        # What a user can cause (a failing startup, a port in use, a background task failing
        # under background_failure="exit") is one error: show it alone.
        failed, rest = group.split((StartupError, BackgroundTaskError, OSError))
        if failed is None or rest is not None:
            raise
        error = next(leaves(failed))
        raise error from error.__cause__  # its cause kept: --traceback shows it


def _worker_main(
    target: str,
    options: dict[str, Any],
    sock: socket.socket,
    log_format: str,
    report: multiprocessing.connection.Connection,
    ops: Operations = NO_OPS,
    supervisor: int | None = None,
) -> None:
    """One of ``--workers``: tells the supervisor through ``report`` that it serves, or why it
    could not start (the supervisor prints that once, for all of them); drains and exits if
    the supervisor dies."""
    leave_terminal()  # before anything slow: until then a Ctrl+C is ignored (supervise())
    _configure_logging(log_format)  # a spawned process starts with logging unconfigured
    if supervisor is not None:
        options = {**options, "shutdown_trigger": partial(supervisor_gone, supervisor)}
    try:
        with sharing_run_dir():
            _serve_one(
                target,
                options,
                lambda urls: report.send(("started",)),
                sock.fileno(),
                ops,
                workers=2,
            )
    except (StartupError, AppLoadError) as exc:
        report.send(("failed", error_lines(exc, False), error_lines(exc, True)))
        sys.exit(1)
    except BackgroundTaskError as exc:  # drained already: say why in one line, exit 1
        print(f"trioweb: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def _run_workers(
    target: str,
    options: dict[str, Any],
    workers: int,
    log_format: str = "text",
    with_traceback: bool = False,
    ops: Operations = NO_OPS,
    worker_exited: Any = None,
) -> int:
    """Start ``workers`` processes on one shared socket and relay SIGINT/SIGTERM to them.

    hypercorn's own supervisor would bypass trioweb's shutdown trigger, so the workers are
    plain processes each running :func:`serve`, which drains its sockets with 1001. The
    "serving" line is printed once every worker serves. A worker that cannot start, or exits
    with an error (a background task failed under ``background_failure="exit"``), makes the
    others stop the same way, and the exit status 1.
    """
    config = make_config(
        options["host"],
        options["port"],
        graceful_timeout=options["graceful_timeout"],
        ping_interval=None,
        options={},
    )
    sockets = bind(config)  # StartupError (a port in use) is reported by main()
    (listener,) = sockets.insecure_sockets
    host, port = listener.getsockname()[:2]
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe(duplex=False) for _ in range(workers)]
    processes = [
        context.Process(
            target=_worker_main,
            args=(target, options, listener, log_format, sender, ops, os.getpid()),
            daemon=False,
        )
        for _, sender in pipes
    ]
    if ops.metrics_port is not None:  # every worker's metrics, read from their files
        serve_metrics_port(host, ops.metrics_port)  # (first: a port in use stops it all)
    return supervise(
        processes,
        pipes,
        f"trioweb: serving {target} on http://{host}:{port} with {workers} workers",
        with_traceback,
        worker_exited,
    )


def _configure_logging(log_format: str = "text") -> None:
    """Show trioweb's log lines on stderr: the way hypercorn shows its own, or as JSON lines."""
    logging.config.dictConfig(logging_config(log_format))


def _bad_value(args: argparse.Namespace) -> str | None:
    """What is wrong with a value of ``trioweb run`` that argparse's types let through: found
    here, it is exit 2 (a process manager does not restart on it), not an error at bind time
    or at shutdown."""
    if not 0 <= args.port <= 65535:
        return f"--port must be 0-65535 (0: any free port), not {args.port}"
    if args.metrics_port is not None and not 1 <= args.metrics_port <= 65535:
        return f"--metrics-port must be 1-65535, not {args.metrics_port}"
    if not args.graceful_timeout >= 0:  # (NaN too)
        return f"--graceful-timeout must be 0 or more seconds, not {args.graceful_timeout}"
    return None


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
    if (bad := _bad_value(args)) is not None:
        print(f"trioweb: error: {bad}", file=sys.stderr)
        return 2
    try:
        app = load_app(args.target)
    except AppLoadError as exc:
        print(f"trioweb: error: {exc}", file=sys.stderr)
        return 2
    ops = Operations(args.metrics, args.metrics_port, args.health)
    if (clash := ops.clash(app)) is not None:  # before anything starts: the app says so
        print(f"trioweb: error: {clash}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "graceful_timeout": args.graceful_timeout,
        "ping_interval": args.ping_interval or None,  # 0: no pings
    }
    if args.access_log:
        options.update(accesslog="-", access_log_format=ACCESS_LOG_FORMAT)
    if args.workers > 1:
        # One scrape of any worker covers all: prometheus-client's multiprocess mode, a run's dir.
        wanted = args.metrics or args.metrics_port is not None or app.metrics is not None
        try:
            with worker_metrics_dir() if wanted else nullcontext() as worker_exited:
                return _run_workers(
                    args.target,
                    options,
                    args.workers,
                    args.log_format,
                    args.traceback,
                    ops,
                    worker_exited,
                )
        except StartupError as exc:
            sys.stderr.write(error_lines(exc, args.traceback))
            return 1
        except MetricsPortError as exc:
            print(f"trioweb: error: {exc}", file=sys.stderr)
            return 1

    def announce(urls: list[str]) -> None:
        print(f"trioweb: serving {args.target} on {', '.join(urls)} (Ctrl+C to stop)", flush=True)

    try:
        ops.apply(app, args.host, 1)  # the app _serve_one loads: the module is imported once
        _serve_one(args.target, options, announce)
    except (StartupError, BackgroundTaskError) as exc:
        sys.stderr.write(error_lines(exc, args.traceback))
        return 1
    except MetricsPortError as exc:
        print(f"trioweb: error: {exc}", file=sys.stderr)
        return 1
    return 0
