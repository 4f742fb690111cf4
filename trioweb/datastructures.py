"""Read-only views of request data: headers, query parameters, cookies, addresses, state."""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

__all__ = ["Address", "Authorization", "Headers", "QueryParams", "State"]

logger = logging.getLogger("trioweb")


class Address(NamedTuple):
    """A peer's network address."""

    host: str
    port: int


class _MultiMapping(Mapping[str, str]):
    """A read-only mapping that keeps every value of a repeated key, in arrival order."""

    __slots__ = ("_items",)
    _items: list[tuple[str, str]]

    def _key(self, key: str) -> str:
        return key

    def getlist(self, key: str) -> list[str]:
        """Every value of ``key``, in the order they arrived (empty if absent)."""
        key = self._key(key)
        return [v for k, v in self._items if self._key(k) == key]

    def multi_items(self) -> list[tuple[str, str]]:
        """All ``(key, value)`` pairs, repeats included."""
        return list(self._items)

    def __getitem__(self, key: str) -> str:
        key = self._key(key)
        for k, v in self._items:
            if self._key(k) == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for k, _ in self._items:
            folded = self._key(k)
            if folded not in seen:
                seen.add(folded)
                yield k

    def __len__(self) -> int:
        return len({self._key(k) for k, _ in self._items})

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _MultiMapping):
            return type(self) is type(other) and sorted(
                (self._key(k), v) for k, v in self._items
            ) == sorted((other._key(k), v) for k, v in other._items)
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"


class Headers(_MultiMapping):
    """HTTP headers: case-insensitive, multi-valued; ``headers[name]`` is the first value."""

    __slots__ = ()

    def __init__(
        self,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        *,
        raw: Iterable[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if raw is not None:
            self._items = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw]
        elif isinstance(headers, Mapping):
            self._items = list(headers.items())
        else:
            self._items = list(headers or ())

    def _key(self, key: str) -> str:
        return key.lower()

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """The headers as ASGI wants them: lower-case names, latin-1 bytes."""
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self._items]


class QueryParams(_MultiMapping):
    """Query-string parameters; ``params[name]`` is the first value, ``getlist`` gives all."""

    __slots__ = ()

    def __init__(self, query: str | bytes = "") -> None:
        if isinstance(query, bytes):
            query = query.decode("latin-1")
        self._items = parse_qsl(query, keep_blank_values=True)


def parse_cookies(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header leniently, as browsers send it; a bad pair is skipped."""
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies[name] = value
    return cookies


@dataclass(frozen=True)
class Authorization:
    """The ``Authorization`` header, parsed.

    ``scheme`` is lower case (``"basic"``, ``"bearer"``, ...); ``credentials`` is the raw rest.
    Basic gives ``username`` and ``password``; Bearer gives ``token``.
    """

    scheme: str
    credentials: str
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never show secrets in logs
        return f"Authorization(scheme={self.scheme!r}, username={self.username!r})"


def parse_authorization(value: str | None) -> Authorization | None:
    """Parse an ``Authorization`` header; ``None`` when absent or malformed (logged at debug)."""
    if value is None:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    credentials = credentials.strip()
    if not scheme or not credentials:
        logger.debug("malformed Authorization header: no credentials after the scheme")
        return None
    kind = scheme.lower()
    if kind == "basic":
        try:
            decoded = b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            logger.debug("malformed Basic Authorization header: not base64 of UTF-8")
            return None
        username, colon, password = decoded.partition(":")
        if not colon:
            logger.debug("malformed Basic Authorization header: no ':' between user and password")
            return None
        return Authorization(kind, credentials, username=username, password=password)
    if kind == "bearer":
        if " " in credentials:
            logger.debug("malformed Bearer Authorization header: spaces in the token")
            return None
        return Authorization(kind, credentials, token=credentials)
    return Authorization(kind, credentials)


class State:
    """A plain namespace for your own data: ``ws.state.user = ...``."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"State({self.__dict__!r})"
