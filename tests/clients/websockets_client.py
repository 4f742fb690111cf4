"""A client on the `websockets` package (asyncio), run by tests/test_edge.py in a subprocess.

    python websockets_client.py URL TAG oversize --size N --attempts N [--deflate] [--fragment]
    python websockets_client.py URL TAG close --code N --reason TEXT

``oversize``: connect ``URL?tag=TAG-i`` for each attempt i, send one message of N bytes (text
on even attempts, binary on odd ones; in four fragments with ``--fragment``) and read until the
server closes. ``close``: connect ``URL?tag=TAG`` and close with the code and reason.

Prints one JSON object per connection: the Close frame received and the one sent (``[code,
reason]`` or null), whether the close frames came in that order (received, then sent), the
extensions negotiated, and ``elapsed``: seconds from the send (or the close) to the end of TCP,
as ``wait_closed()`` reports it. The client's own close timeout is 10 s: a server that does not
close TCP shows as a long ``elapsed``. Every step is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

STEP = 15  # seconds any one connection may take, from connect to the end of TCP


def frame(close: Close | None) -> list[object] | None:
    return None if close is None else [close.code, close.reason]


def report(ws: ClientConnection, elapsed: float, error: str | None = None) -> dict[str, object]:
    protocol = ws.protocol
    return {
        "rcvd": frame(protocol.close_rcvd),
        "sent": frame(protocol.close_sent),
        "rcvd_then_sent": protocol.close_rcvd_then_sent,
        "extensions": [extension.name for extension in protocol.extensions],
        "elapsed": elapsed,
        "error": error,
    }


def message(attempt: int, size: int) -> str | bytes:
    return "x" * size if attempt % 2 == 0 else bytes(size)


async def oversize(url: str, tag: str, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    for attempt in range(args.attempts):
        async with asyncio.timeout(STEP):
            ws = await connect(
                f"{url}?tag={tag}-{attempt}",
                compression="deflate" if args.deflate else None,
                close_timeout=10,
                ping_interval=None,
            )
            data = message(attempt, args.size)
            start = loop.time()
            error = None
            try:
                if args.fragment:
                    piece = -(-args.size // 4)
                    await ws.send([data[i : i + piece] for i in range(0, args.size, piece)])
                else:
                    await ws.send(data)
                answer = await ws.recv()
                error = f"the server answered a message of {len(answer)} instead of closing"
            except ConnectionClosed:
                pass
            await ws.wait_closed()
            print(json.dumps(report(ws, loop.time() - start, error)), flush=True)


async def close(url: str, tag: str, args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(STEP):
        ws = await connect(f"{url}?tag={tag}", close_timeout=10, ping_interval=None)
        start = loop.time()
        await ws.close(args.code, args.reason)
        await ws.wait_closed()
        print(json.dumps(report(ws, loop.time() - start)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("tag")
    modes = parser.add_subparsers(dest="mode", required=True)
    big = modes.add_parser("oversize")
    big.add_argument("--size", type=int, required=True)
    big.add_argument("--attempts", type=int, default=1)
    big.add_argument("--deflate", action="store_true")
    big.add_argument("--fragment", action="store_true")
    closing = modes.add_parser("close")
    closing.add_argument("--code", type=int, required=True)
    closing.add_argument("--reason", default="")
    args = parser.parse_args()
    run = oversize if args.mode == "oversize" else close
    asyncio.run(run(args.url, args.tag, args))


if __name__ == "__main__":
    sys.exit(main())
