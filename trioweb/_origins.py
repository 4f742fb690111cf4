"""Which web pages may open a WebSocket: the defence against cross-site WebSocket hijacking.

Browsers send cookies with a WebSocket handshake whatever page starts it, and the same-origin
policy does not apply to WebSockets. A page on evil.example could open a socket to your app
with your user's session. Browsers do send an ``Origin`` header, which a page cannot forge: so
by default trioweb accepts a handshake only when its ``Origin`` names the host it was sent to.
Clients that are not browsers send no ``Origin`` and are not affected.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

__all__ = ["OriginPolicy"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _normalise(origin: str) -> str:
    return origin.strip().lower().rstrip("/")


def _host_and_port(authority: str, scheme: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit(f"//{authority}")
        port = parts.port
    except ValueError:  # "[" and other things no URL has
        return "", None
    return (parts.hostname or ""), port if port is not None else _DEFAULT_PORTS.get(scheme)


class OriginPolicy:
    """Decide whether a handshake's ``Origin`` may connect.

    ``allowed=None`` (the default) means same-origin: the ``Origin``'s host and port must be those
    of the ``Host`` header. Otherwise ``allowed`` lists origins such as
    ``"https://app.example.com"``, shell-style patterns such as ``"https://*.example.com"``, the
    literal ``"null"`` (sandboxed frames, ``file://`` pages), or ``"*"`` for anyone.
    """

    __slots__ = ("_any", "_patterns")

    def __init__(self, allowed: Iterable[str] | None = None) -> None:
        if isinstance(allowed, str):
            raise TypeError("allowed_origins takes a list of origins, not one string")
        self._patterns = None if allowed is None else [_normalise(a) for a in allowed]
        self._any = self._patterns is not None and "*" in self._patterns

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Whether a handshake with this ``Origin`` header, sent to this ``Host``, may connect."""
        if origin is None or self._any:
            return True
        origin = _normalise(origin)
        if self._patterns is not None:
            return any(fnmatchcase(origin, pattern) for pattern in self._patterns)
        if origin == "null" or host is None:
            return False
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
            return False
        origin_host = _host_and_port(parts.netloc, parts.scheme)
        return origin_host[0] != "" and origin_host == _host_and_port(host.lower(), parts.scheme)
