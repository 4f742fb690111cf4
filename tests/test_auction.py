"""examples.auction, in one process: the wire protocol of the issue, message by message.

With ``autojump_clock``, trio's clock only moves when every task waits, so the messages a
step causes all arrive before the next tick: the sequences below are exact.
"""

import json
from pathlib import Path

import jsonschema
import pytest
import trio
import trio.testing
from helpers import closed_with

from examples.auction import make_app
from trioweb.testing import TestClient, WebSocketDenied

ORIGIN = {"origin": "http://testserver"}  # a browser's handshake (the test client's host)


def auction(lot_seconds: float = 30) -> TestClient:
    app = make_app({"AUCTION_LOT_SECONDS": str(lot_seconds)})
    return TestClient(app, receive_timeout=120)


def living_tasks() -> int:
    """How many tasks the trio run has right now (as in test_broadcast)."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for n in task.child_nurseries for child in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def got(ws) -> dict:
    """The next message; a stored one's offset (a string of digits) checked and taken out."""
    message = await ws.receive_json()
    if message.get("type") in ("bid", "chat", "sold"):
        offset = message.pop("offset")
        assert isinstance(offset, str) and offset.isdigit(), message
    else:
        assert "offset" not in message, message
    return message


async def welcome(ws) -> dict:
    """The welcome, and the presence message that follows the member's own join."""
    first = await got(ws)
    assert first["type"] == "welcome"
    assert await got(ws) == {"type": "presence", "members": first["members"]}
    return first


def presence(*members: str) -> dict:
    return {"type": "presence", "members": list(members)}


@pytest.mark.parametrize("query", ["", "?user=", "?user=%20%20", "?name=alice"])
async def test_a_user_name_is_required_before_the_accept(query):
    async with auction() as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket(f"/ws/lot{query}"):
                pass
    assert denied.value.status_code == 401
    assert b"user" in denied.value.body


@pytest.mark.parametrize("query", ["", "?user=", "?user=%20%20"])
async def test_a_browser_without_a_user_name_reads_4401_and_the_reason(query):
    # A handshake with an Origin is a browser's: accepted only to be closed with 4000 + 401 and
    # the text, which the page's client reads (and stops); without one, HTTP 401 as above.
    async with auction() as client:
        async with client.websocket(f"/ws/lot{query}", headers=ORIGIN) as ws:
            closed = await closed_with(ws)
        assert (closed.code, closed.reason) == (4401, "a user name is required: /ws/ROOM?user=NAME")
        async with client.websocket(f"/ws/{'r' * 101}?user=alice", headers=ORIGIN) as ws:
            assert (await closed_with(ws)).code == 4400
        assert (await client.get("/rooms")).json() == {}  # nobody joined


async def test_the_welcome_comes_first(autojump_clock):
    async with auction(lot_seconds=30) as client, client.websocket("/ws/lot?user=alice") as ws:
        assert await got(ws) == {
            "type": "welcome",
            "you": "alice",
            "members": ["alice"],
            "high": None,
            "closes_in": 30,
        }


async def test_the_welcome_comes_first_even_while_the_room_is_busy(autojump_clock):
    async with auction() as client, client.websocket("/ws/lot?user=alice") as alice:
        await welcome(alice)
        for n in range(1, 21):
            await alice.send_json({"type": "bid", "amount": n})
            await alice.send_json({"type": "chat", "text": str(n)})
        async with client.websocket("/ws/lot?user=bob") as bob:
            first = await got(bob)
            assert first["type"] == "welcome"
            # Whatever was announced before the welcome's read and queued since the join
            # comes after it; the high bid never goes down.
            high = first["high"]["amount"] if first["high"] else 0
            while (message := await got(bob))["type"] != "presence":
                if message["type"] == "bid":
                    assert message["amount"] >= high


async def test_a_long_user_name_is_cut():
    async with auction() as client, client.websocket(f"/ws/lot?user={'x' * 100}") as ws:
        assert (await welcome(ws))["you"] == "x" * 40


async def test_presence_reaches_everyone_and_counts_users_once(autojump_clock):
    async with auction() as client, client.websocket("/ws/lot?user=alice") as alice:
        await welcome(alice)
        async with client.websocket("/ws/lot?user=bob") as bob:
            assert (await welcome(bob))["members"] == ["alice", "bob"]
            assert await got(alice) == presence("alice", "bob")
            # A second tab of alice: two connections, one member.
            async with client.websocket("/ws/lot?user=alice") as alice2:
                assert (await welcome(alice2))["members"] == ["alice", "bob"]
                assert await got(alice) == presence("alice", "bob")
                assert await got(bob) == presence("alice", "bob")
                rooms = (await client.get("/rooms")).json()
                assert rooms == {"lot": {"members": 3, "local": 3}}
            assert await got(alice) == presence("alice", "bob")
            assert await got(bob) == presence("alice", "bob")
        assert await got(alice) == presence("alice")
        # Someone in another room is no one here.
        async with client.websocket("/ws/elsewhere?user=carol") as carol:
            assert (await welcome(carol))["members"] == ["carol"]
            await alice.send_json({"type": "chat", "text": "alone?"})
            assert (await got(alice))["type"] == "chat"


async def test_accepted_bids_reach_everyone_in_order(autojump_clock):
    async with auction() as client:
        async with client.websocket("/ws/lot?user=alice") as alice:
            await welcome(alice)
            async with client.websocket("/ws/lot?user=bob") as bob:
                await welcome(bob)
                assert await got(alice) == presence("alice", "bob")
                await alice.send_json({"type": "bid", "amount": 10})
                assert await got(alice) == {"type": "bid", "amount": 10, "by": "alice"}
                assert await got(bob) == {"type": "bid", "amount": 10, "by": "alice"}
                await bob.send_json({"type": "bid", "amount": 25})
                assert await got(alice) == {"type": "bid", "amount": 25, "by": "bob"}
                assert await got(bob) == {"type": "bid", "amount": 25, "by": "bob"}
                # A newcomer is welcomed with the high bid.
                async with client.websocket("/ws/lot?user=carol") as carol:
                    assert (await welcome(carol))["high"] == {"amount": 25, "by": "bob"}


async def test_concurrent_bids_are_seen_in_the_same_order_by_everyone(autojump_clock):
    async with auction() as client:
        async with client.websocket("/ws/lot?user=alice") as alice:
            await welcome(alice)
            async with client.websocket("/ws/lot?user=bob") as bob:
                await welcome(bob)
                assert await got(alice) == presence("alice", "bob")
                for amount in (5, 7, 6, 9, 8):
                    await alice.send_json({"type": "bid", "amount": amount})
                    await bob.send_json({"type": "bid", "amount": amount + 1})
                # Whatever was accepted, both see it in the same (increasing) order; what was
                # refused went to its sender only.
                seen: dict[str, list] = {"alice": [], "bob": []}
                for name, ws in (("alice", alice), ("bob", bob)):
                    await ws.send_json({"type": "chat", "text": "done"})
                    while (message := await got(ws))["type"] != "chat":
                        seen[name].append(message)
                accepted = {
                    name: [m for m in messages if m["type"] == "bid"]
                    for name, messages in seen.items()
                }
                assert accepted["alice"] == accepted["bob"][: len(accepted["alice"])]
                amounts = [m["amount"] for m in accepted["bob"]]
                assert amounts == sorted(set(amounts))
                assert amounts[-1] == 10
                refused = sum(m["type"] == "error" for messages in seen.values() for m in messages)
                assert len(amounts) + refused == 10


async def test_a_bid_too_low_is_refused_to_its_sender_only(autojump_clock):
    async with auction() as client:
        async with client.websocket("/ws/lot?user=alice") as alice:
            await welcome(alice)
            async with client.websocket("/ws/lot?user=bob") as bob:
                await welcome(bob)
                assert await got(alice) == presence("alice", "bob")
                await bob.send_json({"type": "bid", "amount": 20})
                assert (await got(alice))["amount"] == 20
                assert (await got(bob))["amount"] == 20
                for amount in (15, 20):  # lower, and equal
                    await alice.send_json({"type": "bid", "amount": amount})
                    assert await got(alice) == {
                        "type": "error",
                        "code": "too_low",
                        "high": 20,
                    }
                await alice.send_json({"type": "chat", "text": "fine"})
                expected = {"type": "chat", "by": "alice", "text": "fine"}
                assert await got(bob) == expected  # nothing before it
                assert await got(alice) == expected


async def test_chat_reaches_everyone_in_the_room(autojump_clock):
    async with auction() as client:
        async with client.websocket("/ws/lot?user=alice") as alice:
            await welcome(alice)
            async with client.websocket("/ws/lot?user=bob") as bob:
                await welcome(bob)
                assert await got(alice) == presence("alice", "bob")
                await bob.send_json({"type": "chat", "text": "hello ✓"})
                expected = {"type": "chat", "by": "bob", "text": "hello ✓"}
                assert await got(alice) == expected
                assert await got(bob) == expected


@pytest.mark.parametrize(
    ("sent", "named"),
    [
        ("{not json", "JSON"),
        (b"\xff\xfe", "JSON"),
        ("[" * 100_000, "expected object"),  # (it used to reach the parser's recursion limit)
        ("[1, 2]", "expected object"),
        ('{"amount": 5}', "type"),
        ('{"type": "shout", "text": "hi"}', "type"),
        ('{"type": "bid", "amount": "ten"}', "$.amount: expected int, got str"),
        ('{"type": "bid", "amount": 5, "by": "me"}', "$.by: unknown field"),
        ('{"type": "bid"}', "amount"),
        ('{"type": "bid", "amount": true}', "amount"),
        ('{"type": "bid", "amount": 0}', "amount"),
        ('{"type": "bid", "amount": -3}', "amount"),
        ('{"type": "bid", "amount": 1.5}', "amount"),
        ('{"type": "bid", "amount": 9007199254740992}', "amount"),
        ('{"type": "chat", "text": ""}', "text"),
        ('{"type": "chat", "text": "   "}', "text"),
        ('{"type": "chat", "text": 42}', "text"),
        (json.dumps({"type": "chat", "text": "x" * 501}), "text"),
    ],
)
async def test_a_bad_message_is_answered_and_the_socket_stays_open(autojump_clock, sent, named):
    async with auction() as client:
        async with client.websocket("/ws/lot?user=alice") as alice:
            await welcome(alice)
            async with client.websocket("/ws/lot?user=bob") as bob:
                await welcome(bob)
                assert await got(alice) == presence("alice", "bob")
                await alice.send(sent)
                error = await got(alice)
                assert error["type"] == "error"
                assert error["code"] == "bad_message"
                assert named in error["detail"]
                await alice.send_json({"type": "bid", "amount": 3})
                assert await got(bob) == {"type": "bid", "amount": 3, "by": "alice"}
                assert await got(alice) == {"type": "bid", "amount": 3, "by": "alice"}


async def test_the_countdown_ticks_each_second_then_sells_and_starts_a_new_lot(autojump_clock):
    async with auction(lot_seconds=4) as client, client.websocket("/ws/lot?user=alice") as alice:
        start = trio.current_time()
        assert (await welcome(alice))["closes_in"] == 4
        for left in (3, 2, 1):
            assert await got(alice) == {"type": "tick", "closes_in": left}
            assert trio.current_time() - start == pytest.approx(4 - left)
        # No bids: sold to nobody; the next lot's length comes at once.
        assert await got(alice) == {"type": "sold", "amount": None, "by": None}
        assert trio.current_time() - start == pytest.approx(4)
        assert await got(alice) == {"type": "tick", "closes_in": 4}
        await alice.send_json({"type": "bid", "amount": 7})
        assert await got(alice) == {"type": "bid", "amount": 7, "by": "alice"}
        for left in (3, 2, 1):
            assert await got(alice) == {"type": "tick", "closes_in": left}
        assert await got(alice) == {"type": "sold", "amount": 7, "by": "alice"}
        assert trio.current_time() - start == pytest.approx(8)
        assert await got(alice) == {"type": "tick", "closes_in": 4}
        # The new lot has no high bid: the smallest bid wins it.
        async with client.websocket("/ws/lot?user=bob") as bob:
            assert (await welcome(bob))["high"] is None
            assert await got(alice) == presence("alice", "bob")
            await bob.send_json({"type": "bid", "amount": 1})
            assert await got(bob) == {"type": "bid", "amount": 1, "by": "bob"}
            assert await got(alice) == {"type": "bid", "amount": 1, "by": "bob"}


async def test_a_bid_as_the_lot_closes_does_not_carry_over(autojump_clock):
    async with auction(lot_seconds=3) as client, client.websocket("/ws/lot?user=alice") as alice:
        opened = trio.current_time()  # the fake clock has not moved since the lot opened
        await welcome(alice)
        # Past the deadline to the millisecond, but before the auctioneer wakes up to sell.
        await trio.sleep_until(opened + 3 - 0.0002)
        await alice.send_json({"type": "bid", "amount": 5})
        for left in (2, 1):
            assert await got(alice) == {"type": "tick", "closes_in": left}
        error = await got(alice)
        assert (error["type"], error["code"]) == ("error", "lot_closed")
        assert await got(alice) == {"type": "sold", "amount": None, "by": None}
        assert await got(alice) == {"type": "tick", "closes_in": 3}
        async with client.websocket("/ws/lot?user=bob") as bob:
            assert (await welcome(bob))["high"] is None


async def test_a_lot_of_a_fraction_of_a_second_counts_whole_seconds(autojump_clock):
    async with auction(lot_seconds=2.5) as client, client.websocket("/ws/lot?user=a") as ws:
        start = trio.current_time()
        assert (await welcome(ws))["closes_in"] == 3  # rounded up
        assert await got(ws) == {"type": "tick", "closes_in": 2}
        assert trio.current_time() - start == pytest.approx(0.5)
        assert await got(ws) == {"type": "tick", "closes_in": 1}
        assert await got(ws) == {"type": "sold", "amount": None, "by": None}
        assert trio.current_time() - start == pytest.approx(2.5)


async def test_a_room_keeps_its_lot_while_members_come_and_go(autojump_clock):
    async with auction(lot_seconds=10) as client:
        async with client.websocket("/ws/lot?user=alice") as alice:
            await welcome(alice)
            await alice.send_json({"type": "bid", "amount": 4})
            assert (await got(alice))["type"] == "bid"
        await trio.sleep(3)  # nobody in the room meanwhile
        async with client.websocket("/ws/lot?user=bob") as bob:
            joined = await welcome(bob)
            assert joined["high"] == {"amount": 4, "by": "alice"}
            assert joined["closes_in"] == 7


async def test_a_rooms_tasks_end_with_its_last_member():
    async with auction() as client:
        await trio.testing.wait_all_tasks_blocked()
        idle = living_tasks()
        for amount in (1, 2):  # (the lot outlives the room's tasks: the bid must rise)
            async with client.websocket("/ws/lot?user=alice") as alice:
                await welcome(alice)
                async with client.websocket("/ws/lot?user=bob") as bob:
                    await welcome(bob)
                    await bob.send_json({"type": "bid", "amount": amount})
                    assert (await got(bob))["type"] == "bid"
                await trio.testing.wait_all_tasks_blocked()
                assert living_tasks() > idle  # alice's connection, the room, its tasks
            await trio.testing.wait_all_tasks_blocked()
            assert living_tasks() == idle
            assert (await client.get("/rooms")).json() == {}


async def test_get_rooms_counts_connections_everywhere_and_here():
    async with auction() as client:
        assert (await client.get("/rooms")).json() == {}
        async with (
            client.websocket("/ws/a?user=alice") as a1,
            client.websocket("/ws/a?user=alice") as a2,
        ):
            await welcome(a1)
            await got(a2)
            async with client.websocket("/ws/b?user=bob") as b:
                await welcome(b)
                response = await client.get("/rooms")
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("application/json")
                assert response.json() == {
                    "a": {"members": 2, "local": 2},
                    "b": {"members": 1, "local": 1},
                }
        await trio.testing.wait_all_tasks_blocked()
        assert (await client.get("/rooms")).json() == {}


async def test_the_page():
    async with auction() as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert 'import { connect } from "/trioweb.js"' in page.text  # the browser client
        assert "/ws/" in page.text
        assert "<script src" not in page.text  # no CDN, no build
        client_js = await client.get("/trioweb.js")
        assert client_js.status_code == 200
        assert client_js.headers["content-type"] == "text/javascript; charset=utf-8"
        assert "export function connect(" in client_js.text


async def test_a_room_name_too_long_is_refused():
    async with auction() as client:
        with pytest.raises(WebSocketDenied) as denied:
            async with client.websocket(f"/ws/{'r' * 101}?user=alice"):
                pass
    assert denied.value.status_code == 400


@pytest.mark.parametrize("seconds", ["0", "-5", "0.5", "nan", "soon"])
def test_a_lot_lasts_at_least_a_second(seconds):
    with pytest.raises(ValueError):
        make_app({"AUCTION_LOT_SECONDS": seconds})


# -- offsets and resume ------------------------------------------------------------------------


async def test_bids_chats_and_sales_carry_increasing_offsets(autojump_clock):
    async with auction(lot_seconds=2) as client, client.websocket("/ws/r?user=alice") as alice:
        first = await alice.receive_json()
        assert "recovered" not in first  # no since: nothing to recover
        await alice.send_json({"type": "bid", "amount": 3})
        await alice.send_json({"type": "chat", "text": "hi"})
        offsets = []
        while len(offsets) < 3:
            message = await alice.receive_json()
            if message["type"] in ("bid", "chat", "sold"):
                offsets.append(int(message["offset"]))
            else:
                assert "offset" not in message  # ticks and presence are not kept
        assert offsets == sorted(set(offsets))


async def test_a_client_that_reconnects_with_since_gets_what_it_missed(autojump_clock):
    async with auction() as client:
        async with client.websocket("/ws/r?user=alice") as alice:
            await welcome(alice)
            await alice.send_json({"type": "chat", "text": "before"})
            seen = (await next_of(alice, "chat"))["offset"]
            async with client.websocket("/ws/r?user=bob") as bob:
                await welcome(bob)
                await bob.send_json({"type": "bid", "amount": 5})
                await bob.send_json({"type": "chat", "text": "while away"})
                await next_of(bob, "chat")
            # alice's second connection stands for her reconnect
            async with client.websocket(f"/ws/r?user=alice&since={seen}") as again:
                hello = await again.receive_json()
                assert hello["type"] == "welcome" and hello["recovered"] is True
                assert hello["high"] == {"amount": 5, "by": "bob"}
                missed = [await next_stored(again), await next_stored(again)]
                assert [m["type"] for m in missed] == ["bid", "chat"]
                assert int(missed[0]["offset"]) > int(seen)
                await again.send_json({"type": "chat", "text": "back"})
                back = await next_stored(again)
                assert back["text"] == "back" and int(back["offset"]) > int(missed[1]["offset"])


async def test_an_offset_too_old_or_unknown_is_not_recovered(autojump_clock):
    client = TestClient(make_app({"AUCTION_LOT_SECONDS": "30", "AUCTION_HISTORY": "3"}))
    async with client, client.websocket("/ws/r?user=alice") as alice:
        await welcome(alice)
        await alice.send_json({"type": "chat", "text": "0"})
        old = (await next_of(alice, "chat"))["offset"]
        for n in range(4):
            await alice.send_json({"type": "chat", "text": str(n)})
            await next_of(alice, "chat")
        for since in (old, "12345", "soon"):
            async with client.websocket(f"/ws/r?user=bob&since={since}") as bob:
                assert (await bob.receive_json())["recovered"] is False


async def next_of(ws, kind: str) -> dict:
    """The next message of type ``kind`` (bounded)."""
    for _ in range(20):
        message = await ws.receive_json()
        if message["type"] == kind:
            return message
    raise AssertionError(f"no {kind!r} in 20 messages")


async def next_stored(ws) -> dict:
    """The next bid, chat or sale (bounded)."""
    for _ in range(20):
        message = await ws.receive_json()
        if "offset" in message:
            return message
    raise AssertionError("no stored message in 20 messages")


# -- the protocol, typed, and its AsyncAPI document ------------------------------------------


async def test_the_asyncapi_document_describes_the_auction():
    schema = json.loads((Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json").read_text())
    async with auction() as client:
        response = await client.get("/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    jsonschema.Draft7Validator(schema).validate(document)
    assert document["asyncapi"].startswith("3.")
    (channel,) = document["channels"].values()
    assert channel["address"] == "/ws/{room}"
    assert set(channel["parameters"]) == {"room"}
    names = set(channel["messages"])
    for kind in ("Bid", "Chat", "Welcome", "Presence", "BidMade", "Said", "Tick", "Sold", "Error"):
        assert kind in names, (kind, names)
    operations = document["operations"]
    received = [m["$ref"].rsplit("/", 1)[1] for m in operations["auction.receive"]["messages"]]
    assert received == ["Bid", "Chat"]
    bid = document["components"]["schemas"]["Bid"]
    assert "amount" in bid["required"]
    assert bid["properties"]["amount"]["type"] == "integer"
