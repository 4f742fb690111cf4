"""The auction's wire protocol, declared once: what a client sends and what the server sends.

Tagged unions on ``"type"``: msgspec decodes and validates a message in one step, an invalid
one gets ``{"type": "error", "code": "bad_message", "detail": "$.amount: ..."}``, and the app
describes them all in its AsyncAPI document (``GET /asyncapi.json``).
"""

from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

MAX_AMOUNT = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER: the page reads it exactly

# -- what a client sends ----------------------------------------------------------------


class Bid(Struct, tag_field="type", tag="bid", forbid_unknown_fields=True):
    """A bid on the lot on sale (``bool`` is not an ``int`` here)."""

    amount: Annotated[int, Meta(gt=0, le=MAX_AMOUNT)]


class Chat(Struct, tag_field="type", tag="chat", forbid_unknown_fields=True):
    """Something said to the room (some non-blank text)."""

    text: Annotated[str, Meta(max_length=500, pattern=r"\S")]


# -- what the server sends --------------------------------------------------------------


class High(Struct):
    amount: int
    by: str


class Welcome(Struct, tag_field="type", tag="welcome", omit_defaults=True):
    """First, on join. ``recovered`` only with ``?since=``: true if all missed bids, chats
    and sales follow."""

    you: str
    members: list[str]
    high: High | None
    closes_in: int
    recovered: bool | None = None


class Presence(Struct, tag_field="type", tag="presence"):
    members: list[str]


class Tick(Struct, tag_field="type", tag="tick"):
    closes_in: int


# Kept in the room's history: the room puts each one's "offset" first.
class BidMade(Struct, tag_field="type", tag="bid", omit_defaults=True):
    amount: int
    by: str
    offset: str | None = None


class Said(Struct, tag_field="type", tag="chat", omit_defaults=True):
    by: str
    text: str
    offset: str | None = None


class Sold(Struct, tag_field="type", tag="sold", omit_defaults=True):
    amount: int | None
    by: str | None
    offset: str | None = None


class Error(Struct, tag_field="type", tag="error", omit_defaults=True):
    code: str
    high: int | None = None
    detail: str | None = None


Sent = Welcome | Presence | Tick | BidMade | Said | Sold | Error


def wire(message: Struct) -> dict[str, Any]:
    """A message as the room's publish and history take it."""
    return msgspec.to_builtins(message)  # type: ignore[no-any-return]
