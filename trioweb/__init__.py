"""trioweb: a trio-native web framework for WebSockets, where every connection is a nursery."""

from ._deflate import Compression
from .app import App
from .close_codes import CloseCode
from .datastructures import Address, Authorization, Headers, QueryParams, State
from .exceptions import (
    HTTPException,
    InvalidJSONMessage,
    InvalidMessage,
    UnexpectedMessageType,
    WebSocketClose,
    WebSocketDisconnect,
    abort,
)
from .http import (
    ClientDisconnect,
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Request,
    Response,
)
from .nursery import AppNursery, ConnectionNursery
from .server import BackgroundTaskError, StartupError, serve
from .websocket import WebSocket

__version__ = "0.1.0"

__all__ = [
    "Address",
    "App",
    "AppNursery",
    "Authorization",
    "BackgroundTaskError",
    "ClientDisconnect",
    "CloseCode",
    "Compression",
    "ConnectionNursery",
    "FileResponse",
    "HTMLResponse",
    "HTTPException",
    "Headers",
    "InvalidJSONMessage",
    "InvalidMessage",
    "JSONResponse",
    "PlainTextResponse",
    "QueryParams",
    "RedirectResponse",
    "Request",
    "Response",
    "StartupError",
    "State",
    "UnexpectedMessageType",
    "WebSocket",
    "WebSocketClose",
    "WebSocketDisconnect",
    "abort",
    "serve",
]
