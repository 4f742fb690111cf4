"""pytest plugin, registered through an entry point: a ``client`` fixture for your ``app``.

Define an ``app`` fixture returning your :class:`~trioweb.App` and take ``client`` in a trio
test (pytest-trio) to get a running :class:`~trioweb.testing.TestClient`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from .testing import TestClient


@pytest.fixture
async def client(app: Any) -> AsyncIterator[TestClient]:
    """A :class:`~trioweb.testing.TestClient` around your ``app`` fixture, lifespan running."""
    async with TestClient(app) as test_client:
        yield test_client
