"""One server under test, in a process of its own: ``python -m benchmarks.server NAME``.

Every app runs on ``hypercorn.trio.serve`` with the same settings, one worker, bound to
loopback on a free port, after the changes to hypercorn its framework's own server makes
(``apps.prepare``). The process prints ``ready <port>`` once it listens, then serves until
its standard input closes (or it is sent SIGTERM).
"""

from __future__ import annotations

import logging
import os
import resource
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .apps import TREE_ENV, load, prepare


def raise_fd_limit() -> int:
    """Lift the soft limit on open files to the hard one; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def config() -> Config:
    """The same hypercorn settings for every app."""
    cfg = Config()
    cfg.bind = ["127.0.0.1:0"]
    cfg.backlog = 4096
    cfg.graceful_timeout = 1.0
    cfg.keep_alive_timeout = 60
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.loglevel = "WARNING"
    # Pings, as trioweb.serve() sends them by default (20 s): off unless asked, for every app
    # alike (hypercorn's stream then pings too, from a task per socket as trioweb's does).
    ping = os.environ.get("BENCH_PING_INTERVAL")
    cfg.websocket_ping_interval = float(ping) if ping else None
    return cfg


async def main(name: str) -> None:
    prepare(name)
    app = load(name)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config())
        port = int(binds[0].rsplit(":", 1)[1])
        print(f"ready {port}", flush=True)
        # Serve until the harness closes our standard input.
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


def use_tree() -> None:
    """Import trioweb from the tree ``BENCH_TRIOWEB_TREE`` names, if it names one."""
    tree = os.environ.get(TREE_ENV)
    if tree:
        sys.path.insert(0, tree)
        import trioweb

        print(f"trioweb from {trioweb.__file__}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    use_tree()
    profile = os.environ.get("BENCH_CPROFILE")
    if profile:  # a profiling aid: the server's whole life under cProfile, saved at exit
        import cProfile

        cProfile.run("trio.run(main, sys.argv[1])", profile)
    else:
        trio.run(main, sys.argv[1])
