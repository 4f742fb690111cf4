"""One owner per room across processes: a lease in the store, bound to a cancel scope.

Every process with the room open contends for its lease; the one that gets it runs the room's
owner tasks inside a cancel scope, and renews the lease at a third of its time to live. The
scope is cancelled the moment the lease is lost: when a renewal says it is no longer ours, or
when no renewal has been confirmed for the lease's time to live minus a margin (measured on
trio's clock from *before* the renewal was sent, so it ends before the store's expiry does).
The others retry when the lease would expire, or at once when its owner announces that it
gave the lease up (it does when the room closes in its process).

While the store is reachable, this gives at most one owner at a time. A process paused longer
than the margin (a stopped VM, a long GC) can still run owner code after its lease expired:
the fencing token makes its state writes fail (``update(..., fenced=True)``), and the
Rooms guide says what else to expect, and what a network partition does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .._failures import leaves
from ._state import describe
from ._store import Lease
from .errors import LeaseLost, RoomUnavailable

if TYPE_CHECKING:
    from ._room import Room, RoomTask

__all__ = ["hold_ownership"]

logger = logging.getLogger("trioweb.rooms")

#: The share of the lease's time to live kept as a margin against the store's expiry.
MARGIN = 0.2
#: Renewals per time to live.
RENEWALS = 3
#: Past the reported expiry, so that the next attempt does not find the lease a hair alive.
EXPIRY_SLACK = 0.005


async def hold_ownership(
    room: Room, owner_tasks: list[RoomTask], released: Callable[[], trio.Event]
) -> None:
    """Contend for ``room``'s lease for as long as the room is open here; run ``owner_tasks``
    while it is ours. ``released()`` gives an event set when the owner gives the lease up."""
    store = room.settings.store
    ttl = room.settings.lease_ttl
    unreachable = False
    while True:
        given_up = released()
        asked_at = trio.current_time()
        try:
            grant = await store.acquire(room.name, ttl)
        except store.errors as exc:
            if not unreachable:
                logger.warning(
                    "room %r: cannot reach the store for its lease: %s", room.name, describe(exc)
                )
                unreachable = True
            await trio.sleep(ttl / RENEWALS)
            continue
        unreachable = False
        if grant.lease is None:
            # Someone owns it: try again the moment its lease would expire, or at once when it
            # is given up. (No jitter: the acquisition is atomic, so contenders knocking at the
            # same instant cost a call each, and a crashed owner is replaced within the TTL.)
            with trio.move_on_after(min(grant.retry_after, ttl) + EXPIRY_SLACK):
                await given_up.wait()
            continue
        await _own(room, grant.lease, owner_tasks, asked_at)


async def _own(room: Room, lease: Lease, owner_tasks: list[RoomTask], asked_at: float) -> None:
    """Run the owner tasks while ``lease`` holds; release it when done, unless it was lost."""
    store = room.settings.store
    ttl = room.settings.lease_ttl
    lost = False
    room.lease = lease
    logger.info("room %r: this process owns it now (fence %d)", room.name, lease.fence)
    try:
        with trio.CancelScope() as owning:
            async with trio.open_nursery() as nursery:

                async def keep_renewed() -> None:
                    nonlocal lost
                    valid_until = asked_at + ttl * (1 - MARGIN)
                    while True:
                        await trio.sleep_until(
                            min(valid_until, trio.current_time() + ttl / RENEWALS)
                        )
                        if trio.current_time() >= valid_until:
                            break
                        sent_at = trio.current_time()
                        with trio.move_on_at(valid_until):
                            try:
                                if not await store.renew(lease, ttl):
                                    break
                            except store.errors as exc:
                                logger.debug(
                                    "room %r: renewal failed: %s", room.name, describe(exc)
                                )
                                continue
                            valid_until = sent_at + ttl * (1 - MARGIN)
                    lost = True
                    room.lease = None  # not ours from now on, even before the tasks end
                    owning.cancel()

                async def run_owner_task(task: RoomTask) -> None:
                    nonlocal lost
                    try:
                        await task(room)
                    except BaseException as exc:
                        # The store is out of reach or the lease went: not a bug of the task's,
                        # even from a nursery of its own (in a group). Give ownership up here;
                        # it is contended for again.
                        errors = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
                        if not errors or not all(
                            isinstance(e, (LeaseLost, RoomUnavailable)) for e in errors
                        ):
                            raise
                        logger.warning("room %r: owner task stopped: %s", room.name, errors[0])
                        lost = True
                        room.lease = None
                        owning.cancel()

                nursery.start_soon(keep_renewed)
                for task in owner_tasks:
                    nursery.start_soon(run_owner_task, task)
    finally:
        room.lease = None
        if lost:
            logger.warning("room %r: lost its lease (fence %d)", room.name, lease.fence)
        else:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                try:
                    await store.release(lease)
                except store.errors as exc:
                    logger.debug(
                        "room %r: release failed (it expires): %s", room.name, describe(exc)
                    )
