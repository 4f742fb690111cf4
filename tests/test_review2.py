"""Review 2: room history and resume, failing cases found in review."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack

from trioweb.broadcast import Broadcast
from trioweb.rooms import Rooms
from trioweb.rooms._history import offset_of


def test_offset_of_a_message_with_non_ascii_digits_is_none_not_a_crash():
    # "²".isdigit() is True but int("²") raises: a live (ephemeral) message an app publishes
    # with such an "offset" first would crash the room's relay and every member's forwarder.
    assert offset_of('{"offset":"\u00b2","x":1}') is None
    assert offset_of('{"offset":"\u0661\u0662"}') is None  # Arabic-Indic digits


async def test_recovery_is_never_exact_with_messages_cut_off_by_a_smaller_history(redis_server):
    # Two processes with different `history` (a rolling deploy that changes it, or a restart
    # with a lower one): the stream holds what the larger one keeps. A recovery on the smaller
    # must not report exact with only its first `history` messages: the rest would be lost
    # silently (forward_to skips to the live stream after the replay's last offset).
    async with AsyncExitStack() as stack:
        big, small = (
            Rooms(Broadcast(redis_server.url), history=10),
            Rooms(Broadcast(redis_server.url), history=3),
        )
        for rooms in (big, small):
            await stack.enter_async_context(rooms.hub.lifespan())
            await stack.enter_async_context(rooms.lifespan())
        async with big.join("r", user="ann") as ann:
            offsets = [await ann.room.history.append({"n": n}) for n in range(8)]
            async with small.join("r", user="bob", since=offsets[0]) as bob:
                assert bob.recovery is not None
                if bob.recovery.exact:
                    got = [json.loads(m)["offset"] for m in bob.recovery.messages]
                    assert got == offsets[1:]
