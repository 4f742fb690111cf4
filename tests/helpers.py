"""Helpers shared by the tests."""

from __future__ import annotations

from typing import Any

import pytest

from trioweb.testing import WebSocketClosed


async def closed_with(ws: Any) -> WebSocketClosed:
    """Read from a test socket until the app closes it; return how it closed."""
    with pytest.raises(WebSocketClosed) as closed:
        while True:
            await ws.receive()
    return closed.value
