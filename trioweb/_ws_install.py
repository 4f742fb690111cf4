"""Putting trioweb's WebSocket stream (``_ws_stream.py``) in place of hypercorn's, version-gated
and shape-checked: hypercorn's HTTP/1 and HTTP/2 protocols create the stream class their module
names ``WSStream``; :func:`install` points that name at :class:`WebSocketStream` if hypercorn's
stream still has the methods the subclass overrides, with the signatures it was written
against (a warning and hypercorn's own stream otherwise).
"""

from __future__ import annotations

import inspect
import logging

import hypercorn.protocol.h2
import hypercorn.protocol.h11
from hypercorn.protocol.ws_stream import WSStream

from ._hypercorn_gate import gate
from ._ws_stream import WebSocketStream

__all__ = ["VERIFIED_VERSIONS", "install"]

logger = logging.getLogger("trioweb._ws_stream")

#: hypercorn releases whose ``WSStream`` trioweb's stream was read and tested against.
VERIFIED_VERSIONS = frozenset({"0.18.0"})

_PROTOCOL_MODULES = (hypercorn.protocol.h11, hypercorn.protocol.h2)


def _shape_problem() -> str | None:
    """Why hypercorn's stream is not what this one was written against, or None."""
    for module in _PROTOCOL_MODULES:
        current = getattr(module, "WSStream", None)
        if current is not WSStream and current is not WebSocketStream:
            return f"{module.__name__} no longer creates hypercorn's WSStream"
    expected = {
        "handle": ["self", "event"],
        "app_send": ["self", "message"],
        "_handle_events": ["self"],
        "_accept": ["self", "message"],
        "_send_wsproto_event": ["self", "event"],
        "_send_pings": ["self"],
    }
    for name, parameters in expected.items():
        method = getattr(WSStream, name, None)
        if method is None or not inspect.iscoroutinefunction(method):
            return f"WSStream.{name} is not a coroutine method any more"
        if list(inspect.signature(method).parameters) != parameters:
            return f"WSStream.{name} no longer takes {parameters}"
    init = list(inspect.signature(WSStream.__init__).parameters)
    if init[:2] != ["self", "app"] or "stream_id" not in init:
        return "WSStream.__init__ has a new signature"
    return None


def install() -> bool:
    """Make hypercorn's HTTP/1 and HTTP/2 protocols create :class:`WebSocketStream`; return
    whether it is in place. Idempotent."""
    if not gate(
        logger,
        "trioweb's WebSocket stream",
        VERIFIED_VERSIONS,
        _shape_problem(),
        not_applied="not installing trioweb's WebSocket stream",
        unprotected="oversize messages, deflate bombs and protocol errors are then handled by "
        "hypercorn's own",
        module="trioweb/_ws_stream.py",
    ):
        return False
    for module in _PROTOCOL_MODULES:
        module.WSStream = WebSocketStream  # type: ignore[attr-defined]
    return True
