"""The browser client, ``trioweb/static/client.js``, as an HTTP route (``App.serve_client``).

One small ES module, read once from the package and answered from memory, with an ETag: pages
revalidate it on each load (``Cache-Control: no-cache``) and get a 304 while it has not changed,
so an upgraded trioweb reaches them at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from importlib.resources import files

from .http import Request, Response

__all__ = ["CLIENT_MEDIA_TYPE", "client_handler", "client_source"]

#: The media type of JavaScript (RFC 9239); ``Response`` adds ``; charset=utf-8``.
CLIENT_MEDIA_TYPE = "text/javascript"


def client_source() -> bytes:
    """The module's text, as shipped inside the package."""
    return files("trioweb").joinpath("static", "client.js").read_bytes()


def client_handler() -> Callable[[Request], Awaitable[Response]]:
    """A GET handler that answers with the client module, or 304 for the copy a page has."""
    body = client_source()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"etag": etag, "cache-control": "no-cache"}

    async def trioweb_client_js(request: Request) -> Response:
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        return Response(body, headers=headers, media_type=CLIENT_MEDIA_TYPE)

    # As ``trioweb routes`` lists it (a closure's own qualname says "<locals>").
    trioweb_client_js.__qualname__ = "serve_client"
    trioweb_client_js.__module__ = "trioweb"
    return trioweb_client_js


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weakly, as RFC 9110 says for GET)."""
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags
