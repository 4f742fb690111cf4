"""What an HTTP request and a WebSocket handshake have in common: the data of the ASGI scope."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._types import Scope
from .datastructures import (
    Address,
    Authorization,
    Headers,
    QueryParams,
    State,
    parse_authorization,
    parse_cookies,
)

if TYPE_CHECKING:
    from .app import App

__all__ = ["ScopeView"]


class ScopeView:
    """Read-only accessors over an ASGI scope, parsed on first use."""

    __slots__ = ("_cookies", "_headers", "_query_params", "_state", "app", "path_params", "scope")

    def __init__(self, scope: Scope, app: App | None = None, path_params: Any = None) -> None:
        #: The raw ASGI scope.
        self.scope = scope
        #: The :class:`~trioweb.App` handling this request, if any.
        self.app = app
        #: The converted path parameters of the matched route.
        # The router's dict is made for this match alone: kept as it is, not copied.
        self.path_params: dict[str, Any] = (
            path_params if type(path_params) is dict else dict(path_params or {})
        )
        self._headers: Headers | None = None
        self._query_params: QueryParams | None = None
        self._cookies: dict[str, str] | None = None
        self._state: State | None = None

    @property
    def path(self) -> str:
        """The request path, percent-decoded, without the query string."""
        return str(self.scope.get("path", "/"))

    @property
    def scheme(self) -> str:
        """``http``/``https`` for a request, ``ws``/``wss`` for a WebSocket."""
        return str(self.scope.get("scheme", "http"))

    @property
    def query_string(self) -> bytes:
        """The raw query string."""
        return bytes(self.scope.get("query_string", b""))

    @property
    def url(self) -> str:
        """The full URL the client asked for, rebuilt from the scope."""
        server = self.scope.get("server")
        host = self.headers.get("host")
        if host is None and server:
            host = f"{server[0]}:{server[1]}"
        query = self.query_string.decode("latin-1")
        return f"{self.scheme}://{host or 'localhost'}{self.path}" + (f"?{query}" if query else "")

    @property
    def headers(self) -> Headers:
        """The request headers, case-insensitive and multi-valued."""
        if self._headers is None:
            self._headers = Headers(raw=self.scope.get("headers", ()))
        return self._headers

    @property
    def query_params(self) -> QueryParams:
        """The parsed query string."""
        if self._query_params is None:
            self._query_params = QueryParams(self.query_string)
        return self._query_params

    @property
    def cookies(self) -> dict[str, str]:
        """Cookies sent by the client."""
        if self._cookies is None:
            self._cookies = parse_cookies("; ".join(self.headers.getlist("cookie")))
        return self._cookies

    @property
    def authorization(self) -> Authorization | None:
        """The ``Authorization`` header, parsed (``None`` if absent or malformed)."""
        return parse_authorization(self.headers.get("authorization"))

    @property
    def client(self) -> Address | None:
        """The client's host and port, when the server knows them."""
        client = self.scope.get("client")
        return Address(client[0], client[1]) if client else None

    @property
    def state(self) -> State:
        """A namespace of your own for this request or connection."""
        if self._state is None:
            self._state = State()
        return self._state
