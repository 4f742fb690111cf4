"""Helpers shared by the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import hypercorn.trio
import pytest
import trio
from hypercorn.config import Config

import trioweb
from trioweb import _hypercorn_guard
from trioweb.testing import WebSocketClosed

#: Servers in tests listen on loopback only.
HOST = "127.0.0.1"


async def closed_with(ws: Any) -> WebSocketClosed:
    """Read from a test socket until the app closes it; return how it closed."""
    with pytest.raises(WebSocketClosed) as closed:
        while True:
            await ws.receive()
    return closed.value


@dataclass
class Server:
    """A running ``trioweb.serve``: where it listens, how to stop it, how it ended."""

    port: int
    stop: trio.Event
    #: Set when ``serve()`` has returned normally; if it raises, the test fails with its error.
    stopped: trio.Event = field(default_factory=trio.Event)
    #: Set when ``serve()`` has ended, normally or not.
    ended: trio.Event = field(default_factory=trio.Event)

    def url(self, path: str = "", scheme: str = "ws") -> str:
        """The URL of ``path`` on this server."""
        return f"{scheme}://{HOST}:{self.port}{path}"


@asynccontextmanager
async def serving(
    app: trioweb.App, *, graceful_timeout: float = 2.0, port: int = 0, **options: Any
) -> AsyncIterator[Server]:
    """Serve ``app`` with ``trioweb.serve`` on a free loopback port for the block (or on
    ``port``: the one a server before it had, say, to restart it).

    ``options`` go to ``serve()`` (hypercorn settings such as ``ping_interval``). Leaving the
    block shuts the server down gracefully and waits until it has.
    """
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        server = Server(0, stop)

        async def run(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await trioweb.serve(
                    app,
                    host=HOST,
                    port=port,
                    handle_signals=False,
                    shutdown_trigger=stop.wait,
                    graceful_timeout=graceful_timeout,
                    task_status=task_status,
                    **options,
                )
                server.stopped.set()
            finally:
                server.ended.set()

        urls = await nursery.start(run)
        server.port = int(urls[0].rsplit(":", 1)[1])
        try:
            yield server
        finally:
            stop.set()


@asynccontextmanager
async def serving_asgi(asgi: Any) -> AsyncIterator[str]:
    """A plain ASGI app (a trioweb App behind a middleware, or a raw one) on hypercorn's trio
    worker with trioweb's changes to hypercorn installed, as ``serve()`` installs them (which
    takes only a trioweb App); yields its ws:// base URL. Leaving the block stops the server."""
    _hypercorn_guard.install()
    config = Config()
    config.bind = [f"{HOST}:0"]
    config.accesslog = config.errorlog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(hypercorn.trio.serve, asgi, config, shutdown_trigger=stop.wait)
        )
        try:
            yield "ws://" + binds[0].split("://", 1)[1]
        finally:
            stop.set()


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], str]:
    """GET ``path`` over a fresh connection: status, headers (lower-case names), body."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body.decode()
