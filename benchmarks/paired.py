"""Paired A/B on a busy machine: ``python -m benchmarks.paired --base TREE KIND``.

The full harness starts each server for its round, so on a shared 2-core machine one round can
land on a quiet moment and the next on a busy one. Here every server stays up for the whole
run and the measurements alternate in short windows (A, B, C, then B, C, A, ...), so that each
pair of neighbouring windows sees the same machine; the report is the median of the per-window
ratios of server CPU per unit (steadier than rates) and of rates, with their quartiles.

KIND is ``echo:SIZE`` (50 sockets, SIZE-byte messages) or ``handshakes``. ``--base TREE``
adds ``trioweb@base``, trioweb imported from TREE (a checkout of another commit); ``--peers
starlette quart-trio`` adds other frameworks to the rotation, each compared with trioweb.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from .runner import Clients, Server

SERVER_CPUS = {1}
CLIENT_CPUS = {0}


def measure(server: Server, kind: str, seconds: float) -> tuple[float, float]:
    """One window against ``server``: (server CPU µs per unit, units per second)."""
    spec: dict[str, Any]
    if kind == "handshakes":
        spec = {"kind": "handshakes", "port": server.port, "server_pid": server.pid}
        spec["concurrency"] = 8
    else:
        size = int(kind.split(":", 1)[1])
        spec = {"kind": "echo", "port": server.port, "server_pid": server.pid}
        spec |= {"sockets": 50, "size": size}
    with Clients([spec], CLIENT_CPUS, 60 + seconds) as clients:
        start = time.monotonic() + 0.3
        (result,) = clients.go(f"go {start!r} {start + seconds!r}")
    count = result.get("handshakes", result.get("messages"))
    return 1e6 * result["server"] / count, count / result["wall"]


def quartiles(values: list[float]) -> str:
    ordered = sorted(values)
    low, high = ordered[(len(ordered) - 1) // 4], ordered[3 * (len(ordered) - 1) // 4]
    return f"{statistics.median(ordered):.3f} (IQR {low:.3f}-{high:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paired", description=__doc__)
    parser.add_argument("kind", help="echo:SIZE or handshakes")
    parser.add_argument("--base", type=Path, help="a checkout of another commit")
    parser.add_argument("--reps", type=int, default=10, help="windows per server (default 10)")
    parser.add_argument("--seconds", type=float, default=1.5, help="one window (default 1.5)")
    parser.add_argument("--logs", type=Path, default=Path("bench-paired-logs"))
    parser.add_argument(
        "--peers", nargs="*", default=[], help="more apps in the rotation (e.g. starlette)"
    )
    args = parser.parse_args()
    args.logs.mkdir(parents=True, exist_ok=True)
    names = ["trioweb", *(["trioweb@base"] if args.base else []), "bare", *args.peers]
    servers = {
        name: Server(
            name, args.logs / f"{name}.log", SERVER_CPUS, args.base if "@" in name else None
        )
        for name in names
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        for rep in range(args.reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                results[name].append(measure(servers[name], args.kind, args.seconds))
    finally:
        for server in servers.values():
            server.close()
    for name in names:
        cpu = statistics.median(r[0] for r in results[name])
        rate = statistics.median(r[1] for r in results[name])
        print(f"{name:14s} server µs per unit {cpu:8.1f}  rate {rate:8.0f}/s")
    pairs = [(name, "bare") for name in names if name != "bare"]
    if args.base:
        pairs.append(("trioweb", "trioweb@base"))
    pairs += [("trioweb", peer) for peer in args.peers]
    for a, b in pairs:
        cpu_ratios = [x[0] / y[0] for x, y in zip(results[a], results[b], strict=True)]
        rate_ratios = [x[1] / y[1] for x, y in zip(results[a], results[b], strict=True)]
        print(f"{a} / {b}: CPU per unit {quartiles(cpu_ratios)}; rate {quartiles(rate_ratios)}")


if __name__ == "__main__":
    main()
