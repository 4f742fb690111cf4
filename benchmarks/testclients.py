"""In-process test clients, no sockets: ``python -m benchmarks.testclients NAME SECONDS``.

Each framework's own test client drives the same ``/echo`` app as the servers run, one socket,
one 16-byte text message at a time; the process prints one line of JSON with the round trips.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from .apps import load

MESSAGE = "0123456789abcdef"
WARMUP = 0.2


class Counter:
    """Round trips counted inside the window that starts after the warmup."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = self.end = float("inf")
        self.count = 0
        self.cpu0 = 0.0
        self.cpu = 0.0

    def tick(self) -> bool:
        """Count one round trip; False once the window is over."""
        now = time.monotonic()
        if self.start == float("inf"):  # the first round trip: the warmup starts
            self.start = now + WARMUP
            return True
        if now < self.start:
            return True
        if not self.cpu0:
            self.cpu0 = time.process_time()
            self.start = now
            self.end = now + self.seconds
        if now >= self.end:
            self.cpu = time.process_time() - self.cpu0
            self.end = now
            return False
        self.count += 1
        return True

    def result(self) -> dict[str, Any]:
        return {"round_trips": self.count, "seconds": self.end - self.start, "cpu": self.cpu}


async def trioweb_client(counter: Counter) -> None:
    from trioweb.testing import TestClient

    async with TestClient(load("trioweb")) as client, client.websocket("/echo") as ws:  # type: ignore[arg-type]
        while counter.tick():
            await ws.send(MESSAGE)
            await ws.receive()


async def quart_trio_client(counter: Counter) -> None:
    app: Any = load("quart-trio")
    async with app.test_app() as test_app:
        client = test_app.test_client()
        async with client.websocket("/echo") as ws:
            while counter.tick():
                await ws.send(MESSAGE)
                await ws.receive()


def starlette_client(counter: Counter) -> None:
    from starlette.testclient import TestClient

    with (
        TestClient(load("starlette"), backend="trio") as client,
        client.websocket_connect("/echo") as ws,
    ):
        while counter.tick():
            ws.send_text(MESSAGE)
            ws.receive_text()


def main() -> None:
    import trio

    from .apps import framework
    from .server import use_tree

    use_tree()
    name, seconds = sys.argv[1], float(sys.argv[2])
    counter = Counter(seconds)
    if framework(name) == "trioweb":
        trio.run(trioweb_client, counter)
    elif name == "quart-trio":
        trio.run(quart_trio_client, counter)
    elif name == "starlette":
        starlette_client(counter)
    else:
        raise SystemExit(f"no test client for {name}")
    print(json.dumps(counter.result()), flush=True)


if __name__ == "__main__":
    main()
