"""Path patterns, converters and the route table.

A pattern such as ``/users/{id:int}/files/{rest:path}`` compiles to a regular expression once,
at decoration time; every mistake in it (an unknown converter, a repeated name, a handler whose
parameters do not fit) is reported there, not on the first request.
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from ._settings import HTTPOptions, WebSocketOptions

__all__ = ["Route", "RouteMatch", "Router", "compile_path"]

_PARAM = re.compile(r"{([^{}:]*)(?::([^{}]*))?}")


@dataclass(frozen=True)
class _Converter:
    regex: str
    convert: Callable[[str], Any]


def _to_float(value: str) -> float:
    return float(value)


CONVERTERS: dict[str, _Converter] = {
    "str": _Converter(r"[^/]+", str),
    "int": _Converter(r"[0-9]+", int),
    "float": _Converter(r"[0-9]+(?:\.[0-9]+)?", _to_float),
    "uuid": _Converter(
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID
    ),
    "path": _Converter(r"(?s:.*)", str),  # the rest of the path, newlines included
}


def compile_path(path: str) -> tuple[re.Pattern[str], dict[str, _Converter]]:
    """Compile a path pattern into a regex and the converter of each parameter."""
    if not path.startswith("/"):
        raise ValueError(f"route path {path!r} must start with '/'")
    regex = "^"
    params: dict[str, _Converter] = {}
    end = 0
    for match in _PARAM.finditer(path):
        name, kind = match.group(1), match.group(2) or "str"
        if not name.isidentifier():
            raise ValueError(f"route {path!r}: parameter name {name!r} is not a Python identifier")
        if kind not in CONVERTERS:
            known = ", ".join(sorted(CONVERTERS))
            raise ValueError(f"route {path!r}: unknown converter {kind!r} (known: {known})")
        if name in params:
            raise ValueError(f"route {path!r}: parameter {name!r} appears twice")
        params[name] = CONVERTERS[kind]
        regex += re.escape(path[end : match.start()]) + f"(?P<{name}>{CONVERTERS[kind].regex})"
        end = match.end()
    rest = path[end:]
    if "{" in rest or "}" in rest:
        raise ValueError(f"route {path!r}: unbalanced '{{' or '}}'")
    regex += re.escape(rest) + r"\Z"  # not "$", which also matches before a final newline
    return re.compile(regex), params


def _is_nursery_param(param: inspect.Parameter) -> bool:
    annotation = param.annotation
    if annotation is trio.Nursery:
        return True
    if isinstance(annotation, str) and annotation.rsplit(".", 1)[-1] == "Nursery":
        return True
    return param.name == "nursery"


@dataclass(frozen=True)
class _HandlerShape:
    """How to call a handler: the name of the parameter that takes the nursery, if any."""

    nursery_param: str | None


def inspect_handler(
    handler: Callable[..., Any], path: str, params: Iterable[str], *, websocket: bool
) -> _HandlerShape:
    """Check at decoration time that ``handler`` can be called for ``path``."""
    if not inspect.iscoroutinefunction(handler) and not inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callables are fine too
    ):
        raise TypeError(f"handler {handler!r} for {path!r} must be an async function")
    where = f"handler {getattr(handler, '__qualname__', handler)!r} for route {path!r}"
    signature = inspect.signature(handler)
    positional = list(signature.parameters.values())
    if not positional or positional[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        first = "WebSocket" if websocket else "Request"
        raise TypeError(f"{where} must take the {first} as its first parameter")
    rest = positional[1:]
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in rest)
    named = {p.name: p for p in rest if p.kind is not inspect.Parameter.VAR_KEYWORD}
    nursery_param = None
    for name, param in named.items():
        if _is_nursery_param(param) and name not in params:
            if not websocket:
                raise TypeError(f"{where}: only WebSocket handlers receive a nursery")
            nursery_param = name
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if name not in params and param.default is inspect.Parameter.empty:
            raise TypeError(
                f"{where} takes parameter {name!r}, which is not in the path "
                f"(path parameters: {', '.join(params) or 'none'})"
            )
    missing = [p for p in params if p not in named]
    if missing and not takes_kwargs:
        raise TypeError(f"{where} does not take path parameter(s) {', '.join(missing)}")
    return _HandlerShape(nursery_param=nursery_param)


@dataclass(eq=False)  # routes are compared and hashed by identity
class Route:
    """One entry of the route table: a pattern, a handler, and what it answers."""

    path: str
    handler: Callable[..., Any]
    #: ``None`` for a WebSocket route, else the HTTP methods it answers.
    methods: frozenset[str] | None
    #: What the route sets for itself (inbox size and the like); ``None`` means the app's.
    options: WebSocketOptions | HTTPOptions | None = None
    regex: re.Pattern[str] = field(init=False)
    converters: dict[str, _Converter] = field(init=False)
    #: The handler parameter that receives the connection's nursery, if it asks for one.
    nursery_param: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.regex, self.converters = compile_path(self.path)
        shape = inspect_handler(
            self.handler, self.path, self.converters, websocket=self.methods is None
        )
        self.nursery_param = shape.nursery_param

    @property
    def is_websocket(self) -> bool:
        """Whether this route answers WebSocket handshakes."""
        return self.methods is None

    def match(self, path: str) -> dict[str, Any] | None:
        """The converted path parameters if ``path`` fits this route, else ``None``."""
        found = self.regex.match(path)
        if found is None:
            return None
        values: dict[str, Any] = {}
        for name, text in found.groupdict().items():
            try:
                values[name] = self.converters[name].convert(text)
            except ValueError:
                return None
        return values


@dataclass(frozen=True)
class RouteMatch:
    """The outcome of a lookup: the route and its parameters, or why there is none."""

    route: Route | None
    params: dict[str, Any]
    #: Methods the path answers, when the path matched but the method did not (for 405).
    allowed: frozenset[str] = frozenset()


class Router:
    """The route table, searched in the order routes were added."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, route: Route) -> None:
        """Append ``route`` to the table."""
        self.routes.append(route)

    def ensure_free(self, path: str) -> None:
        """Raise ``ValueError`` if a route already answers ``GET path`` (the same path, or a
        pattern that matches it): an endpoint added there would never be reached, as the
        first matching route wins."""
        route = self.match_http(path, "GET").route
        if route is not None:
            raise ValueError(f"GET {path} is already served by the app (its route {route.path})")

    def match_websocket(self, path: str) -> RouteMatch:
        """Find the WebSocket route for ``path``."""
        for route in self.routes:
            if route.is_websocket:
                params = route.match(path)
                if params is not None:
                    return RouteMatch(route, params)
        return RouteMatch(None, {})

    def match_http(self, path: str, method: str) -> RouteMatch:
        """Find the HTTP route for ``path`` and ``method``; report allowed methods on a miss."""
        allowed: set[str] = set()
        for route in self.routes:
            if route.methods is None:
                continue
            params = route.match(path)
            if params is None:
                continue
            if method in route.methods:
                return RouteMatch(route, params)
            allowed |= route.methods
        return RouteMatch(None, {}, frozenset(allowed))
