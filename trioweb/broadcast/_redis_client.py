"""What both Redis users (the broadcast hub's backend and the rooms' store) need of a broker
connection: its URL checked and redacted, the errors that mean "unreachable", and one owner
task for a coredis client."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import coredis
import trio
from coredis.exceptions import RedisError

from .._failures import leaves
from .errors import BrokerUnavailable

__all__ = [
    "BROKER_ERRORS",
    "SCHEMES",
    "check_url",
    "describe",
    "is_outage",
    "ping",
    "redact",
    "run_client",
]

logger = logging.getLogger("trioweb.broadcast")

SCHEMES = ("redis", "rediss", "unix")
#: Errors that mean "the broker is not reachable right now", never a bug of ours.
BROKER_ERRORS = (RedisError, OSError, TimeoutError, trio.TooSlowError)


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def check_url(url: str) -> str:
    """Return ``url`` if it names a Redis server coredis can reach, else raise ``ValueError``."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            f"unsupported broker URL {redact(url)!r}: use redis://host:port/db, "
            "rediss:// (TLS) or unix:///path/to/socket"
        )
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"broker URL {redact(url)!r} names no socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"broker URL {redact(url)!r} names no host")
    return url


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` (a group: every error in it) says the broker is unreachable, and nothing
    else: a cancellation alongside is fine, any other error is a bug, not an outage."""
    errors = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
    return bool(errors) and all(isinstance(e, BROKER_ERRORS) for e in errors)


def describe(exc: BaseException) -> str:
    leaf = next((e for e in leaves(exc) if not isinstance(e, trio.Cancelled)), exc)
    return f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__


async def run_client(
    url: str,
    *,
    what: str,
    connect_timeout: float,
    serve: Callable[[coredis.Redis[bytes], Callable[[], None]], Awaitable[None]],
    task_status: trio.TaskStatus[None],
) -> None:
    """Own a coredis client of ``url`` for as long as ``serve(client, started)`` runs.

    The broker is checked with a PING first; ``serve`` calls ``started()`` once it is ready.
    Before that, a broker out of reach raises :class:`BrokerUnavailable` naming ``what``, in one
    line. coredis wraps what is raised inside its blocks in ExceptionGroups, and its teardown
    can raise when cancelled at shutdown (ClosedResourceError from its push-message reader):
    only the cancellation goes on then.
    """
    client: coredis.Redis[bytes] = coredis.Redis.from_url(url, decode_responses=False)
    started = False

    def report_started() -> None:
        nonlocal started
        started = True
        task_status.started()

    try:
        async with client:
            with trio.fail_after(connect_timeout):
                await client.ping()
            await serve(client, report_started)
    except BaseException as exc:
        if started:
            if isinstance(exc, BaseExceptionGroup):
                cancelled, noise = exc.split(trio.Cancelled)
                if cancelled is not None:
                    if noise is not None:
                        logger.debug("broker client teardown: %s", describe(noise))
                    raise cancelled from None
            raise
        if not any(isinstance(e, BROKER_ERRORS) for e in leaves(exc)):
            raise
        failure = _unreachable_because(exc, connect_timeout)
    raise BrokerUnavailable(f"cannot reach {what} at {redact(url)} ({failure})")


def _unreachable_because(exc: BaseException, connect_timeout: float) -> str:
    """Why the broker is out of reach, in a few words: the socket's own reason ("Connection
    refused"), found under coredis's wrappers, rather than its generic message."""
    for leaf in leaves(exc):
        if isinstance(leaf, trio.TooSlowError):
            return f"no answer within {connect_timeout:g} s"
        cause: BaseException | None = leaf
        for _ in range(8):  # a cause chain is short; a cycle must not loop
            if cause is None:
                break
            if isinstance(cause, OSError) and isinstance(cause.errno, int):
                return os.strerror(cause.errno)
            cause = cause.__cause__ or cause.__context__
    return describe(exc)


async def ping(client: coredis.Redis[bytes] | None) -> str | None:
    """``None`` if ``client``'s broker answers a PING, else why not (the readiness check of
    both Redis users; the caller bounds the wait)."""
    if client is None:
        await trio.lowlevel.checkpoint()
        return "not connected"
    try:
        await client.ping()
    except BROKER_ERRORS as exc:
        return describe(exc)
    return None
