"""Typed messages against ``receive_json`` and checks by hand: ``python -m benchmarks --typed``.

The same protocol (bids, chat lines and drawings, told apart by ``type``), read two ways:

- **typed**: Structs in a tagged union, ``ws.iter_typed()``, ``match``, ``ws.send_typed()``;
- **json + checks**: ``ws.iter_json()``, the checks a careful handler writes by hand for the same
  rules (the types of the fields, the required ones, no unknown field on a bid, every point of a
  drawing), a dispatch on ``type``, ``ws.send_json()``.

Three parts, each alternating short windows between the two (typed first in one window, second
in the next), so that a noisy machine hits both alike; the report gives medians and the median
of the per-window ratios, with their quartiles:

- ``decode``: decode, validate and dispatch alone, in one process, no I/O: µs per message;
- ``testclient``: round trips through the test client, one socket per route: round trips/s;
- ``server``: a trioweb server (``python -m benchmarks.server typed``) and 50 sockets of the load
  generator on each route in turn: the server's CPU µs per message, and messages/s.

Nothing here is checked against a target: the figures are for docs/performance.md.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import msgspec

# -- the protocol -----------------------------------------------------------------------------


class Bid(msgspec.Struct, tag_field="type", tag="bid", forbid_unknown_fields=True):
    amount: int
    lot: str = "main"


class Chat(msgspec.Struct, tag_field="type", tag="chat"):
    text: str


class Point(msgspec.Struct):
    x: int
    y: int


class Draw(msgspec.Struct, tag_field="type", tag="draw"):
    points: list[Point]


class BidMade(msgspec.Struct, tag_field="type", tag="bid_made"):
    amount: int
    lot: str


class Said(msgspec.Struct, tag_field="type", tag="said"):
    text: str


class Drawn(msgspec.Struct, tag_field="type", tag="drawn"):
    points: int


Incoming = Bid | Chat | Draw
Outgoing = BidMade | Said | Drawn


def typed_dispatch(msg: Any) -> Any:
    """The reply to a decoded message."""
    match msg:
        case Bid(amount=amount, lot=lot):
            return BidMade(amount, lot)
        case Chat(text=text):
            return Said(text)
        case Draw(points=points):
            return Drawn(len(points))
    raise AssertionError(msg)


_BID_FIELDS = frozenset({"type", "amount", "lot"})


def _bad(detail: str) -> dict[str, str]:
    return {"type": "error", "code": "bad_message", "detail": detail}


def hand_dispatch(msg: Any) -> dict[str, Any]:
    """The same rules, checked by hand on what ``json.loads`` gave; the reply (or an error)."""
    if type(msg) is not dict:
        return _bad("$: expected object")
    kind = msg.get("type")
    if kind == "bid":
        amount = msg.get("amount")
        if type(amount) is not int:
            return _bad("$.amount: expected int")
        lot = msg.get("lot", "main")
        if type(lot) is not str:
            return _bad("$.lot: expected str")
        if not msg.keys() <= _BID_FIELDS:
            return _bad("$: unknown field")
        return {"type": "bid_made", "amount": amount, "lot": lot}
    if kind == "chat":
        text = msg.get("text")
        if type(text) is not str:
            return _bad("$.text: expected str")
        return {"type": "said", "text": text}
    if kind == "draw":
        points = msg.get("points")
        if type(points) is not list:
            return _bad("$.points: expected array")
        for point in points:
            if (
                type(point) is not dict
                or type(point.get("x")) is not int
                or type(point.get("y")) is not int
            ):
                return _bad("$.points: expected objects with int x and y")
        return {"type": "drawn", "points": len(points)}
    return _bad("$.type: unknown message type")


def pool(count: int = 64, seed: int = 1) -> list[str]:
    """``count`` different valid messages, a third of each kind (seeded: every run alike)."""
    rng = random.Random(seed)
    words = ("lamp", "vase", "going", "once", "twice", "sold", "bid", "more", "nice", "oak")
    out = []
    for n in range(count):
        if n % 3 == 0:
            message: dict[str, Any] = {
                "type": "bid",
                "amount": rng.randrange(1, 10**6),
                "lot": f"lot-{rng.randrange(100)}",
            }
        elif n % 3 == 1:
            message = {"type": "chat", "text": " ".join(rng.choice(words) for _ in range(8))}
        else:
            points = [{"x": rng.randrange(1000), "y": rng.randrange(1000)} for _ in range(8)]
            message = {"type": "draw", "points": points}
        out.append(json.dumps(message, separators=(",", ":")))
    return out


def make_app() -> Any:
    """The app of the test client and server parts: ``/typed`` and ``/hand``."""
    from trioweb import App, WebSocket

    app = App()

    @app.websocket("/typed", receives=Incoming, sends=Outgoing)
    async def typed(ws: WebSocket) -> None:
        async for msg in ws.iter_typed():
            match msg:
                case Bid(amount=amount, lot=lot):
                    await ws.send_typed(BidMade(amount, lot))
                case Chat(text=text):
                    await ws.send_typed(Said(text))
                case Draw(points=points):
                    await ws.send_typed(Drawn(len(points)))

    @app.websocket("/hand")
    async def hand(ws: WebSocket) -> None:
        async for msg in ws.iter_json():
            await ws.send_json(hand_dispatch(msg))

    return app


# -- plans ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypedPlan:
    name: str
    #: Windows per part and side (each window measures both sides once).
    windows: int
    decode_seconds: float
    testclient_seconds: float
    server_seconds: float
    sockets: int = 50


TYPED_PLANS = {
    "full": TypedPlan("full", windows=10, decode_seconds=0.5, testclient_seconds=1.0,
                      server_seconds=1.5),
    "quick": TypedPlan("quick", windows=4, decode_seconds=0.3, testclient_seconds=0.5,
                       server_seconds=0.8),
    "smoke": TypedPlan("smoke", windows=1, decode_seconds=0.05, testclient_seconds=0.1,
                       server_seconds=0.2, sockets=5),
}  # fmt: skip

SIDES = ("typed", "hand")


def _orders(windows: int) -> list[tuple[str, str]]:
    return [SIDES if w % 2 == 0 else SIDES[::-1] for w in range(windows)]


# -- the parts --------------------------------------------------------------------------------


def part_decode(plan: TypedPlan) -> dict[str, list[float]]:
    """µs per message of decode + validate + dispatch, no I/O, in alternating windows."""
    messages = pool()
    decode = msgspec.json.Decoder(Incoming).decode
    loads = json.loads

    def typed_once() -> None:
        for raw in messages:
            typed_dispatch(decode(raw))

    def hand_once() -> None:
        for raw in messages:
            hand_dispatch(loads(raw))

    run = {"typed": typed_once, "hand": hand_once}
    for side in SIDES:  # warm up
        run[side]()
    out: dict[str, list[float]] = {side: [] for side in SIDES}
    for order in _orders(plan.windows):
        for side in order:
            count, start = 0, time.perf_counter()
            end = start + plan.decode_seconds
            while (now := time.perf_counter()) < end:
                run[side]()
                count += len(messages)
            out[side].append(1e6 * (now - start) / count)
    return out


def part_testclient(plan: TypedPlan) -> dict[str, list[float]]:
    """Round trips per second through the test client, one socket per side."""
    import trio

    from trioweb.testing import TestClient

    messages = pool()
    out: dict[str, list[float]] = {side: [] for side in SIDES}

    async def main() -> None:
        async with (
            TestClient(make_app()) as client,
            client.websocket("/typed") as typed,
            client.websocket("/hand") as hand,
        ):
            sockets = {"typed": typed, "hand": hand}
            for side in SIDES:  # warm up
                for raw in messages:
                    await sockets[side].send(raw)
                    await sockets[side].receive()
            for order in _orders(plan.windows):
                for side in order:
                    ws, count = sockets[side], 0
                    start = time.perf_counter()
                    end = start + plan.testclient_seconds
                    while (now := time.perf_counter()) < end:
                        for raw in messages:
                            await ws.send(raw)
                            await ws.receive()
                        count += len(messages)
                    out[side].append(count / (now - start))

    trio.run(main)
    return out


def part_server(plan: TypedPlan, logs: Path, pin_cpus: bool) -> dict[str, list[float]]:
    """Server CPU µs per message and messages/s, 50 sockets on each side in turn."""
    from .paired import CLIENT_CPUS, SERVER_CPUS
    from .runner import Clients, Server

    server_cpus = SERVER_CPUS if pin_cpus else None
    client_cpus = CLIENT_CPUS if pin_cpus else None
    logs.mkdir(parents=True, exist_ok=True)
    server = Server("typed", logs / "typed-server.log", server_cpus)
    out: dict[str, list[float]] = {f"{side}.{k}": [] for side in SIDES for k in ("us", "rate")}
    texts = pool()

    def window(side: str, seconds: float) -> tuple[float, float]:
        spec = {
            "kind": "echo",
            "port": server.port,
            "server_pid": server.pid,
            "sockets": plan.sockets,
            "size": 0,
            "path": f"/{side}",
            "texts": texts,
        }
        with Clients([spec], client_cpus, 60 + seconds) as clients:
            start = time.monotonic() + 0.2
            (result,) = clients.go(f"go {start!r} {start + seconds!r}")
        count = result["messages"]
        return 1e6 * result["server"] / max(count, 1), count / result["wall"]

    try:
        for side in SIDES:  # warm up
            window(side, 0.1)
        for order in _orders(plan.windows):
            for side in order:
                us, rate = window(side, plan.server_seconds)
                out[f"{side}.us"].append(us)
                out[f"{side}.rate"].append(rate)
    finally:
        server.close()
    return out


# -- the report -------------------------------------------------------------------------------


def _ratios(a: list[float], b: list[float]) -> dict[str, float]:
    ratios = sorted(x / y for x, y in zip(a, b, strict=True) if y)
    if not ratios:
        return {"median": float("nan"), "low": float("nan"), "high": float("nan")}
    n = len(ratios) - 1
    return {
        "median": statistics.median(ratios),
        "low": ratios[n // 4],
        "high": ratios[3 * n // 4],
    }


def summarize(raw: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Medians of each side and the ratios typed / hand of each row."""
    rows = {
        "decode": ("decode", "typed", "hand"),
        "testclient": ("testclient", "typed", "hand"),
        "server_us": ("server", "typed.us", "hand.us"),
        "server_rate": ("server", "typed.rate", "hand.rate"),
    }
    out: dict[str, Any] = {}
    for row, (part, typed_key, hand_key) in rows.items():
        values = raw.get(part)
        if not values:
            continue
        out[row] = {
            "typed": statistics.median(values[typed_key]),
            "hand": statistics.median(values[hand_key]),
            "ratio": _ratios(values[typed_key], values[hand_key]),
        }
    return out


#: Each row: its label, its unit, and which way is better.
LABELS = {
    "decode": ("decode + validate + dispatch, no I/O", "µs/message", "lower"),
    "testclient": ("test client round trips", "round trips/s", "higher"),
    "server_us": ("over the server: server CPU", "µs/message", "lower"),
    "server_rate": ("over the server: messages", "messages/s", "higher"),
}


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def table(results: dict[str, Any]) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| | unit | typed | json + checks | typed / json + checks (IQR) | better |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row, (label, unit, better) in LABELS.items():
        found = results["summary"].get(row)
        if found is None:
            continue
        ratio = found["ratio"]
        lines.append(
            f"| {label} | {unit} | {_number(found['typed'])} | {_number(found['hand'])} "
            f"| **{ratio['median']:.2f}** ({ratio['low']:.2f}-{ratio['high']:.2f}) "
            f"| {better} |"
        )
    return "\n".join(lines)


TYPED_START = "<!-- bench:typed:start -->"
TYPED_END = "<!-- bench:typed:end -->"


def describe(results: dict[str, Any]) -> str:
    plan, machine = results["plan"], results["machine"]
    versions = machine["versions"]
    return "\n".join(
        [
            f"- Command: `{results['command']}`; {plan['windows']} windows a side per part.",
            f"- Machine: {machine['cpu']}, {machine['cores']} cores, Python "
            f"{machine['python']}, trioweb {versions.get('trioweb', '?')}, msgspec "
            f"{versions.get('msgspec', '?')}, {machine['date']}.",
            f"- Load generator: {', '.join(results['client_backend']) or 'none'}.",
        ]
    )


def update_docs(results: dict[str, Any], docs: Path) -> list[Path]:
    """Rewrite the generated part of the typed section of ``docs/performance.md``."""
    from .report import _replace_section

    page = docs / "performance.md"
    section = "\n".join(
        [
            TYPED_START,
            "<!-- Written by `python -m benchmarks --typed`: edits here are lost. -->",
            "",
            describe(results),
            "",
            table(results),
            TYPED_END,
        ]
    )
    _replace_section(page, TYPED_START, TYPED_END, section)
    return [page]


def typed_main(args: Any, plan_name: str, out: Path, docs: bool) -> int:
    """``--typed``: run the three parts, write the report (and the docs section)."""
    from .runner import machine

    plan = TYPED_PLANS[plan_name]
    if args.rounds:
        plan = replace(plan, windows=args.rounds)
    print(f"benchmarks: typed messages, {plan.name} plan", file=sys.stderr)
    raw: dict[str, dict[str, list[float]]] = {}
    failures: list[str] = []
    started = time.monotonic()
    for part, run in (
        ("decode", lambda: part_decode(plan)),
        ("testclient", lambda: part_testclient(plan)),
        ("server", lambda: part_server(plan, out / "logs", not args.no_pin)),
    ):
        print(f"[{time.monotonic() - started:5.0f} s] typed · {part}", file=sys.stderr)
        try:
            raw[part] = run()
        except Exception as exc:  # reported, and the other parts go on
            failures.append(f"{part}: {type(exc).__name__}: {exc}")
    results: dict[str, Any] = {
        "plan": asdict(plan),
        "machine": {**machine(), "versions": {**machine()["versions"], **_versions()}},
        "raw": raw,
        "summary": summarize(raw),
        "failures": failures,
        "client_backend": [_backend()] if "server" in raw else [],
        "command": " ".join(
            ["python -m benchmarks --typed"]
            + ([f"--{plan.name}"] if plan.name != "full" else [])
            + ([f"--rounds {args.rounds}"] if args.rounds else [])
        ),
        "seconds": time.monotonic() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "typed.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    text = table(results)
    (out / "typed.md").write_text(text + "\n")
    print(text)
    written = [out / "typed.json", out / "typed.md"]
    if docs:
        written += update_docs(results, Path(__file__).resolve().parent.parent / "docs")
    for failure in failures:
        print(f"warning: {failure}", file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 1 if failures else 0


def _versions() -> dict[str, str]:
    from importlib import metadata

    try:
        return {"msgspec": metadata.version("msgspec")}
    except metadata.PackageNotFoundError:
        return {}


def _backend() -> str:
    """The load generator the server part used (its processes import as this one does)."""
    from .client import BACKEND

    return BACKEND
