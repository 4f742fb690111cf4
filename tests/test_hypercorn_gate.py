"""The version gate every change to hypercorn goes through (``trioweb/_hypercorn_gate.py``)."""

from __future__ import annotations

import importlib.metadata
import logging

from hypercorn.trio.tcp_server import TCPServer

from trioweb import _hypercorn_gate, _hypercorn_tcp

logger = logging.getLogger("trioweb.test_gate")
WORDING = {"not_applied": "not doing X", "unprotected": "Y is exposed", "module": "trioweb/_x.py"}


def installed() -> str:
    return importlib.metadata.version("hypercorn")


def test_a_verified_release_is_applied_silently(caplog):
    caplog.set_level(logging.WARNING)
    assert _hypercorn_gate.gate(logger, "trioweb's X", frozenset({installed()}), None, **WORDING)
    assert caplog.records == []


def test_another_release_of_the_same_shape_is_applied_with_a_warning(caplog):
    caplog.set_level(logging.WARNING)
    assert _hypercorn_gate.gate(logger, "trioweb's X", frozenset({"0.0.1"}), None, **WORDING)
    (record,) = caplog.records
    assert record.getMessage() == (
        f"hypercorn {installed()} is not a version trioweb's X was verified with (0.0.1); "
        "applying it since the code it replaces has the expected shape. Check whether this "
        "hypercorn still needs it (trioweb/_x.py)"
    )


def test_a_changed_shape_is_not_applied_and_says_what_is_exposed(caplog):
    caplog.set_level(logging.WARNING)
    verified = frozenset({installed()})
    assert not _hypercorn_gate.gate(logger, "trioweb's X", verified, "Z changed", **WORDING)
    (record,) = caplog.records
    assert record.getMessage() == f"hypercorn {installed()}: not doing X (Z changed); Y is exposed"


def test_the_tcp_change_leaves_a_reshaped_server_alone(monkeypatch, caplog):
    # A hypercorn whose TCPServer no longer reads with fail_after and sends under its lock:
    # its methods stay, and one warning says so.
    async def read_data(self: TCPServer) -> None:
        await self.protocol.handle(None)

    async def protocol_send(self: TCPServer, event: object) -> None:
        await self.stream.send_all(b"")

    monkeypatch.setattr(TCPServer, "_read_data", read_data)
    monkeypatch.setattr(TCPServer, "protocol_send", protocol_send)
    caplog.set_level(logging.WARNING)
    assert _hypercorn_tcp.install() is False
    assert TCPServer._read_data is read_data and TCPServer.protocol_send is protocol_send
    assert "keeping its own TCP read and send (TCPServer._read_data no longer uses" in caplog.text
