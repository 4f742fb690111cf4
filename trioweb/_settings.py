"""Route options as typed values, and the settings of a WebSocket route resolved once.

A route states only what it overrides (:class:`WebSocketOptions`, :class:`HTTPOptions`); the
app holds the defaults. :func:`resolve` merges them, with the app's hooks and error handlers,
into one frozen :class:`WebSocketSettings` per route: what the socket runtime reads, so that it
never reaches into the app. The app resolves them when it starts and keeps them fixed while it
runs (changing a limit then is an error that says so); a misspelled option is a ``TypeError``
at the decorator, not a silent fallback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import EllipsisType, MappingProxyType
from typing import Any, Literal, get_args

from ._deflate import Compression
from ._origins import OriginPolicy
from ._typed import (
    ErrorFrame,
    InvalidPolicy,
    MessagePolicy,
    MessageTypes,
    check_policy,
    default_error_frame,
    make_policy,
)

__all__ = [
    "FIXED_WHILE_SERVING",
    "BrowserDenials",
    "ErrorHandler",
    "HTTPOptions",
    "Hook",
    "WebSocketDefaults",
    "WebSocketOptions",
    "WebSocketSettings",
    "check_browser_denials",
    "check_limits",
    "find_errorhandler",
    "resolve",
    "websocket_options",
]

#: The settings fixed while the app serves (set them in ``App(...)`` or on the route).
FIXED_WHILE_SERVING = frozenset(
    {
        "inbox_size",
        "max_message_size",
        "max_connections",
        "idle_timeout",
        "origin_policy",
        "compression",
        "close_timeout",
        "after_hook_timeout",
        "max_body_size",
        "browser_denials",
        "invalid_messages",
        "max_invalid_messages",
        "error_frame",
    }
)

Hook = Callable[[Any], Awaitable[Any]]
ErrorHandler = Callable[[Any, Any], Awaitable[Any]]

#: How a browser learns that its handshake was refused with a 4xx status: an HTTP response
#: (which browsers hide from pages: they see close code 1006), or an accept followed at once by
#: a close with code ``4000 + status`` and the denial's text as the reason. Handshakes without
#: an ``Origin`` header (clients that are not browsers) always get the HTTP response.
BrowserDenials = Literal["http", "close"]


def check_browser_denials(value: object) -> None:
    """``ValueError`` unless ``value`` is one of :data:`BrowserDenials`' values."""
    if value not in get_args(BrowserDenials):
        raise ValueError(f"browser_denials must be 'http' or 'close', not {value!r}")


@dataclass(frozen=True, slots=True)
class WebSocketOptions:
    """What one WebSocket route sets for itself; ``None`` (``...`` for compression, where
    ``None`` means off) leaves the app's setting."""

    inbox_size: int | None = None
    max_message_size: int | None = None
    max_connections: int | None = None
    idle_timeout: float | None = None
    origin_policy: OriginPolicy | None = None
    compression: Compression | EllipsisType | None = ...
    browser_denials: BrowserDenials | None = None
    #: The route's own message types (``receives=``, ``sends=``), compiled once.
    messages: MessageTypes | None = None
    invalid_messages: InvalidPolicy | None = None
    #: ``...`` leaves the app's (``None`` means no limit).
    max_invalid_messages: int | EllipsisType | None = ...
    error_frame: ErrorFrame | None = None


def websocket_options(
    path: str, *, receives: Any = None, sends: Any = None, **options: Any
) -> WebSocketOptions:
    """A route's options, its policy checked and its message types compiled (at the
    decorator, where a mistake is reported)."""
    check_policy(options.get("invalid_messages"), options.get("max_invalid_messages"))
    types = None
    if receives is not None or sends is not None:
        types = MessageTypes(receives, sends, where=f"route {path!r}")
    return WebSocketOptions(messages=types, **options)


@dataclass(frozen=True, slots=True)
class HTTPOptions:
    """What one HTTP route sets for itself; ``None`` leaves the app's setting."""

    max_body_size: int | None = None


@dataclass(frozen=True, slots=True)
class WebSocketDefaults:
    """The app's WebSocket settings, which routes override."""

    inbox_size: int
    max_message_size: int
    max_connections: int | None
    idle_timeout: float | None
    origin_policy: OriginPolicy
    compression: Compression | None
    close_timeout: float
    after_hook_timeout: float
    invalid_messages: InvalidPolicy
    max_invalid_messages: int | None
    error_frame: ErrorFrame | None
    browser_denials: BrowserDenials = "http"


@dataclass(frozen=True, slots=True)
class WebSocketSettings:
    """Everything the runtime needs to serve one WebSocket route."""

    inbox_size: int
    max_message_size: int
    idle_timeout: float | None
    compression: Compression | None
    close_timeout: float
    origin_policy: OriginPolicy
    #: Open sockets allowed on this route (``None``: no limit of its own).
    max_connections: int | None
    #: Open sockets allowed in the whole app (``None``: no limit).
    app_max_connections: int | None
    before_websocket: tuple[Hook, ...]
    after_websocket: tuple[Hook, ...]
    after_hook_timeout: float
    errorhandlers: Mapping[type[BaseException], ErrorHandler]
    #: The route's message types and what an invalid message does, for its sockets.
    messages: MessagePolicy
    #: How a 4xx denial reaches a browser (see :data:`BrowserDenials`).
    browser_denials: BrowserDenials = "http"


def resolve(
    defaults: WebSocketDefaults,
    options: WebSocketOptions | None,
    *,
    before_websocket: tuple[Hook, ...],
    after_websocket: tuple[Hook, ...],
    errorhandlers: Mapping[type[BaseException], ErrorHandler],
) -> WebSocketSettings:
    """A route's settings: its own options over the app's defaults (``options=None`` for the
    handshakes that match no route)."""
    own = options if options is not None else WebSocketOptions()
    return WebSocketSettings(
        inbox_size=_first(own.inbox_size, defaults.inbox_size),
        max_message_size=_first(own.max_message_size, defaults.max_message_size),
        idle_timeout=_first(own.idle_timeout, defaults.idle_timeout),
        compression=defaults.compression if own.compression is ... else own.compression,
        close_timeout=defaults.close_timeout,
        origin_policy=_first(own.origin_policy, defaults.origin_policy),
        max_connections=own.max_connections,
        app_max_connections=defaults.max_connections,
        before_websocket=before_websocket,
        after_websocket=after_websocket,
        after_hook_timeout=defaults.after_hook_timeout,
        errorhandlers=MappingProxyType(dict(errorhandlers)),
        browser_denials=_first(own.browser_denials, defaults.browser_denials),
        messages=make_policy(
            own.messages,
            _first(own.invalid_messages, defaults.invalid_messages),
            defaults.max_invalid_messages
            if own.max_invalid_messages is ...
            else own.max_invalid_messages,
            own.error_frame or defaults.error_frame or default_error_frame,
        ),
    )


def _first(value: Any, default: Any) -> Any:
    return default if value is None else value


def find_errorhandler(
    handlers: Mapping[type[BaseException], ErrorHandler], exc: BaseException
) -> ErrorHandler | None:
    """The handler registered for ``exc``'s class or its nearest base class, if any."""
    for kind in type(exc).__mro__:
        handler = handlers.get(kind)
        if handler is not None:
            return handler
    return None


def check_limits(
    inbox_size: int | None,
    max_message_size: int | None,
    max_connections: int | None,
    idle_timeout: float | None,
) -> None:
    """A ``ValueError`` for a limit that is not one."""
    for name, value in [
        ("inbox_size", inbox_size),
        ("max_message_size", max_message_size),
        ("max_connections", max_connections),
    ]:
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError(f"idle_timeout must be positive, not {idle_timeout}")
