import pytest
import trio
import trio.testing

from auction import BIDDING_TIME, app
from trioweb.testing import TestClient


async def test_the_highest_bid_wins_when_time_is_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The fake clock drives the rooms too: the owner's deadline, leases, grace.
    async with TestClient(app, receive_timeout=2 * BIDDING_TIME) as client:
        async with client.websocket("/auction/lamp?user=ann") as ann:
            assert (await ann.receive_json())["type"] == "state"
            alone = {"type": "watchers", "people": 1, "tabs": 1}
            assert await ann.receive_json() == alone
            async with client.websocket("/auction/lamp?user=bob") as bob:
                assert (await bob.receive_json())["type"] == "state"
                two = {"type": "watchers", "people": 2, "tabs": 2}
                assert await bob.receive_json() == two
                assert await ann.receive_json() == two
                await bob.send_json({"bid": 10})
                said = {"type": "bid", "price": 10, "bidder": "bob"}
                assert await bob.receive_json() == said
                assert await ann.receive_json() == said
                await ann.send_json({"bid": 5})
                assert await ann.receive_json() == {"type": "refused", "price": 10}
                sold = {"type": "sold", "price": 10, "bidder": "bob"}
                assert await ann.receive_json() == sold
                assert await bob.receive_json() == sold
                assert trio.current_time() == pytest.approx(BIDDING_TIME)


async def test_two_tabs_are_one_person(autojump_clock: trio.testing.MockClock) -> None:
    one_tab = {"type": "watchers", "people": 1, "tabs": 1}
    async with TestClient(app) as client:
        async with client.websocket("/auction/vase?user=ann") as first:
            await first.receive_json()  # the state
            assert await first.receive_json() == one_tab
            async with client.websocket("/auction/vase?user=ann") as second:
                await second.receive_json()  # the state
                again = {"type": "watchers", "people": 1, "tabs": 2}
                assert await second.receive_json() == again
                assert await first.receive_json() == again
            # The second tab closed: its presence left the room.
            assert await first.receive_json() == one_tab


async def test_the_state_outlives_the_members(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with TestClient(app, receive_timeout=2 * BIDDING_TIME) as client:
        async with client.websocket("/auction/clock?user=ann") as ann:
            await ann.receive_json()  # the state
            await ann.receive_json()  # the watchers
            await ann.send_json({"bid": 3})
            assert (await ann.receive_json())["price"] == 3
        # Everyone left: the room closed, its tasks were cancelled. Its state stays.
        await trio.sleep(BIDDING_TIME)
        async with client.websocket("/auction/clock?user=bob") as bob:
            state = await bob.receive_json()
            assert (state["price"], state["bidder"]) == (3, "ann")
            # The room's new owner finds the deadline passed: it closes the auction now.
            while (message := await bob.receive_json())["type"] != "sold":
                pass
            assert message == {"type": "sold", "price": 3, "bidder": "ann"}
