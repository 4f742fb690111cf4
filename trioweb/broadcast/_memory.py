"""The in-process backend of the broadcast hub: a publish reaches this process only."""

from __future__ import annotations

import trio

from ._backend import Message, Sink

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Fan-out inside one process: a publish is delivered at once, in order."""

    def __init__(self) -> None:
        self._sink: Sink | None = None

    async def run(self, sink: Sink, *, task_status: trio.TaskStatus[None]) -> None:
        """Nothing to connect to: deliver into ``sink`` until cancelled."""
        self._sink = sink
        task_status.started()
        await trio.sleep_forever()

    async def publish(self, topic: str, message: Message) -> bool:
        """Deliver ``message`` to this process's subscribers."""
        sink = self._sink
        assert sink is not None, "publish() before run()"
        await trio.lowlevel.checkpoint()
        sink.deliver(topic, message)
        return True

    async def subscribe(self, topic: str) -> bool:
        """Always confirmed."""
        await trio.lowlevel.checkpoint()
        return True

    def unsubscribe(self, topic: str) -> None:
        """Nothing to do."""

    async def check(self) -> None:
        """No broker: nothing can be out of reach."""
        await trio.lowlevel.checkpoint()
