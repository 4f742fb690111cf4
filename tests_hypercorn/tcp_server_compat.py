"""pytest plugin: run hypercorn's own tests of its trio TCP server with trioweb's read and send.

``nox -s hypercorn_compat`` takes ``tests/trio/test_keep_alive.py`` and
``tests/trio/test_sanity.py`` from hypercorn's sdist (not kept in this repository) and runs them
with ``-p tcp_server_compat``. This plugin replaces ``TCPServer._read_data`` and
``TCPServer.protocol_send`` with trioweb's (``trioweb/_hypercorn_tcp.py``) before any test
runs, checks that they are in place, and leaves out the one test listed in :data:`DESELECTED`,
which fails on unpatched hypercorn too. A listed test that hypercorn's files no longer have is
an error, and so is any other test that fails.
"""

from __future__ import annotations

import pytest
from hypercorn.trio.tcp_server import TCPServer

from trioweb import _hypercorn_tcp

#: The hypercorn test files this plugin is for, relative to the sdist's root.
TEST_FILES = ("tests/trio/test_keep_alive.py", "tests/trio/test_sanity.py")

#: Test name -> why it is not run.
DESELECTED: dict[str, str] = {
    "test_http2_websocket": (
        "fails on unpatched hypercorn 0.18.0 too: h2 4.4 refuses the test client's extended "
        "CONNECT (docs/hypercorn.md, 'The patch for hypercorn')"
    ),
}

_original = (TCPServer._read_data, TCPServer.protocol_send)


def pytest_configure(config: pytest.Config) -> None:
    """Replace the two methods before any test runs."""
    if not _hypercorn_tcp.install():
        raise pytest.UsageError("trioweb's TCP read and send were not installed")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Put hypercorn's own methods back."""
    TCPServer._read_data, TCPServer.protocol_send = _original  # type: ignore[method-assign]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Check the listed test still exists, and leave it out."""
    missing = sorted(set(DESELECTED) - {item.name for item in items})
    if missing:
        raise pytest.UsageError(
            f"tests_hypercorn/tcp_server_compat.py lists tests hypercorn no longer has: {missing}"
        )
    if TCPServer._read_data is not _hypercorn_tcp._read_data:
        raise pytest.UsageError("hypercorn's TCPServer does not use trioweb's read")
    deselected = [item for item in items if item.name in DESELECTED]
    config.hook.pytest_deselected(items=deselected)
    items[:] = [item for item in items if item.name not in DESELECTED]


def pytest_report_header(config: pytest.Config) -> str:
    """Say what the tests run against."""
    return (
        "hypercorn's trio TCPServer reads and sends with trioweb/_hypercorn_tcp.py; "
        f"{len(DESELECTED)} test deselected (it fails on unpatched hypercorn too)"
    )
