"""Check that the served chat example answers: its page over HTTP, then a room over WebSocket."""

import json
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
        assert b"new WebSocket" in response
        ws_url = base.replace("http://", "ws://") + "/ws/lobby?name=ci"
        async with open_websocket_url(ws_url) as ws:
            assert json.loads(await ws.get_message()) == {"type": "join", "name": "ci"}
            await ws.send_message(json.dumps({"text": "hello from CI"}))
            said = json.loads(await ws.get_message())
            assert said == {"type": "message", "name": "ci", "text": "hello from CI"}, said
    print("ci: GET / answered 200 and the chat room echoed a message")


trio.run(main, sys.argv[1])
