"""The AsyncAPI 3.0 document of an app's WebSocket routes (``App.asyncapi()``).

One channel per WebSocket route, its address the route's path (``/ws/{room}``, converters left
out) with a parameter per path parameter. Operations are the app's, as AsyncAPI 3 has it: a
``receive`` operation for the messages the app receives on the channel and a ``send`` operation
for those it sends. Each member of a declared type (``Bid | Chat``) is a message of its own;
their payload schemas come from ``msgspec.json.schema_components`` and are shared under
``components/schemas``. A direction the route declares no type for has one untyped message,
whose payload is any value. Under ``invalid_messages="reply"`` the error frame is among what the
app sends.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import msgspec

from ._settings import WebSocketSettings
from ._typed import MessagePolicy, default_error_frame, type_name, union_members
from .http import JSONResponse, Request
from .routing import Route, Router

__all__ = ["ASYNCAPI_VERSION", "AsyncAPIMethods", "Described", "document", "serve_document"]

F = TypeVar("F", bound=Callable[..., Any])


class Described(Protocol):
    """What the document needs of an app (``App`` is one)."""

    router: Router

    def websocket_settings(self, route: Route | None) -> WebSocketSettings:
        """The resolved settings of ``route``."""
        ...

    #: The ``info`` of the app's document.
    asyncapi_info: dict[str, str]

    def asyncapi(self) -> dict[str, Any]:
        """The app's document, with its own ``info``."""
        ...

    def get(self, path: str, **options: Any) -> Callable[[F], F]:
        """Register a GET handler."""
        ...


class AsyncAPIMethods:
    """The AsyncAPI methods of :class:`~trioweb.App`."""

    def asyncapi(
        self: Described,
        *,
        title: str | None = None,
        version: str | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """The app's WebSocket routes as an AsyncAPI 3.0 document (a dict ready for JSON).

        A channel per route, its ``receive`` and ``send`` operations (the app's side), a
        message per member of its ``receives`` and ``sends`` types, payload schemas from msgspec
        (an untyped message where a route declares none). ``info`` is ``app.asyncapi_info``
        with the ``title``, ``version`` and ``description`` given here over it. See
        docs/typed.md; ``trioweb asyncapi MODULE:APP`` prints the same document.
        """
        given = {"title": title, "version": version, "description": description}
        info = {**self.asyncapi_info, **{k: v for k, v in given.items() if v is not None}}
        routes = [
            (route, self.websocket_settings(route).messages)
            for route in self.router.routes
            if route.is_websocket
        ]
        return document(routes, info)

    def serve_asyncapi(
        self: Described,
        path: str = "/asyncapi.json",
        *,
        title: str | None = None,
        version: str | None = None,
        description: str | None = None,
    ) -> None:
        """Serve :meth:`asyncapi`'s document at ``path`` (GET), as JSON; ``title``, ``version``
        and ``description`` go into ``app.asyncapi_info``, for every document of the app."""
        given = {"title": title, "version": version, "description": description}
        self.asyncapi_info.update({k: v for k, v in given.items() if v is not None})
        serve_document(self, path)


def serve_document(app: Described, path: str) -> None:
    """Serve ``app.asyncapi()`` at ``path``: made on the first request, and again only once
    routes have been added."""
    made: list[Any] = [None, -1]  # the document, and how many routes it describes

    async def asyncapi_document(request: Request) -> JSONResponse:
        routes = len(app.router.routes)
        if made[1] != routes:
            made[:] = [app.asyncapi(), routes]
        return JSONResponse(made[0])

    app.get(path)(asyncapi_document)


ASYNCAPI_VERSION = "3.0.0"
_SCHEMAS = "#/components/schemas/"
#: The message of a direction a route declares no type for.
UNTYPED = "Untyped"
_UNTYPED_MESSAGE = {
    "name": UNTYPED,
    "summary": "Any message: the route declares no type for this direction.",
    "payload": {},
}
_NOT_AN_ID = re.compile(r"[^\w.-]")
_CONVERTER = re.compile(r"{([^{}:]*)(?::[^{}]*)?}")
_KINDS = {"str": "a string", "int": "an integer", "float": "a number", "uuid": "a UUID"}


def _id(text: str) -> str:
    return _NOT_AN_ID.sub("_", text) or "_"


def _unique(name: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    if name not in taken:
        return name
    n = 2
    while f"{name}_{n}" in taken:
        n += 1
    return f"{name}_{n}"


def _summary(obj: Any) -> str | None:
    """The first paragraph of ``obj``'s own docstring, on one line."""
    doc = inspect.getdoc(obj) if obj is not None else None
    if not doc or (isinstance(obj, type) and "__doc__" not in vars(obj)):
        return None
    return " ".join(doc.split("\n\n", 1)[0].split())


def _error_frame_type(policy: MessagePolicy) -> Any:
    """The type of the error frame a route replies with: the default's, or what a custom
    ``error_frame`` says it returns (``None``: not said)."""
    if policy.error_frame is default_error_frame:
        return typing.get_type_hints(default_error_frame)["return"]
    try:
        hints = typing.get_type_hints(policy.error_frame)
    except Exception:  # annotations that do not resolve: the frame stays untyped
        return None
    returned = hints.get("return")
    return None if returned in (None, Any) else returned


def _fix_discriminators(schema: Any) -> Any:
    """msgspec writes OpenAPI's ``discriminator`` object; AsyncAPI's is the property's name."""
    if isinstance(schema, dict):
        out = {key: _fix_discriminators(value) for key, value in schema.items()}
        found = out.get("discriminator")
        if isinstance(found, dict) and "propertyName" in found:
            out["discriminator"] = found["propertyName"]
        return out
    if isinstance(schema, list):
        return [_fix_discriminators(item) for item in schema]
    return schema


def document(routes: Iterable[tuple[Route, MessagePolicy]], info: dict[str, str]) -> dict[str, Any]:
    """The AsyncAPI document of ``routes`` (each with its resolved policy)."""
    plan: list[tuple[Route, list[Any] | None, list[Any] | None]] = []
    members: list[Any] = []
    for route, policy in routes:
        declared = policy.types
        received = sent = None
        if declared is not None and declared.receives is not None:
            received = list(union_members(declared.receives))
        if declared is not None and declared.sends is not None:
            sent = list(union_members(declared.sends))
        if policy.invalid_messages == "reply":
            frame = _error_frame_type(policy)
            sent = [*(sent or [None]), *union_members(frame)] if frame is not None else sent
        plan.append((route, received, sent))
        members += [m for m in (received or []) + (sent or []) if m is not None]
    unique: list[Any] = list(dict.fromkeys(members))
    schemas, components = (
        msgspec.json.schema_components(unique, ref_template=_SCHEMAS + "{name}")
        if unique
        else ((), {})
    )
    # One component message per type, named after its schema (or the type).
    message_ids: dict[Any, str] = {}
    messages: dict[str, Any] = {}
    for member, schema in zip(unique, schemas, strict=True):
        ref = schema.get("$ref", "") if isinstance(schema, dict) else ""
        name = _unique(
            _id(ref.removeprefix(_SCHEMAS) if ref.startswith(_SCHEMAS) else type_name(member)),
            [*messages, UNTYPED],
        )
        message_ids[member] = name
        message: dict[str, Any] = {"name": name, "payload": _fix_discriminators(schema)}
        if (summary := _summary(member)) is not None:
            message["summary"] = summary
        messages[name] = message

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for route, received, sent in plan:
        handler = route.handler
        channel_id = _unique(_id(getattr(handler, "__name__", "") or route.path), channels)
        address = _CONVERTER.sub(lambda m: "{" + m.group(1) + "}", route.path)
        directions = {"receive": received, "send": sent}
        used: dict[str, None] = {}
        for kinds in directions.values():
            for member in kinds if kinds is not None else [None]:
                used[message_ids[member] if member is not None else UNTYPED] = None
        channel: dict[str, Any] = {
            "address": address,
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in used},
        }
        if route.converters:
            channel["parameters"] = {
                name: {"description": f"path parameter {name!r}, {_KINDS.get(kind, 'a path')}"}
                for name, kind in _converter_names(route.path)
            }
        if (summary := _summary(handler)) is not None:
            channel["description"] = summary
        channels[channel_id] = channel
        for action, kinds in directions.items():
            names = dict.fromkeys(
                message_ids[m] if m is not None else UNTYPED
                for m in (kinds if kinds is not None else [None])
            )
            operations[f"{channel_id}.{action}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "messages": [{"$ref": f"#/channels/{channel_id}/messages/{n}"} for n in names],
            }
    if any(UNTYPED in channel["messages"] for channel in channels.values()):
        messages[UNTYPED] = dict(_UNTYPED_MESSAGE)
    doc: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": dict(info),
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
    }
    if messages or components:
        doc["components"] = {
            "schemas": {name: _fix_discriminators(s) for name, s in components.items()},
            "messages": messages,
        }
    return doc


def _converter_names(path: str) -> list[tuple[str, str]]:
    return [
        (m.group(1), (m.group(0)[1:-1].partition(":")[2] or "str"))
        for m in _CONVERTER.finditer(path)
    ]
