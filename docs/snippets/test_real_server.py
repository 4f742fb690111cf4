from functools import partial

import trio
import trio_websocket

import trioweb
from myapp import app


async def test_echo_over_a_real_socket() -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # Port 0: any free port. start() returns once the server listens, with its URLs.
        serve = partial(trioweb.serve, handle_signals=False, shutdown_trigger=stop.wait)
        urls = await nursery.start(serve, app, "127.0.0.1", 0)
        url = urls[0].replace("http://", "ws://") + "/echo"
        async with trio_websocket.open_websocket_url(url) as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
        stop.set()  # a graceful shutdown, as on SIGTERM
