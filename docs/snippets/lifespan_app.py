from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from trioweb import App, Request


class Database:  # stands for a real connection pool
    def __init__(self) -> None:
        self.connected = False
        self.purges = 0

    async def connect(self) -> None:
        await trio.sleep(0.01)
        self.connected = True

    async def close(self) -> None:
        await trio.sleep(0.01)
        self.connected = False

    async def purge_expired(self) -> None:
        await trio.sleep(0.01)
        self.purges += 1


db = Database()


@asynccontextmanager
async def lifespan(app: App) -> AsyncIterator[None]:
    await db.connect()  # at startup, after the on_startup hooks
    yield
    await db.close()  # at shutdown, after app.nursery's tasks are cancelled


app = App(lifespan=lifespan)


@app.on_startup
async def start_purging() -> None:
    async def purge_every_minute() -> None:
        while True:
            await trio.sleep(60)
            await db.purge_expired()

    app.nursery.start_soon(purge_every_minute)  # lives as long as the app


@app.get("/health")
async def health(request: Request) -> dict[str, object]:
    return {"database": db.connected, "purges": db.purges}
