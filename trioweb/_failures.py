"""Sorting out how a scope ended: the errors to report and the control exceptions to obey.

trio wraps every error that leaves a nursery in an ``ExceptionGroup``; a handler's single
``abort(401)`` arrives as a group nested two deep. These helpers look at the leaves and never
unwrap a group of several errors into one of them.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

import trio

from .exceptions import WebSocketDisconnect


def _protocol_errors() -> tuple[type[Exception], ...]:
    found: list[type[Exception]] = []
    for module, name in [
        ("h11", "LocalProtocolError"),
        ("wsproto.utilities", "LocalProtocolError"),
        ("h2.exceptions", "ProtocolError"),
    ]:
        with contextlib.suppress(ImportError, AttributeError):
            found.append(getattr(importlib.import_module(module), name))
    return tuple(found)


#: What the server's protocol libraries raise when a peer has broken the protocol: the peer's
#: doing, not a bug of the app's.
PROTOCOL_ERRORS = _protocol_errors()


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """Every exception inside ``exc``, groups flattened."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def sort_failure(
    failure: BaseException | None, controls: tuple[type[Exception], ...]
) -> tuple[list[Exception], list[Exception]]:
    """Split ``failure`` into (real errors, control exceptions of the ``controls`` types).

    ``trio.Cancelled`` is dropped: a cancellation of our own scope never gets here, and one from
    outside (the server's graceful timeout) is raised again by the next checkpoint. A failure
    made only of cancellations is re-raised as is. ``WebSocketDisconnect`` is dropped: it ends a
    connection quietly. Anything that is not an ``Exception`` (``KeyboardInterrupt``,
    ``SystemExit``) re-raises the whole failure.
    """
    sorted_out = classify(failure, controls)
    if sorted_out is None:
        assert failure is not None
        raise failure
    return sorted_out


def classify(
    failure: BaseException | None, controls: tuple[type[Exception], ...]
) -> tuple[list[Exception], list[Exception]] | None:
    """Like :func:`sort_failure`, but return ``None`` where that would re-raise."""
    errors: list[Exception] = []
    found: list[Exception] = []
    if failure is None:
        return errors, found
    remaining = [leaf for leaf in leaves(failure) if not isinstance(leaf, trio.Cancelled)]
    if not remaining or not all(isinstance(leaf, Exception) for leaf in remaining):
        return None
    for leaf in remaining:
        if isinstance(leaf, WebSocketDisconnect):
            continue
        (found if isinstance(leaf, controls) else errors).append(leaf)  # type: ignore[arg-type]
    return errors, found
