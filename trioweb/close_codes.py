"""WebSocket close codes: every code RFC 6455 and the IANA registry define, by name."""

from __future__ import annotations

import enum

__all__ = ["CloseCode", "check_close_code"]


class CloseCode(enum.IntEnum):
    """A WebSocket close code. Members are ints: use them wherever a code is taken.

    1004, 1005, 1006 and 1015 are never sent: they describe what happened (reserved, no code
    given, the connection dropped, the TLS handshake failed). Applications use 3000-4999.
    """

    #: 1000: the purpose of the connection was fulfilled.
    NORMAL = 1000
    #: 1001: the endpoint is going away (a server shutting down, a page closed).
    GOING_AWAY = 1001
    #: 1002: a protocol error.
    PROTOCOL_ERROR = 1002
    #: 1003: a type of data the endpoint cannot accept (text where bytes were expected...).
    UNSUPPORTED_DATA = 1003
    #: 1004: reserved.
    RESERVED = 1004
    #: 1005: no status code was present (never sent).
    NO_STATUS_RECEIVED = 1005
    #: 1006: the connection dropped without a close frame (never sent).
    ABNORMAL_CLOSURE = 1006
    #: 1007: data inconsistent with the message type (invalid UTF-8, invalid JSON).
    INVALID_PAYLOAD = 1007
    #: 1008: a message that violates the endpoint's policy.
    POLICY_VIOLATION = 1008
    #: 1009: a message too big to process.
    MESSAGE_TOO_BIG = 1009
    #: 1010: the client expected the server to negotiate an extension.
    MANDATORY_EXTENSION = 1010
    #: 1011: the server hit an unexpected condition.
    INTERNAL_ERROR = 1011
    #: 1012: the service is restarting.
    SERVICE_RESTART = 1012
    #: 1013: try again later (the server is overloaded, or the client too slow).
    TRY_AGAIN_LATER = 1013
    #: 1014: a gateway or proxy got an invalid response upstream.
    BAD_GATEWAY = 1014
    #: 1015: the TLS handshake failed (never sent).
    TLS_HANDSHAKE = 1015

    # The names RFC 6455 and other libraries use, as aliases.
    NORMAL_CLOSURE = 1000
    NO_STATUS_RCVD = 1005
    INVALID_FRAME_PAYLOAD_DATA = 1007
    MANDATORY_EXT = 1010

    @property
    def sendable(self) -> bool:
        """Whether an endpoint may put this code in a close frame."""
        return is_sendable(self)


def is_sendable(code: int) -> bool:
    """Whether an endpoint may put ``code`` in a close frame."""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def as_close_code(code: int) -> int:
    """``code`` as a :class:`CloseCode` member when it has a name, else the plain int."""
    try:
        return CloseCode(code)
    except ValueError:
        return int(code)


def check_close_code(code: int) -> int:
    """Return ``code`` if an endpoint may send it in a close frame, else raise ``ValueError``."""
    if not isinstance(code, int) or isinstance(code, bool):
        raise TypeError(f"close code must be an int, not {type(code).__name__}")
    if is_sendable(code):
        return as_close_code(code)
    raise ValueError(
        f"{int(code)} is not a close code an endpoint may send "
        "(use 1000-1003, 1007-1014 or 3000-4999)"
    )
