"""Check that the served echo example answers: its page over HTTP, then a WebSocket echo."""

import sys

import trio
from trio_websocket import open_websocket_url


async def main(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    with trio.fail_after(30):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: ci\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := await stream.receive_some():
                response += chunk
        assert response.startswith(b"HTTP/1.1 200"), response[:200]
        async with open_websocket_url(base.replace("http://", "ws://") + "/ws") as ws:
            await ws.send_message("ci")
            assert await ws.get_message() == "ci"
    print("ci: GET / answered 200 and /ws echoed")


trio.run(main, sys.argv[1])
