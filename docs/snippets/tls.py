import os

import trio

import trioweb
from trioweb import App, WebSocket

app = App()


@app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    async with ws:
        async for message in ws:
            await ws.send(message)


async def main(
    *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    await trioweb.serve(
        app,
        host=os.environ.get("HOST", "0.0.0.0"),
        port=int(os.environ.get("PORT", "8443")),
        # Any hypercorn Config setting passes through serve(): here, its TLS settings.
        certfile=os.environ["TLS_CERTFILE"],  # the certificate chain, PEM
        keyfile=os.environ["TLS_KEYFILE"],  # its private key, PEM
        ping_interval=20,
        task_status=task_status,  # nursery.start(main) returns once it listens
    )


if __name__ == "__main__":
    trio.run(main)
