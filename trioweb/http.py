"""HTTP requests and responses."""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import Mapping
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import trio

from ._json import JSON_ERRORS, json_text
from ._scope import ScopeView
from ._types import Receive, Scope, Send
from .datastructures import Headers
from .exceptions import HTTPException

if TYPE_CHECKING:
    from .app import App

__all__ = [
    "ClientDisconnect",
    "FileResponse",
    "HTMLResponse",
    "JSONResponse",
    "PlainTextResponse",
    "RedirectResponse",
    "Request",
    "Response",
    "make_response",
]

DEFAULT_MAX_BODY_SIZE = 1024 * 1024


class ClientDisconnect(Exception):
    """The client went away before its request body was read."""


class Request(ScopeView):
    """An HTTP request, as a handler sees it. The body is read on demand, up to a limit."""

    __slots__ = ("_body", "_receive", "max_body_size")

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        app: App | None = None,
        path_params: Mapping[str, Any] | None = None,
        *,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        super().__init__(scope, app, path_params)
        self._receive = receive
        self._body: bytes | None = None
        #: Bodies larger than this many bytes are refused with 413.
        self.max_body_size = max_body_size

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path}>"

    @property
    def method(self) -> str:
        """The HTTP method, upper case."""
        return str(self.scope.get("method", "GET")).upper()

    async def body(self) -> bytes:
        """The whole request body (413 if it exceeds ``max_body_size``)."""
        if self._body is not None:
            return self._body
        declared = (self.headers.get("content-length") or "").strip()
        # ASCII digits only ("²".isdigit() is true), compared by length before int() so that a
        # thousand-digit value is neither slow nor an error.
        if declared.isascii() and declared.isdigit():
            limit = str(self.max_body_size)
            declared = declared.lstrip("0") or "0"
            if len(declared) > len(limit) or (len(declared) == len(limit) and declared > limit):
                raise HTTPException(
                    413, f"request body over the limit of {self.max_body_size} bytes"
                )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect("client disconnected while sending the body")
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_body_size:
                raise HTTPException(
                    413, f"request body over the limit of {self.max_body_size} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = b"".join(chunks)
        return self._body

    async def text(self) -> str:
        """The body decoded with the request's charset (UTF-8 by default); 400 if it fails."""
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        body = await self.body()
        try:
            return body.decode(charset)
        except (UnicodeError, LookupError, ValueError) as exc:  # bad bytes, or a bad charset
            raise HTTPException(400, f"request body is not valid {charset} text: {exc}") from exc

    async def json(self) -> Any:
        """The body parsed as JSON; malformed JSON is answered with 400."""
        body = await self.body()
        try:
            return json.loads(body)
        except JSON_ERRORS as exc:
            raise HTTPException(400, f"malformed JSON in request body: {exc}") from exc


class Response:
    """An HTTP response with a body held in memory."""

    media_type: str | None = None
    charset = "utf-8"

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
    ) -> None:
        #: The HTTP status.
        self.status_code = status_code
        if media_type is not None:
            self.media_type = media_type
        #: The body, as sent.
        self.body = self.render(content)
        self._headers: list[tuple[str, str]] = list((headers or {}).items())

    def render(self, content: Any) -> bytes:
        """Turn ``content`` into the body bytes."""
        if content is None:
            return b""
        if isinstance(content, bytes):
            return content
        return str(content).encode(self.charset)

    @property
    def headers(self) -> Headers:
        """The response headers, as they will be sent (content type and length included)."""
        headers = list(self._headers)
        present = {k.lower() for k, _ in headers}
        if "content-type" not in present and self.media_type is not None:
            media_type = self.media_type
            if media_type.startswith("text/") or media_type.endswith(("+json", "/json")):
                media_type += f"; charset={self.charset}"
            headers.append(("content-type", media_type))
        if "content-length" not in present and self.status_code not in (204, 304):
            headers.append(("content-length", str(len(self.body))))
        return Headers(headers)

    def set_header(self, name: str, value: str) -> None:
        """Set a response header, replacing one of the same name."""
        self._headers = [(k, v) for k, v in self._headers if k.lower() != name.lower()]
        self._headers.append((name, value))

    def set_cookie(
        self,
        key: str,
        value: str = "",
        *,
        max_age: int | None = None,
        path: str = "/",
        secure: bool = False,
        httponly: bool = True,
        samesite: str | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header."""
        parts = [f"{key}={quote(value)}", f"Path={path}"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if secure:
            parts.append("Secure")
        if httponly:
            parts.append("HttpOnly")
        if samesite:
            parts.append(f"SameSite={samesite}")
        self._headers.append(("set-cookie", "; ".join(parts)))

    async def __call__(self, send: Send, *, head: bool = False) -> None:
        """Send this response over ASGI (``head`` leaves the body out)."""
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.headers.raw}
        )
        await send({"type": "http.response.body", "body": b"" if head else self.body})


class HTMLResponse(Response):
    """A ``text/html`` response."""

    media_type = "text/html"


class PlainTextResponse(Response):
    """A ``text/plain`` response."""

    media_type = "text/plain"


class JSONResponse(Response):
    """A JSON response (``application/json``)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Encode ``content`` as compact UTF-8 JSON."""
        return json_text(content).encode("utf-8")


class RedirectResponse(Response):
    """A redirect to ``url`` (307 by default, which keeps the method and body)."""

    def __init__(
        self, url: str, status_code: int = 307, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(
            b"",
            status_code,
            {**(headers or {}), "location": quote(url, safe=":/%#?=@[]!$&'()*+,;")},
        )


class FileResponse(Response):
    """A file streamed from disk in chunks, without blocking the event loop.

    A missing file is answered with 404.
    """

    chunk_size = 64 * 1024

    def __init__(
        self,
        path: str | os.PathLike[str],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        filename: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if media_type is None:
            media_type = (
                mimetypes.guess_type(filename or self.path)[0] or "application/octet-stream"
            )
        super().__init__(None, status_code, headers, media_type)
        if filename is not None:
            self.set_header(
                "content-disposition", f"attachment; filename*=utf-8''{quote(filename)}"
            )

    async def __call__(self, send: Send, *, head: bool = False) -> None:
        """Stream the file over ASGI."""
        try:
            file = await trio.open_file(self.path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            await PlainTextResponse("file not found", 404)(send, head=head)
            return
        async with file:
            stat = os.fstat(file.fileno())
            headers = [(k, v) for k, v in self.headers.multi_items() if k != "content-length"]
            headers.append(("content-length", str(stat.st_size)))
            if "last-modified" not in self.headers:
                headers.append(("last-modified", formatdate(stat.st_mtime, usegmt=True)))
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": Headers(headers).raw,
                }
            )
            if head:
                await send({"type": "http.response.body", "body": b""})
                return
            while True:
                chunk = await file.read(self.chunk_size)
                more = len(chunk) == self.chunk_size
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    break


def make_response(value: Any) -> Response:
    """Turn what a handler returned into a :class:`Response`.

    ``Response`` as is; ``str`` as HTML; ``bytes`` as ``application/octet-stream``;
    ``dict``/``list`` as JSON; ``None`` as 204; a tuple ``(body, status)`` or
    ``(body, status, headers)``.
    """
    if isinstance(value, Response):
        return value
    if isinstance(value, tuple):
        if len(value) not in (2, 3) or not isinstance(value[1], int):
            raise TypeError(
                "a handler may return (body, status) or (body, status, headers), "
                f"not a tuple of {len(value)}"
            )
        response = make_response(value[0])
        response.status_code = value[1]
        for name, item in (value[2] if len(value) == 3 else {}).items():
            response.set_header(name, item)
        return response
    if value is None:
        return Response(status_code=204)
    if isinstance(value, str):
        return HTMLResponse(value)
    if isinstance(value, bytes):
        return Response(value, media_type="application/octet-stream")
    if isinstance(value, (dict, list)):
        return JSONResponse(value)
    raise TypeError(f"a handler returned {type(value).__name__}, which is not a response")


async def send_http_response(send: Send, response: Response, scope: Scope) -> None:
    """Send ``response`` for ``scope``, leaving the body out for a HEAD request."""
    await response(send, head=scope.get("method") == "HEAD")
