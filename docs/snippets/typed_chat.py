import msgspec

from trioweb import App, WebSocket

# --8<-- [start:messages]


# What clients send: a tagged union, told apart by the "type" field of each message.
class Say(msgspec.Struct, tag_field="type", tag="say", forbid_unknown_fields=True):
    """Say something to the room."""

    text: str


class Typing(msgspec.Struct, tag_field="type", tag="typing"):
    """The sender started or stopped typing."""

    active: bool


# What the app sends.
class Said(msgspec.Struct, tag_field="type", tag="said"):
    """Someone said something."""

    user: str
    text: str


class IsTyping(msgspec.Struct, tag_field="type", tag="is_typing"):
    """Someone started or stopped typing."""

    user: str
    active: bool


# --8<-- [end:messages]
# --8<-- [start:route]
app = App()
app.serve_asyncapi("/asyncapi.json", title="Chat", version="1.0.0")


@app.websocket(
    "/chat/{user}",
    receives=Say | Typing,
    sends=Said | IsTyping,
    invalid_messages="reply",  # tell the sender what was wrong, and go on
    max_invalid_messages=5,  # the sixth invalid message closes the socket with 1008
)
async def chat(ws: WebSocket, user: str) -> None:
    """One user in the chat (a chat of one: a real one would publish to a hub)."""
    async for msg in ws.iter_typed():
        match msg:
            case Say(text=text):
                await ws.send_typed(Said(user, text))
            case Typing(active=active):
                await ws.send_typed(IsTyping(user, active))


# --8<-- [end:route]
