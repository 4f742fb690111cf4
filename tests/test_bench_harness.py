"""The benchmark harness works: a seconds-long run of it, and its report from made-up numbers.

No number is checked against a target here: on a shared CI machine timings mean nothing. The
run proves that every scenario runs against trioweb and the bare ASGI app (the peers only when
installed) and that the table, the JSON and the docs section come out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import apps, report, runner  # noqa: E402

#: Several server processes or the benchmark harness: `nox -s long` (or `pytest -m long`).
pytestmark = pytest.mark.long


def test_smoke_run_covers_trioweb_and_the_bare_app(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--smoke",
            "--servers",
            "trioweb",
            "--no-docs",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["servers"] == ["bare", "trioweb"]  # the bare app comes along by itself
    assert results["failures"] == []
    medians = results["medians"]
    for name in ("bare", "trioweb"):
        for key in (
            "echo16.msgs_s",
            "echo16k.p99_ms",
            "handshakes.per_s",
            "memory.kib_per_socket",
            "memory_plain1k.kib_per_socket",
            "memory_browser.kib_per_socket",
            "fanout.deliveries_s",
            "fanout.lag_p50_ms",
        ):
            assert medians[name][key] > 0, (name, key)
        # The browser-like clients really negotiated deflate, and the echoes came compressed.
        assert medians[name]["memory_browser.negotiated"] == 1, name
        assert medians[name]["memory_browser.compressed"] == 1, name
        # CPU times over windows this short may read 0: present is all that is asked.
        for key in (
            "echo16.server_cpu",
            "echo16.client_cpu",
            "scale.echo.4.us_per_msg",
            "scale.fanout.10.us_per_delivery",
        ):
            assert medians[name][key] >= 0, (name, key)
    assert medians["trioweb"]["testclient.round_trips_s"] > 0
    # hypercorn's own stream answers with context takeover; trioweb's (installed as
    # trioweb.serve installs it) without, by default.
    assert results["extensions"]["bare"] == "permessage-deflate; client_max_window_bits=15"
    assert "server_no_context_takeover" in results["extensions"]["trioweb"]
    assert "| echo 16 B, msg/s" in proc.stdout  # the table went to stdout
    assert "round 1/1" in proc.stderr  # and the progress to stderr
    assert (out / "results.md").read_text().startswith("Medians over 1 round(s)")


def test_the_typed_messages_comparison_runs_every_part(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--typed", "--smoke", "--no-docs", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "typed.json").read_text())
    assert results["failures"] == []
    for row in ("decode", "testclient", "server_us", "server_rate"):
        for side in ("typed", "hand"):
            assert results["summary"][row][side] > 0, (row, side)
    assert "| decode + validate + dispatch, no I/O |" in proc.stdout


def test_missing_peers_are_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(apps, "OPTIONAL", {**apps.OPTIONAL, "starlette": "no_such_module_here"})
    assert not apps.available("starlette")
    assert apps.available("trioweb")
    assert apps.available("bare")


def test_the_rounds_alternate_the_servers() -> None:
    names = ["bare", "trioweb", "starlette"]
    orders = [runner.rotate(names, r) for r in range(3)]
    assert [order[0] for order in orders] == names  # each server goes first once


def fake_results() -> dict[str, object]:
    def server(scale: float) -> dict[str, float]:
        return {
            "echo16.msgs_s": 10000 * scale,
            "echo16.p50_ms": 4.0,
            "echo16.p99_ms": 9.0,
            "echo16.server_cpu": 1.0,
            "echo16.client_cpu": 0.12,
            "echo16k.msgs_s": 8000 * scale,
            "echo16k.p50_ms": 5.0,
            "echo16k.p99_ms": 11.0,
            "handshakes.per_s": 1400 * scale,
            "memory.kib_per_socket": 20 / scale,
            "fanout.deliveries_s": 25000 * scale,
            "fanout.lag_p50_ms": 40.0,
            "fanout.lag_max_ms": 45.0,
            "scale.echo.10.us_per_msg": 75 / scale,
            "scale.fanout.100.us_per_delivery": 35 / scale,
        }

    medians = {
        "bare": server(1.0),
        "trioweb": {**server(0.97), "testclient.round_trips_s": 30000.0},
        "quart-trio": {**server(0.6), "testclient.round_trips_s": 35000.0},
    }
    plan = runner.asdict(
        runner.replace(runner.PLANS["quick"], scale_echo=(10,), scale_fanout=(100,))
    )
    return {
        "plan": plan,
        "servers": ["bare", "trioweb", "quart-trio"],
        "medians": medians,
        "targets": report.targets(medians),
        "machine": runner.machine(),
        "pinning": {"server": [1], "clients": [0]},
        "client_backend": ["picows"],
        "clients": 1,
        "seconds": 42.0,
        "skipped": ["starlette"],
    }


def test_targets_are_judged_from_the_medians() -> None:
    results = fake_results()
    met = {t["target"]: t["met"] for t in results["targets"]}  # type: ignore[attr-defined]
    assert met["echo 16 B throughput vs bare ASGI"] is True  # 0.97x
    assert met["echo 16 B throughput vs quart-trio"] is True
    assert met["handshakes/s vs bare ASGI"] is True
    assert met["test client round trips/s vs quart-trio's"] is False  # 0.86x
    memory = next(t for t in results["targets"] if "memory" in t["target"])  # type: ignore[attr-defined]
    assert memory["value"] == pytest.approx(20 / 0.97 - 20)


def test_table_and_docs_section(tmp_path: Path) -> None:
    results = fake_results()
    text = report.table(results)
    assert "| echo 16 B, msg/s (50 sockets) | 10,000 | 9,700 (0.97x) | 6,000 (0.60x) |" in text
    assert "not measured" not in text.split("Targets")[0]
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\nMethod.\n\n{report.START}\nold\n{report.END}\n\nAfter.\n")
    written = report.update_docs(results, tmp_path)
    body = page.read_text()
    assert page in written
    assert "Method." in body and "After." in body and "old" not in body
    assert "Not installed, so not measured: starlette." in body
    assert body.count(report.START) == 1


def test_the_client_deflates_as_a_browser() -> None:
    from benchmarks import client

    deflate = client.Deflate("permessage-deflate; client_max_window_bits=12")
    assert (deflate.client_bits, deflate.server_bits) == (12, 15)
    assert deflate.client_takeover and deflate.server_takeover
    (first, second) = client.json_messages(2, 1024, 1)
    assert len(first) == len(second) == 1024 and first != second
    assert json.loads(first)["type"] == "trades"
    # What the client sends, a server inflates (here, the client's own inflater).
    peer = client.Deflate("permessage-deflate; server_max_window_bits=12")
    wire = [deflate.compress(first), deflate.compress(second)]
    assert [peer.inflate(data) for data in wire] == [first, second]
    assert len(wire[1]) < len(wire[0]) < 1024  # context takeover: the second costs less
    assert deflate.sent == [2048, sum(map(len, wire))]
    fresh = client.Deflate("permessage-deflate; client_no_context_takeover")
    assert fresh.compress(second) != wire[1] and fresh.deflater is None


def test_server_names_carry_a_setting_and_a_tree() -> None:
    assert apps.framework("trioweb+takeover-12@base") == "trioweb"
    assert apps.framework("bare") == "bare"
    assert report.label("trioweb@base") == "trioweb (base)"
    assert report.label("trioweb+takeover") == "trioweb, Compression(context_takeover=True)"
    assert runner.COMPRESSION_SERVERS[0] == "bare"


def test_compression_table(tmp_path: Path) -> None:
    def server(kib: float, rate: float) -> dict[str, float]:
        return {
            "memory.kib_per_socket": kib,
            "echo.msgs_s": rate,
            "echo.us_per_msg": 1e6 / rate,
            "echo.p50_ms": 4.0,
            "echo.p99_ms": 9.0,
            "echo.server_cpu": 1.0,
            "echo.client_cpu": 0.2,
            "echo.received_ratio": 0.5,
        }

    medians = {
        "bare": server(90.0, 7000),
        "trioweb+off": server(16.0, 9000),
        "trioweb+default": server(17.0, 6000),
    }
    results = {
        "plan": runner.asdict(runner.PLANS["quick"]),
        "servers": ["bare", "trioweb+off", "trioweb+default"],
        "medians": medians,
        "extensions": {"bare": "permessage-deflate; client_max_window_bits=15"},
        "client_backend": ["picows"],
        "machine": runner.machine(),
        "pinning": {"server": [1], "clients": [0]},
        "clients": 1,
        "seconds": 42.0,
        "command": "python -m benchmarks --compression --quick",
    }
    text = report.compression_table(results)
    answer = "`permessage-deflate; client_max_window_bits=15`"
    assert f"| the server's answer to the offer | {answer} | declined | declined |" in text
    assert "| 16.0 | 17.0 (+1.0) |" in text
    assert "6,000 (0.67x)" in text
    page = tmp_path / "performance.md"
    page.write_text(
        f"# Performance\n\n{report.START}\nresults\n{report.END}\n\n## Compression\n\n"
        f"{report.COMPRESSION_START}\nold\n{report.COMPRESSION_END}\n\nAfter.\n"
    )
    report.update_compression_docs(results, tmp_path)
    body = page.read_text()
    assert "results" in body and "After." in body and "old" not in body
    assert "- Command: `python -m benchmarks --compression --quick`." in body


def test_rooms_smoke_run(tmp_path: Path) -> None:
    """``--rooms --smoke``: every part runs, in-process and (with redis-server) on Redis."""
    redis = shutil.which("redis-server") is not None
    if not redis and os.environ.get("CI"):
        pytest.fail("redis-server is not installed; CI must install it (.ci/run does)")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--rooms", "--smoke", "--no-docs", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "rooms.json").read_text())
    assert results["failures"] == []
    assert results["stores"] == (["memory", "redis"] if redis else ["memory"])
    stores = results["medians"]
    for store in results["stores"]:
        for key in (
            "join.p50_us",
            "leave.p95_us",
            "open.p50_us",
            "close_owned.p50_us",
            "presence.join.p50_ms",
            "presence.leave.p95_ms",
            "fanout.1.hub.us_per_delivery",
            "fanout.20.room.us_per_delivery",
            "fanout.20.cpu_ratio",
            "history.publish.p50_us",
            "history.append.p95_us",
            "history.update_stored.p50_us",
            "recover.50.p50_us",
            "join_since.50.p50_us",
            "join_plain.p50_us",
            "history.memory.message_b",
        ):
            assert stores[store][key] > 0, (store, key)
    for key in ("task", "subscription", "member", "subscription_spread", "member_spread"):
        assert stores["memory"][f"memory.{key}.kib"] > 0, key
    # A stored message is kept: at least its own 100 bytes, wherever it is.
    assert stores["memory"]["history.memory.message_b"] > 100
    if redis:
        measured = stores["redis"]
        # The scripts say what one operation has Redis run: the counts come out exact.
        assert measured["join.round_trips"] == 1  # one EVALSHA
        assert measured["join.commands"] == 7  # EVALSHA, TIME, ZADD, HSET, PEXPIRE x2, PUBLISH
        # EVALSHA, TIME, HDEL, ZADD + PEXPIRE (the departed ids), ZREM, PUBLISH
        assert measured["leave.commands"] == 7
        # The room's messages and its presence, asked at once: one SUBSCRIBE for both.
        assert measured["open.cmd.subscribe"] == 1
        assert measured["open_owned.cmd.incr"] == 1  # the lease's fencing number
        assert measured["heartbeat.5x4.cmd.zadd"] == 4  # one per local member
        assert measured["renew.round_trips"] == 1
        assert "| join an open room | 1.0 | 7.0 |" in proc.stdout
        # A plain room publish is one PUBLISH; a stored one, one script: EVALSHA, INCR (the
        # offset), XADD (bounded), PEXPIRE x2 (the stream, the counter), PUBLISH.
        assert (measured["history.publish.round_trips"], measured["history.publish.commands"]) == (
            1,
            1,
        )
        assert (measured["history.append.round_trips"], measured["history.append.commands"]) == (
            1,
            6,
        )
        assert measured["history.append.cmd.xadd"] == 1
        # A state update reads (HMGET), then writes in a script (EVALSHA, HGET, HSET, PEXPIRE,
        # PUBLISH); with history=True the script stores the announcement too (+ INCR, XADD,
        # PEXPIRE x2).
        assert measured["history.update.round_trips"] == 2
        assert measured["history.update.commands"] == 6
        assert measured["history.update_stored.commands"] == 10
        # A recovery is one script: EVALSHA, GET (the last offset), XRANGE x2 (the oldest kept,
        # then the messages after the offset); its reply holds the 50 messages.
        assert (measured["recover.50.round_trips"], measured["recover.50.commands"]) == (1, 4)
        assert measured["recover.50.bytes_out"] > 50 * 128
        # A stored message of 100 bytes takes about its size in the stream; a room's history
        # (stream and counter) costs more than nothing.
        assert 100 < measured["history.memory.message_b"] < 400
        assert measured["history.memory.room_b"] > 0
        assert "| `room.history.append`, kept | 1.0 | 6.0 |" in proc.stdout
    assert "**History**" in proc.stdout
    assert "**Join and leave**" in proc.stdout  # the table went to stdout
    assert "round 1/1 · joins, memory store" in proc.stderr  # and the progress to stderr
    page = tmp_path / "performance.md"
    page.write_text(f"# Performance\n\n{report.ROOMS_START}\nstale\n{report.ROOMS_END}\n\nAfter.\n")
    report.update_rooms_docs(results, tmp_path)
    body = page.read_text()
    assert "stale" not in body and "After." in body and body.count(report.ROOMS_START) == 1
    assert "- Command: `python -m benchmarks --rooms --smoke`." in body
    assert f"commit `{results['commit']}`" in body
