"""Broadcast: fan one message out to many sockets, in-process or across processes on Redis.

```python
hub = Broadcast()                              # or Broadcast("redis://127.0.0.1:6379/0")
app.use(hub)

@app.websocket("/chat/{room}")
async def chat(ws, nursery, room):
    async with ws, hub.subscribe(f"chat:{room}") as sub:
        nursery.start_soon(sub.forward_to, ws)
        async for text in ws:
            await hub.publish(f"chat:{room}", text)
```
"""

from ._fanout import Gap, OverflowPolicy, SubscriberTooSlow, Subscription
from .errors import BrokerUnavailable
from .hub import Broadcast

__all__ = [
    "Broadcast",
    "BrokerUnavailable",
    "Gap",
    "OverflowPolicy",
    "SubscriberTooSlow",
    "Subscription",
]
