"""Dashboard: one app-wide task feeds a topic that any number of sockets watch.

    trioweb run examples.dashboard:app

The sampler runs once for the whole app, in ``app.nursery``, not once per socket. Watchers
subscribe with the ``"latest"`` overflow policy: a dashboard wants the current state, so a
watcher that falls behind skips straight to the newest sample instead of being closed or
queueing stale ones.
"""

import itertools
import os

import trio

from trioweb import App, WebSocket
from trioweb.broadcast import Broadcast

TOPIC = "metrics"
INTERVAL = 1.0

hub = Broadcast(os.environ.get("TRIOWEB_BROADCAST_URL") or None)
app = App()
app.use(hub)


async def sample_forever() -> None:
    """Publish a sample every INTERVAL seconds (a real app would read real metrics)."""
    for tick in itertools.count(1):
        await hub.publish(TOPIC, {"tick": tick, "connections": len(app.connections)})
        await trio.sleep(INTERVAL)


@app.on_startup
async def start_sampler() -> None:
    app.nursery.start_soon(sample_forever)


@app.websocket("/metrics")
async def metrics(ws: WebSocket) -> None:
    async with ws, hub.subscribe(TOPIC, on_overflow="latest") as samples:
        await samples.forward_to(ws)
