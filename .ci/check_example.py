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
        assert b'import { connect } from "/trioweb.js"' in response  # the browser client
        ws_url = base.replace("http://", "ws://") + "/ws/lobby?name=ci"
        async with open_websocket_url(ws_url) as ws:
            welcome = json.loads(await ws.get_message())
            assert welcome["type"] == "welcome" and "ci" in welcome["names"], welcome
            await ws.send_message(json.dumps({"text": "hello from CI"}))
            while (said := json.loads(await ws.get_message()))["type"] == "presence":
                pass  # who is in the room
            offset = said.pop("offset")
            assert said == {"type": "message", "name": "ci", "text": "hello from CI"}, said
            assert offset.isdigit(), offset  # kept in the room's history, for resuming
    print("ci: GET / answered 200 and the chat room echoed a message")


trio.run(main, sys.argv[1])
