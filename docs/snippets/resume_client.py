import json
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    open_websocket_url,
)

#: Closes that would only happen again: data the server cannot take, a broken
#: rule (1008: a bad room name, say). 4400-4499 are handshakes refused with an
#: HTTP 4xx status, as a server that closes instead of answering HTTP tells them.
FINAL = {1003, 1007, 1008}


async def follow(
    url: str,
    on_message: Callable[[dict[str, Any]], Awaitable[None]],
    *,
    base: float = 0.5,
    cap: float = 30.0,
) -> None:
    """Read the room at ``url`` (``ws://.../chat/lobby?name=ann``) for good: after a
    drop, reconnect with the last offset seen, waiting longer after each failure."""
    since: str | None = None
    failures = 0
    while True:
        target = url if since is None else f"{url}&since={quote(since)}"
        try:
            async with open_websocket_url(target) as ws:
                while True:
                    message = json.loads(await ws.get_message())
                    if message.get("type") == "welcome":
                        failures = 0  # in again: the next drop starts from `base`
                        if message.get("recovered") is False:
                            since = None  # too old or unknown: a fresh start
                    # The app's part: a welcome whose "recovered" is not true means
                    # starting its view afresh from the welcome's state.
                    await on_message(message)
                    since = message.get("offset", since)  # seen, once handled
        except ConnectionClosed as closed:
            code = closed.reason.code
            if code == 1000:
                return  # the server ended the conversation
            if code in FINAL or 4400 <= code <= 4499:
                raise  # trying again would fail again: tell the user
        except ConnectionRejected as refused:
            if 400 <= refused.status_code <= 499:
                raise  # not allowed (401, 403) or not there (404)
        except (HandshakeError, OSError):
            pass  # the server is down or restarting: try again
        # Full jitter: anywhere between 0 and the capped exponential delay, so
        # that a thousand clients dropped at once do not come back at once.
        failures += 1
        await trio.sleep(random.uniform(0, min(cap, base * 2**failures)))
