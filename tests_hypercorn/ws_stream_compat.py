"""pytest plugin: run hypercorn's own WebSocket stream tests against trioweb's stream.

``nox -s hypercorn_compat`` takes ``tests/protocol/test_ws_stream.py`` from hypercorn's sdist
(the file is not kept in this repository) and runs it with ``-p ws_stream_compat``. This plugin
puts :class:`trioweb._ws_stream.WebSocketStream` in the place of ``WSStream`` in
``hypercorn.protocol.ws_stream`` before the test module is imported, so the module's
``from hypercorn.protocol.ws_stream import WSStream`` gets trioweb's stream, and leaves out the
tests listed in :data:`DESELECTED`: each one is about behaviour trioweb changes on purpose, and
each has a replacement in tests/test_ws_stream_unit.py. A listed test that hypercorn's file no
longer has is an error, and so is any other test that fails.
"""

from __future__ import annotations

import gc
import re
import warnings
from collections.abc import Generator

import hypercorn.protocol.ws_stream
import pytest

from trioweb._ws_stream import WebSocketStream

#: The hypercorn test file this plugin is for, relative to the sdist's root.
TEST_FILE = "tests/protocol/test_ws_stream.py"

#: Test name (as in its node id, after ``::``) -> why it is not run against trioweb's stream.
DESELECTED: dict[str, str] = {
    "test_handle_closed": (
        "trioweb's websocket.disconnect carries a 'reason' (the client's Close reason; '' when "
        "TCP ended without a Close frame, as here), hypercorn's has only the code: "
        "replaced by test_stream_closed_without_a_close_frame_is_1006"
    ),
    "test_closure": (
        "same disconnect event with its 'reason' key; the test's point (told exactly once, "
        "however often the stream is closed) is kept by test_app_is_told_exactly_once"
    ),
    "test_pings": (
        "hypercorn sends its first Ping the moment the socket is accepted; trioweb's stream "
        "sends it one interval later (pings are on by default under trioweb, and a Ping as "
        "every socket's first frame is noise): replaced by test_hostile.py::"
        "test_a_live_peer_that_answers_pings_outlives_the_read_timeout"
    ),
}

#: Tests that run and pass but exercise hypercorn classes trioweb's stream does not use, so
#: they say nothing about it: it keeps its message in a ``MessageBuffer`` (not hypercorn's
#: ``WebsocketBuffer``, whose ``FrameTooLargeError`` it never sees) and negotiates its
#: handshake with ``accept_handshake`` (not ``Handshake.accept``). Their counterparts for
#: trioweb's stream are in tests/test_ws_stream_unit.py. Listed so that nobody counts them.
NOT_THE_STREAM: dict[str, str] = {
    "test_buffer": "WebsocketBuffer",
    "test_buffer_frame_too_large": "WebsocketBuffer",
    "test_buffer_mixed_types[data0]": "WebsocketBuffer",
    "test_buffer_mixed_types[data1]": "WebsocketBuffer",
    "test_handshake_accept_http1": "Handshake.accept",
    "test_handshake_accept_http2": "Handshake.accept",
    "test_handshake_accept_additional_headers": "Handshake.accept",
}

#: hypercorn's ``stream`` fixture gives the stream an ``AsyncMock`` task group. At the app's
#: ``websocket.close`` (test_send_connection) trioweb's stream starts its close timer, whose
#: coroutine asyncio's ``SingleTask`` hands to the mock's ``create_task``, which never runs
#: it: two "never awaited" warnings that say nothing about the stream. They come whenever the
#: garbage collector finds the coroutines (at the latest in pytest's own collection at exit,
#: after these filters are gone), so that test ends with a collection under them. The timer
#: itself is tested with a real task group in tests/test_ws_stream_unit.py.
STARTS_A_CLOSE_TIMER = frozenset({"test_send_connection"})
IGNORED_WARNINGS = (
    "coroutine 'WebSocketStream._close_expired' was never awaited",
    "coroutine 'AsyncMockMixin._execute_mock_call' was never awaited",
)

_original = hypercorn.protocol.ws_stream.WSStream


def pytest_configure(config: pytest.Config) -> None:
    """Swap the stream in before any test module is imported."""
    hypercorn.protocol.ws_stream.WSStream = WebSocketStream  # type: ignore[misc]
    for message in IGNORED_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:RuntimeWarning")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """After a test that starts a close timer, collect its garbage once its fixtures are gone,
    with the warnings above off."""
    result = yield
    if item.name not in STARTS_A_CLOSE_TIMER:
        return result
    with warnings.catch_warnings():
        for message in IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message), category=RuntimeWarning)
        gc.collect()
    return result


def pytest_unconfigure(config: pytest.Config) -> None:
    """Put hypercorn's own stream back."""
    hypercorn.protocol.ws_stream.WSStream = _original  # type: ignore[misc]


@pytest.hookimpl(tryfirst=True)  # before -k or -m: the checks see every collected test
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Check that every test uses trioweb's stream, and leave out the listed ones."""
    names = {item.name for item in items}
    missing = sorted((set(DESELECTED) | set(NOT_THE_STREAM) | STARTS_A_CLOSE_TIMER) - names)
    if missing:
        raise pytest.UsageError(
            f"tests_hypercorn/ws_stream_compat.py lists tests that {TEST_FILE} no longer has: "
            + ", ".join(missing)
        )
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and getattr(module, "WSStream", None) is not WebSocketStream:
            raise pytest.UsageError(f"{item.nodeid} does not see trioweb's WebSocketStream")
    kept = [item for item in items if item.name not in DESELECTED]
    deselected = [item for item in items if item.name in DESELECTED]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = kept


def pytest_report_header(config: pytest.Config) -> str:
    """Say which stream the tests run against."""
    return (
        f"hypercorn.protocol.ws_stream.WSStream is {WebSocketStream.__module__}."
        f"{WebSocketStream.__qualname__}; {len(DESELECTED)} tests deselected on purpose, "
        f"{len(NOT_THE_STREAM)} run but exercise hypercorn code the stream does not use"
    )
