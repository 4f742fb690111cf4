"""Typed messages: what a route declares it receives and sends, compiled once, and what becomes
of a message that does not decode or validate.

A route's ``receives=`` and ``sends=`` are checked and compiled at the decorator into a
:class:`MessageTypes`: one msgspec decoder for the type received, one encoder for the route, and
the classes a send is checked against. The app's and the route's error policy are merged with
it into one frozen :class:`MessagePolicy` per route when the settings are resolved
(``_settings.py``); a :class:`~trioweb.WebSocket` holds that one object. Nothing here is built
per message or per socket: a type asked for explicitly (``ws.iter_typed(Bid)``) gets its decoder
from a bounded cache.

msgspec's errors name the failing place as a JSON path (``Expected `int`, got `str` - at
`$.amount```); :func:`invalid_message` turns them into the detail a person or a client reads:
``$.amount: expected int, got str``.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import msgspec

from ._json import json_text
from .exceptions import InvalidJSONMessage, InvalidMessage

__all__ = [
    "DECODE_ERRORS",
    "ErrorFrame",
    "InvalidMessageReply",
    "InvalidPolicy",
    "MessagePolicy",
    "MessageTypes",
    "Reader",
    "check_policy",
    "default_error_frame",
    "invalid_message",
    "make_policy",
    "reader_for",
    "union_members",
]

#: What the app does with a message that fails to decode or validate.
InvalidPolicy = Literal["close", "reply"]
#: Makes the frame sent back for an invalid message (under ``invalid_messages="reply"``).
ErrorFrame = Callable[[InvalidMessage], Any]

#: What decoding an untrusted message can raise: msgspec's errors (ValidationError is a
#: DecodeError) and, for very deep nesting, RecursionError.
DECODE_ERRORS = (msgspec.DecodeError, RecursionError)

_UNION_ORIGINS = (typing.Union, types.UnionType)


def union_members(tp: Any) -> tuple[Any, ...]:
    """The members of a union type (``Bid | Chat``), or the type alone."""
    if typing.get_origin(tp) in _UNION_ORIGINS or isinstance(tp, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def type_name(tp: Any) -> str:
    """A short name for a type in messages: the class name, or its repr."""
    name = getattr(tp, "__name__", None)
    return name if isinstance(name, str) and typing.get_origin(tp) is None else repr(tp)


def _runtime_classes(tp: Any) -> tuple[type, ...] | None:
    """The classes an instance of ``tp`` may have, for a cheap ``isinstance`` check of sends;
    ``None`` where no class check fits (``Any``)."""
    found: list[type] = []
    for member in union_members(tp):
        origin = typing.get_origin(member)
        if member is Any:
            return None
        if member is None or member is type(None):
            found.append(type(None))
        elif origin is typing.Annotated:
            inner = _runtime_classes(typing.get_args(member)[0])
            if inner is None:
                return None
            found += inner
        elif origin is Literal:
            found += [type(value) for value in typing.get_args(member)]
        elif origin is not None:
            found.append(origin if isinstance(origin, type) else object)
        elif typing.is_typeddict(member):
            found.append(dict)
        elif isinstance(member, type):
            found.append(member)
        else:
            return None
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True, slots=True)
class Reader:
    """How to read one type: its decoder, and its union's tag (for the error's detail)."""

    #: The decoder's bound ``decode``: ``str`` or ``bytes`` in, a value of the type out.
    decode: Callable[[str | bytes], Any]
    #: The JSON path of the tag field of a tagged union (``"$.type"``), if the type is one.
    tag_path: str | None
    #: The tags of the union's members, in order.
    tags: tuple[str | int, ...]


def _make_reader(tp: Any) -> Reader:
    decoder = msgspec.json.Decoder(tp)  # TypeError for a type msgspec cannot decode
    fields: set[str] = set()
    tags: list[str | int] = []
    for member in union_members(tp):
        config = getattr(member, "__struct_config__", None)
        if config is not None and config.tag is not None and config.tag_field is not None:
            fields.add(config.tag_field)
            tags.append(config.tag)
    tag_path = f"$.{next(iter(fields))}" if len(fields) == 1 else None
    return Reader(decoder.decode, tag_path, tuple(tags))


@lru_cache(maxsize=256)
def _cached_reader(tp: Any) -> Reader:
    return _make_reader(tp)


def reader_for(tp: Any) -> Reader:
    """The reader of ``tp``, made once (the last 256 types asked for are kept)."""
    try:
        return _cached_reader(tp)
    except TypeError as exc:
        if "unhashable" in str(exc):  # a type object that cannot be a cache key
            return _make_reader(tp)
        raise


# -- errors ----------------------------------------------------------------------------------

_AT = re.compile(r"^(?P<what>.*) - at `(?P<path>\$.*)`$", re.S)
_FIELD = re.compile(r"^Object (?P<kind>missing required|contains unknown) field `(?P<name>.*)`$")
_BAD_VALUE = re.compile(r"^Invalid value (?P<value>.*)$", re.S)


def _member_path(path: str, name: str) -> str:
    return f"{path}.{name}" if name.isidentifier() else f"{path}[{json_text(name)}]"


def _plain(text: str) -> str:
    """msgspec's wording without its backticks, starting lower case."""
    text = text.replace("`", "")
    return text[:1].lower() + text[1:]


def invalid_message(exc: BaseException, data: str | bytes, reader: Reader) -> InvalidMessage:
    """The :class:`InvalidMessage` for what decoding ``data`` raised."""
    if isinstance(exc, msgspec.ValidationError):
        text = str(exc)
        at = _AT.match(text)
        what, path = (at["what"], at["path"]) if at else (text, "$")
        field = _FIELD.match(what)
        if field is not None:
            path = _member_path(path, field["name"])
            what = (
                "missing required field"
                if field["kind"] == "missing required"
                else ("unknown field")
            )
        elif path == reader.tag_path and (bad := _BAD_VALUE.match(what)) is not None:
            known = ", ".join(repr(tag) for tag in reader.tags)
            what = f"unknown message type {bad['value']} (known: {known})"
        else:
            what = _plain(what)
        return InvalidMessage(f"{path}: {what}", path, data)
    if isinstance(exc, RecursionError):
        return InvalidJSONMessage("invalid JSON: nested too deeply", data)
    text = str(exc).removeprefix("JSON is malformed: ")
    return InvalidJSONMessage(f"invalid JSON: {_plain(text)}", data)


class InvalidMessageReply(msgspec.Struct, tag_field="type", tag="error"):
    """What the app sends back for a message it could not decode or validate, and goes on."""

    #: Always ``"bad_message"``.
    code: str
    #: What was wrong: ``"$.amount: expected int, got str"``.
    detail: str


def default_error_frame(error: InvalidMessage) -> InvalidMessageReply:
    """``{"type": "error", "code": "bad_message", "detail": "$.amount: ..."}``."""
    return InvalidMessageReply(code="bad_message", detail=error.detail)


# -- a route's types and policy -------------------------------------------------------------


class MessageTypes:
    """What one route declares it receives and sends, checked and compiled once."""

    __slots__ = ("encoder", "reader", "receives", "send_classes", "sends")

    def __init__(self, receives: Any = None, sends: Any = None, *, where: str = "") -> None:
        #: The type every message received is decoded as (``None``: not declared).
        self.receives = receives
        #: The type (often a union) of every message sent (``None``: not declared).
        self.sends = sends
        where = f" of {where}" if where else ""
        try:
            self.reader = None if receives is None else _make_reader(receives)
        except TypeError as exc:
            raise TypeError(f"receives={type_name(receives)}{where}: {exc}") from None
        if sends is not None:
            try:
                msgspec.json.schema(sends)  # a type msgspec can encode and describe
            except TypeError as exc:
                raise TypeError(f"sends={type_name(sends)}{where}: {exc}") from None
        #: The classes a message sent must be an instance of (``None``: anything goes).
        self.send_classes = None if sends is None else _runtime_classes(sends)
        #: The route's encoder, for its sends and its error frames.
        self.encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class MessagePolicy:
    """A route's typed messages as a socket uses them: its types, its encoder, and what an
    invalid message does."""

    types: MessageTypes | None
    invalid_messages: InvalidPolicy
    max_invalid_messages: int | None
    error_frame: ErrorFrame
    #: The encoder of the route's sends and error frames: the route's own, made once.
    encoder: msgspec.json.Encoder
    #: The classes ``send_typed`` allows (``None``: any), from ``types``.
    send_classes: tuple[type, ...] | None

    def reader(self, tp: Any) -> Reader:
        """The reader of ``tp``, or of the route's ``receives`` type when ``tp`` is None."""
        if tp is not None:
            return reader_for(tp)
        reader = self.types.reader if self.types is not None else None
        if reader is None:
            raise TypeError(
                "this route declares no receives= type: pass the type to decode as, "
                "e.g. ws.receive_typed(Bid | Chat)"
            )
        return reader

    def encode(self, message: Any) -> str:
        """``message`` as JSON text, after checking it is of a type the route sends.

        (``WebSocket.send_typed`` does the same inline, a frame less per message.)
        """
        classes = self.send_classes
        if classes is not None and not isinstance(message, classes):
            raise self.refused(message)
        try:
            return self.encoder.encode(message).decode()
        except UnicodeEncodeError:
            return self.escaped(message)

    def refused(self, message: Any) -> TypeError:
        """The error of sending ``message``, which is not of a type the route sends."""
        sends = self.types.sends if self.types is not None else None
        return TypeError(
            f"send_typed(): a {type(message).__name__} is not among the types this "
            f"route sends ({type_name(sends)})"
        )

    @staticmethod
    def escaped(message: Any) -> str:
        """``message`` as JSON text with lone surrogates escaped, as ``send_json`` does (the
        UTF-8 msgspec writes cannot hold them)."""
        return json_text(msgspec.to_builtins(message))

    def reply(self, error: InvalidMessage) -> str:
        """The error frame for ``error``, as JSON text."""
        frame = self.error_frame(error)
        try:
            return self.encoder.encode(frame).decode()
        except UnicodeEncodeError:
            return self.escaped(frame)


#: The encoder of the routes that declare no types.
SHARED_ENCODER = msgspec.json.Encoder()
#: The default of ``max_invalid_messages``.
DEFAULT_MAX_INVALID_MESSAGES = 10


def make_policy(
    types: MessageTypes | None,
    invalid_messages: InvalidPolicy,
    max_invalid_messages: int | None,
    error_frame: ErrorFrame,
) -> MessagePolicy:
    """One route's policy."""
    encoder = types.encoder if types is not None else SHARED_ENCODER
    classes = types.send_classes if types is not None else None
    return MessagePolicy(
        types, invalid_messages, max_invalid_messages, error_frame, encoder, classes
    )


def check_policy(invalid_messages: Any, max_invalid_messages: Any) -> None:
    """A ``ValueError`` for a policy that is not one (at the decorator or in ``App(...)``)."""
    if invalid_messages is not None and invalid_messages not in ("close", "reply"):
        raise ValueError(f'invalid_messages must be "close" or "reply", not {invalid_messages!r}')
    if (
        max_invalid_messages is not None
        and max_invalid_messages is not ...
        and (not isinstance(max_invalid_messages, int) or max_invalid_messages < 0)
    ):
        raise ValueError(
            f"max_invalid_messages must be a number >= 0 or None, not {max_invalid_messages!r}"
        )


#: The policy of a socket whose route declares nothing (and of a WebSocket made by hand).
DEFAULT_POLICY = make_policy(None, "close", DEFAULT_MAX_INVALID_MESSAGES, default_error_frame)
