"""hypercorn's per-connection TCP server, without the trio work that does nothing
(docs/hypercorn.md, fact 25).

hypercorn 0.18's trio ``TCPServer`` (``hypercorn/trio/tcp_server.py``) pays for two things on
every read and every write of every connection, HTTP and WebSocket alike:

- ``_read_data`` wraps each ``receive_some`` in ``trio.fail_after(config.read_timeout or inf)``.
  With no read timeout (hypercorn's default, and trioweb's), that is a cancel scope with an
  infinite deadline, built, entered and left around every read, that can never fire.
- ``protocol_send`` takes ``send_lock`` with ``async with``. trio's ``Lock.acquire`` is a full
  checkpoint, so it yields to the scheduler even when the lock is free. The shielded
  ``send_all`` inside yields once more, so every write costs two trips through trio's run
  loop.

Counted in instructions under callgrind on trioweb's benchmark server, they are about a tenth
of a WebSocket handshake (one message echoed, then a close) and a fifth of each echoed message:
more than the whole framework costs. docs/performance.md has the figures.

:func:`install` replaces the two methods with ones that do the same thing without that waste:

- With ``read_timeout`` unset (or 0, which hypercorn also reads as no timeout), a read is not
  wrapped at all; with it set, it is wrapped exactly as hypercorn wraps it, and a silent peer
  is still dropped after that long.
- A send first checks for cancellation, as the lock's ``acquire`` did, so a sender that is
  cancelled still sends nothing. It then takes the lock at once when it is free, and waits for
  it in trio's FIFO order when it is not. The shielded ``send_all`` is kept, so every write
  to an open socket still yields once (it stays a checkpoint; on a socket already shut, it
  no longer yields at all, where hypercorn's yielded once in the lock) and a cancellation
  still never cuts a frame in half. A send that meets the connection's close (``_close()``'s
  ``send_eof``, which hypercorn's yield in the lock let finish first) is a closed
  connection, as it was, not a ``BusyResourceError``. ``Closed`` and ``Updated`` events go
  to hypercorn's own method.

hypercorn's own tests of its trio server (``tests/trio/test_keep_alive.py`` and
``test_sanity.py`` in its sdist) run against the replaced methods in ``nox -s
hypercorn_compat``; ``tests/test_hypercorn_tcp.py`` checks the read timeout, the ordering of
sends from several tasks and a cancelled sender over a real server. Upstream, the same change
is ``patches/hypercorn-tcp-server.patch``; remove this module once the hypercorn trioweb
requires has it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.events import Closed, Event, RawData
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

from ._hypercorn_gate import code_names, gate

__all__ = ["VERIFIED_VERSIONS", "install"]

logger = logging.getLogger(__name__)

#: hypercorn releases whose ``TCPServer`` was read and tested against this change.
VERIFIED_VERSIONS = frozenset({"0.18.0"})

_MARKER = "__trioweb_tcp__"
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)
# Under the send lock, the only other sender is _close()'s send_eof, which holds the send
# side across a checkpoint: a send that meets it finds its connection closing. hypercorn's
# lock yielded first, and the send then found the socket closed; this one is told the same.
_SEND_ERRORS = (*_STREAM_ERRORS, trio.BusyResourceError)


async def _read_data(self: TCPServer) -> None:
    """hypercorn's read loop, with no timeout scope around a read when there is no timeout."""
    timeout = self.config.read_timeout
    receive_some = self.stream.receive_some
    while True:
        try:
            if not timeout:  # None or 0: no timeout (hypercorn reads it as ``or inf``)
                data = await receive_some(MAX_RECV)
            else:
                with trio.fail_after(timeout):
                    data = await receive_some(MAX_RECV)
        except (*_STREAM_ERRORS, trio.TooSlowError):
            break
        await self.protocol.handle(RawData(bytes(data)))
        if data == b"":
            break
    await self.protocol.handle(Closed())


_Send = Callable[[TCPServer, Event], Awaitable[None]]


def _send(original: _Send) -> _Send:
    async def protocol_send(self: TCPServer, event: Event) -> None:
        """hypercorn's send: the bytes go out whole, one writer at a time, and the call is a
        checkpoint; it yields once (in ``send_all``), not twice."""
        if type(event) is not RawData:
            return await original(self, event)
        await trio.lowlevel.checkpoint_if_cancelled()  # what the lock's acquire checked
        lock = self.send_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            with trio.CancelScope(shield=True):
                await self.stream.send_all(event.data)
        except _SEND_ERRORS:
            await self.protocol.handle(Closed())
        finally:
            lock.release()

    setattr(protocol_send, _MARKER, True)
    return protocol_send


def _shape_problem() -> str | None:
    """Why hypercorn's ``TCPServer`` is not what this change was written for, or None."""
    expected = {
        "_read_data": (["self"], {"fail_after", "read_timeout", "receive_some", "handle"}),
        "protocol_send": (["self", "event"], {"send_lock", "CancelScope", "send_all", "RawData"}),
    }
    for name, (parameters, names) in expected.items():
        method = getattr(TCPServer, name, None)
        if getattr(method, _MARKER, False):
            continue
        if not inspect.iscoroutinefunction(method):
            return f"TCPServer.{name} is not a coroutine method any more"
        if list(inspect.signature(method).parameters) != parameters:
            return f"TCPServer.{name} no longer takes {parameters}"
        if missing := names - code_names(method):
            return f"TCPServer.{name} no longer uses {', '.join(sorted(missing))}"
    if not {"send_lock", "Lock"} <= code_names(TCPServer.__init__):
        return "TCPServer no longer has a send lock"
    return None


def install() -> bool:
    """Replace the two methods of hypercorn's trio ``TCPServer``; return whether they are.

    Idempotent. With a hypercorn release not in :data:`VERIFIED_VERSIONS` they are still
    replaced if hypercorn's have the expected shape, with a warning asking someone to check;
    if the shape has changed, hypercorn's own stay, and a warning says so.
    """
    if getattr(TCPServer.protocol_send, _MARKER, False):
        return True
    if not gate(
        logger,
        "trioweb's TCP read and send",
        VERIFIED_VERSIONS,
        _shape_problem(),
        not_applied="keeping its own TCP read and send",
        unprotected="everything works, each read and write only costs more",
        module="trioweb/_hypercorn_tcp.py",
    ):
        return False
    TCPServer._read_data = _read_data  # type: ignore[method-assign]
    TCPServer.protocol_send = _send(TCPServer.protocol_send)  # type: ignore[method-assign, assignment]
    return True
