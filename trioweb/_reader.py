"""The tasks a socket may need beside its handler: the reader, or the idle watcher.

Neither runs when the server hands messages over directly and reports the end itself
(trioweb's stream, ``_types.DIRECT_DELIVERY``) and no idle timeout is set: then the handler's
task is the socket's only one. Otherwise the session starts one of them in the connection's
nursery:

- :func:`read_loop`, the reader, where the server does not hand messages over (another server,
  a middleware that wraps receive(), a test client with ``direct_delivery=False``): the only
  caller of ASGI receive(), draining it without pause into the connection (see
  ``_connection.py`` for why it never waits), until the disconnect, which it reports.
- :func:`watch_silence`, where the server hands everything over but an idle timeout is set:
  it only waits for the timeout's deadline, which every message pushes back.

Both keep the idle timeout in one cancel scope, ``connection.silence``, for the socket's life:
a message moves its deadline, so a busy socket costs no timer per message.
"""

from __future__ import annotations

import trio

from ._connection import Connection
from ._types import CLOSED_BY_SERVER, Message, Receive
from .close_codes import CloseCode

__all__ = ["read_loop", "watch_silence"]


async def read_loop(connection: Connection, receive: Receive) -> None:
    """Drain ASGI receive() into ``connection`` until the client disconnects."""
    idle = connection.idle_timeout
    if idle is None:
        while _take_event(connection, await receive()):
            pass
        return
    # The loop is written twice rather than inside a null context manager, which would stay
    # on this task's stack for the socket's whole life.
    # Every message pushes the deadline back (``Connection.deliver``).
    silence = connection.silence = trio.CancelScope(deadline=trio.current_time() + idle)
    with silence:
        while _take_event(connection, await receive()):
            pass
        return
    if silence.cancelled_caught:
        _went_idle(connection)


def _take_event(connection: Connection, message: Message) -> bool:
    """One ASGI event from the server; ``False`` once it is the disconnect."""
    kind = message["type"]
    if kind == "websocket.receive":
        data: str | bytes | None = message.get("text")
        connection.deliver(data if data is not None else message.get("bytes") or b"")
    elif kind == "websocket.disconnect":
        connection.disconnected(
            int(message.get("code") or CloseCode.NO_STATUS_RECEIVED),
            message.get("reason") or "",
            bool(message.get(CLOSED_BY_SERVER)),
        )
        return False
    return True


async def watch_silence(connection: Connection) -> None:
    """The idle timeout where no reader runs: wait for a deadline that every message handed
    over pushes back (``Connection.deliver``)."""
    idle = connection.idle_timeout
    assert idle is not None
    silence = connection.silence = trio.CancelScope(deadline=trio.current_time() + idle)
    with silence:
        await trio.sleep_forever()
    if silence.cancelled_caught:
        _went_idle(connection)


def _went_idle(connection: Connection) -> None:
    """The idle timeout passed with no message: close, unless the socket is closed already."""
    if not connection.phase.closed:
        # 1000, not a shutdown's 1001 (reconnecting on it would defeat the timeout).
        reason = f"idle for more than {connection.idle_timeout:g} s"
        connection.shut_down(CloseCode.NORMAL, reason)
