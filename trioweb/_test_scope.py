"""The ASGI scopes of the in-process test client: the target, the headers, the WebSocket scope.

A scope is what a server would build from the request line and headers it read; the test
client builds it from the arguments of ``TestClient.websocket()`` and ``TestClient.request()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = ["raw_headers", "split_target", "websocket_scope"]


def split_target(path: str) -> tuple[str, bytes, bytes]:
    """The decoded path, the raw path and the query string of a request target."""
    if not path.startswith("/"):
        raise ValueError(f"test client paths start with '/', not {path!r}")
    # By hand, not urlsplit: a target such as "//host/x" is a path here, not a network location.
    path = path.partition("#")[0]
    raw_path, _, query = path.partition("?")
    return unquote(raw_path), raw_path.encode(), query.encode()


def raw_headers(headers: Mapping[str, str] | None, defaults: dict[str, str]) -> list[Any]:
    """``defaults`` overridden by ``headers`` (names case-insensitive), as ASGI's raw pairs."""
    merged = {**defaults, **{k.lower(): v for k, v in (headers or {}).items()}}
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()]


def websocket_scope(
    path: str,
    subprotocols: list[str] | None,
    headers: Mapping[str, str] | None,
    host: str,
    client: tuple[str, int],
    state: dict[str, Any],
    extensions: dict[str, Any],
) -> dict[str, Any]:
    """The scope of a WebSocket handshake for ``path``, as hypercorn would build it."""
    decoded, raw_path, query = split_target(path)
    defaults = {
        "host": host,
        "connection": "upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
    }
    if subprotocols:
        defaults["sec-websocket-protocol"] = ", ".join(subprotocols)
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": decoded,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": raw_headers(headers, defaults),
        "client": client,
        "server": ("testserver", 80),
        "subprotocols": list(subprotocols or []),
        "state": dict(state),
        "extensions": extensions,
    }
