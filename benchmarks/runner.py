"""The harness: start each server in turn, drive it, alternate over rounds, report medians.

Each server is a process of its own (``benchmarks.server``) so that its memory is measured
alone; the load comes from separate client processes (``benchmarks.client``). In every round
the servers take turns in a rotated order, so that drift in a noisy machine hits each of them
alike, and the report gives the median over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .apps import COMPRESSIONS, NAMES, TREE_ENV, available

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Plan:
    """How much of everything a run does."""

    name: str
    rounds: int
    echo_seconds: float
    handshake_seconds: float
    hold_sockets: int
    fanout_publishes: int
    scale_echo: tuple[int, ...]
    scale_echo_seconds: float
    scale_fanout: tuple[int, ...]
    scale_fanout_publishes: int
    testclient_seconds: float
    echo_sockets: int = 50
    sizes: tuple[int, ...] = (16, 16384)
    handshake_concurrency: int = 8
    fanout_subscribers: int = 1000
    warmup_seconds: float = 0.3


PLANS = {
    "full": Plan(
        name="full",
        rounds=5,
        echo_seconds=3.0,
        handshake_seconds=3.0,
        hold_sockets=2000,
        fanout_publishes=30,
        scale_echo=(10, 100, 1000),
        scale_echo_seconds=2.0,
        scale_fanout=(100, 1000, 5000),
        scale_fanout_publishes=10,
        testclient_seconds=2.0,
    ),
    "quick": Plan(
        name="quick",
        rounds=1,
        echo_seconds=0.5,
        handshake_seconds=0.5,
        hold_sockets=500,
        fanout_publishes=5,
        scale_echo=(10, 100, 1000),
        scale_echo_seconds=0.3,
        scale_fanout=(100, 1000),
        scale_fanout_publishes=3,
        testclient_seconds=0.4,
        warmup_seconds=0.2,
    ),
    # Seconds long: proves the harness works (CI); its numbers mean nothing.
    "smoke": Plan(
        name="smoke",
        rounds=1,
        echo_seconds=0.2,
        handshake_seconds=0.2,
        hold_sockets=40,
        fanout_publishes=2,
        scale_echo=(4, 20),
        scale_echo_seconds=0.2,
        scale_fanout=(10, 40),
        scale_fanout_publishes=2,
        testclient_seconds=0.2,
        echo_sockets=10,
        handshake_concurrency=2,
        fanout_subscribers=40,
        warmup_seconds=0.1,
    ),
}

#: The frameworks whose in-process test clients are compared.
TEST_CLIENTS = ("trioweb", "trioweb@base", "quart-trio", "starlette")

#: The memory rows measured in a server process of their own each (so that no socket of an
#: earlier measurement leaves memory behind to be reused): what the sockets' clients do.
MEMORY_VARIANTS = {
    # Like a browser: permessage-deflate offered as Chrome offers it, then one 1 KiB message
    # each way (sent compressed, echoed compressed if the server accepted), then idle.
    "memory_browser": {"deflate": True, "size": 1024, "json": True},
    # The same exchange without the offer.
    "memory_plain1k": {"deflate": False, "size": 1024, "json": True},
}


# -- processes -----------------------------------------------------------------------------


class HarnessError(RuntimeError):
    """A server or client process misbehaved (it is reported, and the run goes on)."""


def read_line(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    """The next line ``proc`` prints, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HarnessError(f"no {what} within {timeout:g} s")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise HarnessError(f"the process exited (code {proc.wait()}) before its {what}")
            return line.strip()


def stop(proc: subprocess.Popen[str]) -> None:
    """End a process we started: close its input, then terminate, then kill, bounded."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(3)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pin(pid: int, cpus: set[int] | None) -> None:
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


def environment(tree: Path | None) -> dict[str, str] | None:
    """A server's or test client's environment: ours, plus the trioweb tree it imports."""
    return None if tree is None else {**os.environ, TREE_ENV: str(tree)}


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Server:
    """One app on hypercorn's trio worker, in its own process."""

    def __init__(
        self, name: str, log: Path, cpus: set[int] | None, tree: Path | None = None
    ) -> None:
        self.name = name
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "benchmarks.server", name],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=environment(tree),
        )
        pin(self.proc.pid, cpus)
        try:
            line = read_line(self.proc, 60, "ready line from the server")
        except HarnessError:
            self.close()
            raise
        self.port = int(line.split()[1])
        self.pid = self.proc.pid

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


class Clients:
    """One or more load generator processes running one scenario."""

    def __init__(self, specs: list[dict[str, Any]], cpus: set[int] | None, timeout: float):
        self.timeout = timeout
        self.procs = [
            subprocess.Popen(
                [PYTHON, "-m", "benchmarks.client", json.dumps(spec)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for spec in specs
        ]
        for proc in self.procs:
            pin(proc.pid, cpus)

    def __enter__(self) -> Clients:
        try:
            for proc in self.procs:
                line = read_line(proc, self.timeout, "ready line from a client")
                if line != "ready":
                    raise HarnessError(f"a client said {line!r}")
        except BaseException:
            self.close()
            raise
        return self

    def go(self, command: str) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(command + "\n")
            proc.stdin.flush()
        return [json.loads(read_line(p, self.timeout, "result from a client")) for p in self.procs]

    def close(self) -> None:
        for proc in self.procs:
            stop(proc)

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class Context:
    plan: Plan
    clients: int
    server_cpus: set[int] | None
    client_cpus: set[int] | None
    backend: set[str] = field(default_factory=set)
    #: The trioweb tree of each ``...@tree`` server, by tree name.
    trees: dict[str, Path] = field(default_factory=dict)
    #: What each server answered to the deflate offer (its Sec-WebSocket-Extensions).
    extensions: dict[str, str | None] = field(default_factory=dict)

    def tree(self, name: str) -> Path | None:
        return self.trees[name.split("@", 1)[1]] if "@" in name else None

    def server(self, name: str, log: Path) -> Server:
        return Server(name, log, self.server_cpus, self.tree(name))


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` (none empty)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def percentile(values: list[int], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return float(values[min(len(values) - 1, int(q * len(values)))])


def timed_window(ctx: Context, clients: Clients, seconds: float) -> list[dict[str, Any]]:
    t0 = time.monotonic() + ctx.plan.warmup_seconds
    return clients.go(f"go {t0!r} {t0 + seconds!r}")


def echo(
    ctx: Context,
    server: Server,
    sockets: int,
    size: int,
    seconds: float,
    deflate: bool = False,
    json_messages: bool = False,
) -> dict:
    """Closed-loop echo; with ``deflate`` the clients offer permessage-deflate as Chrome
    does, with ``json_messages`` they send different JSON documents of ``size`` bytes."""
    specs = [
        {
            "kind": "echo",
            "port": server.port,
            "server_pid": server.pid,
            "sockets": n,
            "size": size,
            "deflate": deflate,
            "json": json_messages,
        }
        for n in split(sockets, ctx.clients)
    ]
    with Clients(specs, ctx.client_cpus, 120) as clients:
        results = timed_window(ctx, clients, seconds)
    ctx.backend.update(r["backend"] for r in results)
    wall = results[0]["wall"]
    messages = sum(r["messages"] for r in results)
    rtts = [rtt for r in results for rtt in r["rtts_us"]]
    server_cpu = results[0]["server"]
    out = {
        "msgs_s": messages / wall,
        "p50_ms": percentile(rtts, 0.50) / 1000,
        "p99_ms": percentile(rtts, 0.99) / 1000,
        "server_cpu": server_cpu / wall,
        "server_queued": results[0]["queued"] / wall,
        "client_cpu": sum(r["client"] for r in results) / wall,
        "us_per_msg": 1e6 * server_cpu / messages if messages else float("nan"),
    }
    if deflate:
        out.update(deflate_figures(ctx, server, results, sockets))
    return out


def deflate_figures(
    ctx: Context, server: Server, results: list[dict[str, Any]], sockets: int
) -> dict[str, float]:
    """What became of the deflate offer: the share of sockets that negotiated it, and the
    bytes on the wire per byte of message each way (1 where nothing was compressed)."""
    ctx.extensions[server.name] = next((r["extensions"] for r in results if r["extensions"]), None)
    out = {"negotiated": sum(r["negotiated"] for r in results) / sockets}
    for key in ("sent", "received"):
        raw = sum(r[f"{key}_raw"] for r in results)
        if raw:
            out[f"{key}_ratio"] = sum(r[f"{key}_wire"] for r in results) / raw
    return out


def handshakes(ctx: Context, server: Server) -> dict:
    plan = ctx.plan
    specs = [
        {
            "kind": "handshakes",
            "port": server.port,
            "server_pid": server.pid,
            "concurrency": n,
        }
        for n in split(plan.handshake_concurrency * ctx.clients, ctx.clients)
    ]
    with Clients(specs, ctx.client_cpus, 120) as clients:
        results = timed_window(ctx, clients, plan.handshake_seconds)
    wall = results[0]["wall"]
    done = sum(r["handshakes"] for r in results)
    return {
        "per_s": done / wall,
        "errors": sum(r["errors"] for r in results),
        "server_cpu": results[0]["server"] / wall,
        "server_queued": results[0]["queued"] / wall,
        "us_per_handshake": 1e6 * results[0]["server"] / done if done else float("nan"),
        "client_cpu": sum(r["client"] for r in results) / wall,
    }


def memory(ctx: Context, server: Server, sockets: int = 0, **exchange: Any) -> dict:
    """RSS per socket of ``sockets`` (the plan's count by default) idle sockets; their clients
    first do what ``exchange`` says (a :data:`MEMORY_VARIANTS` value), or nothing."""
    sockets = sockets or ctx.plan.hold_sockets
    before = rss_bytes(server.pid)
    spec = {"kind": "hold", "port": server.port, "server_pid": server.pid, "sockets": sockets}
    with Clients([{**spec, **exchange}], ctx.client_cpus, 180) as clients:
        time.sleep(0.3)  # let the handlers reach their first await
        after = rss_bytes(server.pid)
        (result,) = clients.go("go")
    out = {
        "kib_per_socket": (after - before) / sockets / 1024,
        "baseline_mib": before / 2**20,
        "sockets": sockets,
    }
    if exchange.get("deflate"):
        ctx.extensions[server.name] = result["extensions"]
        out["negotiated"] = result["negotiated"] / sockets
        out["compressed"] = result["compressed_in"] / sockets
    return out


def fresh_memory(ctx: Context, name: str, log: Path, exchange: dict[str, Any]) -> dict:
    """:func:`memory` in a server process of its own, warmed up by a few sockets that do
    the same exchange (and close) first."""
    server = ctx.server(name, log)
    try:
        memory(ctx, server, min(ctx.plan.echo_sockets, 20), **exchange)
        return memory(ctx, server, **exchange)
    finally:
        server.close()


def fanout(ctx: Context, server: Server, subscribers: int, publishes: int) -> dict:
    spec = {
        "kind": "fanout",
        "port": server.port,
        "server_pid": server.pid,
        "subscribers": subscribers,
        "publishes": publishes,
        "warmup": 2,
    }
    with Clients([spec], ctx.client_cpus, 300) as clients:
        (result,) = clients.go("go")
    wall = result["wall"]
    lags = sorted(result["slowest_lag_s"])
    deliveries = result["deliveries"]
    return {
        "deliveries_s": deliveries / wall,
        "lag_p50_ms": 1000 * statistics.median(lags) if lags else float("nan"),
        "lag_max_ms": 1000 * lags[-1] if lags else float("nan"),
        "timeouts": result["timeouts"],
        "server_cpu": result["server"] / wall,
        "server_queued": result["queued"] / wall,
        "client_cpu": result["client"] / wall,
        "us_per_delivery": 1e6 * result["server"] / deliveries if deliveries else float("nan"),
    }


def warmup(ctx: Context, server: Server) -> None:
    """Touch the echo path once, so lazy imports and caches are not measured (the fan-out
    scenario warms itself up with publishes it does not count)."""
    echo(ctx, server, min(ctx.plan.echo_sockets, 20), 16, 0.1)


def testclient(name: str, seconds: float, tree: Path | None = None) -> dict:
    proc = subprocess.Popen(
        [PYTHON, "-m", "benchmarks.testclients", name, str(seconds)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environment(tree),
    )
    try:
        result = json.loads(read_line(proc, 60 + seconds, "test client result"))
    finally:
        stop(proc)
    return {
        "round_trips_s": result["round_trips"] / result["seconds"],
        "cpu": result["cpu"] / result["seconds"],
    }


# -- the run -------------------------------------------------------------------------------


class Progress:
    """One line per step on stderr (rewritten in place on a terminal)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def show(self, label: str, final: str = "") -> None:
        elapsed = time.monotonic() - self.start
        eta = ""
        if self.done:
            eta = f", ~{elapsed / self.done * (self.total - self.done):.0f} s left"
        line = f"[{self.done:>3}/{self.total} {elapsed:5.0f} s{eta}] {label}"
        if final:
            line += f": {final}"
        if self.tty:
            end = "\n" if final else ""
            sys.stderr.write("\r\x1b[2K" + line + end)
        elif final:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def step(self, label: str, final: str) -> None:
        self.done += 1
        self.show(label, final)


def steps_per_server(plan: Plan) -> int:
    extra_fanout = len([n for n in plan.scale_fanout if n != plan.fanout_subscribers])
    return (1 + 1 + len(plan.sizes) + 1 + 1 + len(plan.scale_echo) + extra_fanout) + len(
        MEMORY_VARIANTS
    )


def session(
    ctx: Context, name: str, round_no: int, logs: Path, progress: Progress
) -> dict[str, float]:
    """Start ``name``'s server, run every scenario against it, stop it."""
    plan = ctx.plan
    tag = f"round {round_no + 1}/{plan.rounds} · {name}"
    out: dict[str, float] = {}

    def record(prefix: str, values: dict[str, float]) -> None:
        for key, value in values.items():
            out[f"{prefix}.{key}"] = value

    progress.show(f"{tag} · starting")
    server = ctx.server(name, logs / f"{name}-round{round_no + 1}.log")
    try:
        progress.show(f"{tag} · warming up")
        warmup(ctx, server)
        progress.step(f"{tag} · warm-up", "done")

        progress.show(f"{tag} · memory, {plan.hold_sockets} idle sockets")
        values = memory(ctx, server)
        record("memory", values)
        progress.step(f"{tag} · memory", f"{values['kib_per_socket']:.1f} KiB/socket")

        for size in plan.sizes:
            label = f"echo {size_label(size)}"
            progress.show(f"{tag} · {label}")
            values = echo(ctx, server, plan.echo_sockets, size, plan.echo_seconds)
            record(f"echo{size_key(size)}", values)
            progress.step(f"{tag} · {label}", f"{values['msgs_s']:,.0f} msg/s")

        progress.show(f"{tag} · handshakes")
        values = handshakes(ctx, server)
        record("handshakes", values)
        progress.step(f"{tag} · handshakes", f"{values['per_s']:,.0f}/s")

        progress.show(f"{tag} · fan-out to {plan.fanout_subscribers}")
        values = fanout(ctx, server, plan.fanout_subscribers, plan.fanout_publishes)
        record("fanout", values)
        record(f"scale.fanout.{plan.fanout_subscribers}", values)
        progress.step(f"{tag} · fan-out", f"{values['deliveries_s']:,.0f} deliveries/s")

        for sockets in plan.scale_echo:
            progress.show(f"{tag} · echo cost at {sockets} sockets")
            values = echo(ctx, server, sockets, 16, plan.scale_echo_seconds)
            record(f"scale.echo.{sockets}", values)
            progress.step(f"{tag} · echo at {sockets}", f"{values['us_per_msg']:.0f} µs/msg")

        for subscribers in plan.scale_fanout:
            if subscribers == plan.fanout_subscribers:
                continue
            progress.show(f"{tag} · fan-out cost at {subscribers} subscribers")
            values = fanout(ctx, server, subscribers, plan.scale_fanout_publishes)
            record(f"scale.fanout.{subscribers}", values)
            progress.step(
                f"{tag} · fan-out at {subscribers}", f"{values['us_per_delivery']:.0f} µs/delivery"
            )
    finally:
        server.close()

    for key, exchange in MEMORY_VARIANTS.items():
        label = f"memory, {plan.hold_sockets} sockets after 1 KiB each way" + (
            ", deflate offered" if exchange["deflate"] else ""
        )
        progress.show(f"{tag} · {label} (a new server)")
        log = logs / f"{name}-round{round_no + 1}-{key}.log"
        values = fresh_memory(ctx, name, log, exchange)
        record(key, values)
        progress.step(f"{tag} · {key}", f"{values['kib_per_socket']:.1f} KiB/socket")
    return out


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def size_key(size: int) -> str:
    return f"{size // 1024}k" if size >= 1024 and size % 1024 == 0 else str(size)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    from importlib import metadata

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in (
        "trioweb",
        "trio",
        "hypercorn",
        "wsproto",
        "h11",
        "starlette",
        "anyio",
        "quart",
        "quart-trio",
        "picows",
        "uvloop",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d"),
    }


def rotate(items: list[str], by: int) -> list[str]:
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


def context(
    plan: Plan, clients: int, pin_cpus: bool, trees: dict[str, Path] | None = None
) -> Context:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpus = client_cpus = None
    if pin_cpus and len(cpus) >= 2:
        server_cpus, client_cpus = {cpus[-1]}, set(cpus[:-1])
    return Context(plan, clients, server_cpus, client_cpus, trees=dict(trees or {}))


def run(
    plan: Plan,
    servers: list[str],
    clients: int,
    pin_cpus: bool,
    logs: Path,
    trees: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Every round, every server and test client; the raw numbers of each round."""
    ctx = context(plan, clients, pin_cpus, trees)
    server_cpus, client_cpus = ctx.server_cpus, ctx.client_cpus
    test_clients = [name for name in TEST_CLIENTS if name in servers]
    progress = Progress(plan.rounds * (len(servers) * steps_per_server(plan) + len(test_clients)))
    raw: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    failures: list[str] = []
    logs.mkdir(parents=True, exist_ok=True)
    for round_no in range(plan.rounds):
        for name in rotate(servers, round_no):
            try:
                raw[name].append(session(ctx, name, round_no, logs, progress))
            except (HarnessError, OSError, ValueError, KeyError) as exc:
                failures.append(f"round {round_no + 1}, {name}: {exc}")
                progress.step(f"round {round_no + 1} · {name}", f"FAILED ({exc})")
        for name in rotate(test_clients, round_no):
            label = f"round {round_no + 1}/{plan.rounds} · {name} test client"
            progress.show(label)
            try:
                values = testclient(name, plan.testclient_seconds, ctx.tree(name))
            except (HarnessError, OSError, ValueError, KeyError) as exc:
                failures.append(f"round {round_no + 1}, {name} test client: {exc}")
                progress.step(label, f"FAILED ({exc})")
                continue
            if raw[name]:
                raw[name][-1].update({f"testclient.{k}": v for k, v in values.items()})
            else:
                raw[name].append({f"testclient.{k}": v for k, v in values.items()})
            progress.step(label, f"{values['round_trips_s']:,.0f} round trips/s")
    return {
        "plan": asdict(plan),
        "servers": servers,
        "clients": clients,
        "pinning": {
            "server": sorted(server_cpus) if server_cpus else None,
            "clients": sorted(client_cpus) if client_cpus else None,
        },
        "client_backend": sorted(ctx.backend),
        "machine": machine(),
        "trees": {name: str(path) for name, path in ctx.trees.items()},
        "extensions": ctx.extensions,
        "rounds": raw,
        "failures": failures,
        "seconds": time.monotonic() - progress.start,
    }


#: The servers of the compression comparison: the bare app (hypercorn's own deflate, with
#: context takeover) and trioweb with each of its settings.
COMPRESSION_SERVERS = ("bare", *(f"trioweb+{variant}" for variant in COMPRESSIONS))
#: What the compression comparison's clients send: different 1 KiB JSON documents.
COMPRESSION_SIZE = 1024


def compression_session(
    ctx: Context, name: str, round_no: int, logs: Path, progress: Progress
) -> dict[str, float]:
    """One server of the compression comparison: memory per browser-like socket, then echo
    of 1 KiB JSON documents with deflate offered."""
    plan = ctx.plan
    tag = f"round {round_no + 1}/{plan.rounds} · {name}"
    out: dict[str, float] = {}
    exchange = MEMORY_VARIANTS["memory_browser"]
    progress.show(f"{tag} · starting")
    server = ctx.server(name, logs / f"{name}-compression-round{round_no + 1}.log")
    try:
        progress.show(f"{tag} · memory, {plan.hold_sockets} browser-like sockets")
        memory(ctx, server, min(plan.echo_sockets, 20), **exchange)  # the warm-up
        values = memory(ctx, server, **exchange)
        out.update({f"memory.{key}": value for key, value in values.items()})
        progress.step(f"{tag} · memory", f"{values['kib_per_socket']:.1f} KiB/socket")

        progress.show(f"{tag} · echo 1 KiB JSON, deflate offered")
        echo(ctx, server, plan.echo_sockets, COMPRESSION_SIZE, 0.1, True, True)  # warm-up
        values = echo(
            ctx, server, plan.echo_sockets, COMPRESSION_SIZE, plan.echo_seconds, True, True
        )
        out.update({f"echo.{key}": value for key, value in values.items()})
        progress.step(f"{tag} · echo", f"{values['msgs_s']:,.0f} msg/s")
    finally:
        server.close()
    return out


def compression_run(plan: Plan, clients: int, pin_cpus: bool, logs: Path) -> dict[str, Any]:
    """The compression comparison: every round, every server of
    :data:`COMPRESSION_SERVERS` in a rotated order."""
    ctx = context(plan, clients, pin_cpus)
    servers = list(COMPRESSION_SERVERS)
    progress = Progress(plan.rounds * len(servers) * 2)
    raw: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    failures: list[str] = []
    logs.mkdir(parents=True, exist_ok=True)
    for round_no in range(plan.rounds):
        for name in rotate(servers, round_no):
            try:
                raw[name].append(compression_session(ctx, name, round_no, logs, progress))
            except (HarnessError, OSError, ValueError, KeyError) as exc:
                failures.append(f"round {round_no + 1}, {name}: {exc}")
                progress.step(f"round {round_no + 1} · {name}", f"FAILED ({exc})")
    return {
        "plan": asdict(plan),
        "servers": servers,
        "clients": clients,
        "pinning": {
            "server": sorted(ctx.server_cpus) if ctx.server_cpus else None,
            "clients": sorted(ctx.client_cpus) if ctx.client_cpus else None,
        },
        "client_backend": sorted(ctx.backend),
        "machine": machine(),
        "extensions": ctx.extensions,
        "rounds": raw,
        "failures": failures,
        "seconds": time.monotonic() - progress.start,
    }


def medians(raw: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The median of each metric over the rounds, per server."""
    out: dict[str, dict[str, float]] = {}
    for name, rounds in raw.items():
        keys = {key for values in rounds for key in values}
        out[name] = {
            key: statistics.median([v[key] for v in rounds if key in v]) for key in sorted(keys)
        }
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="trioweb against a bare ASGI app, Starlette and quart-trio, side by side, "
        "on hypercorn's trio worker.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one short round (under a minute)")
    mode.add_argument(
        "--smoke", action="store_true", help="a few seconds, only to prove the harness works"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--servers",
        help=f"comma-separated subset of {','.join(NAMES)} (the bare app is always included)",
    )
    parser.add_argument(
        "--clients", type=int, default=1, help="load generator processes for echo and handshakes"
    )
    parser.add_argument(
        "--base",
        type=Path,
        metavar="TREE",
        help="also run trioweb imported from TREE (a checkout of another commit) as "
        "'trioweb@base', side by side with this tree's in every round",
    )
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--compression",
        action="store_true",
        help="instead of the comparison of frameworks, compare trioweb's compression settings "
        "(and the bare app on hypercorn's deflate): memory per browser-like socket and echo "
        "of 1 KiB JSON with deflate offered",
    )
    kind.add_argument(
        "--rooms",
        action="store_true",
        help="instead of the comparison of frameworks, measure trioweb.rooms in-process and on a "
        "redis-server of its own (started on a unix socket, stopped at the end): joins and "
        "leaves, Redis commands, memory per member, presence propagation, room fan-out",
    )
    kind.add_argument(
        "--typed",
        action="store_true",
        help="instead of the comparison of frameworks, compare typed messages (msgspec, "
        "iter_typed, send_typed) with receive_json and checks by hand: decode alone, through "
        "the test client, and over a trioweb server",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and clients")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument(
        "--docs", action="store_true", help="update docs/performance.md and its chart"
    )
    docs.add_argument("--no-docs", action="store_true", help="leave the docs alone")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from . import report

    args = parse_args(argv)
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    # The docs take a full run of this tree alone, unless --docs says otherwise.
    docs = args.docs or (plan.name == "full" and not args.no_docs and args.base is None)
    if args.compression:
        return compression_main(args, plan, out, docs)
    if args.rooms:
        from .rooms import rooms_main

        return rooms_main(args, plan.name, out, docs)
    if args.typed:
        from .typed import typed_main

        return typed_main(args, plan.name, out, docs)

    wanted = args.servers.split(",") if args.servers else list(NAMES)
    unknown = [name for name in wanted if name not in NAMES]
    if unknown:
        raise SystemExit(f"unknown server(s): {', '.join(unknown)} (known: {', '.join(NAMES)})")
    if "bare" not in wanted:
        wanted.insert(0, "bare")
    servers = [name for name in NAMES if name in wanted and available(name)]
    skipped = [name for name in wanted if name not in servers]
    if skipped:
        print(f"skipping {', '.join(skipped)}: not installed", file=sys.stderr)
    trees: dict[str, Path] = {}
    if args.base is not None:
        if not (args.base / "trioweb" / "__init__.py").is_file():
            raise SystemExit(f"--base {args.base}: no trioweb package there")
        trees["base"] = args.base.resolve()
        servers.insert(servers.index("trioweb") + 1 if "trioweb" in servers else 1, "trioweb@base")

    print(
        f"benchmarks: {plan.name} plan, {plan.rounds} round(s), servers {', '.join(servers)}",
        file=sys.stderr,
    )
    results = run(plan, servers, max(1, args.clients), not args.no_pin, out / "logs", trees)
    results["skipped"] = skipped
    results["medians"] = medians(results["rounds"])
    results["targets"] = report.targets(results["medians"])
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    table = report.table(results)
    (out / "results.md").write_text(table + "\n")
    print(table)
    chart = report.chart(results, out / "bench.png")
    written = [out / "results.json", out / "results.md"] + ([chart] if chart else [])
    if docs:
        written += report.update_docs(results, ROOT / "docs")
    for failure in results["failures"]:
        print(f"warning: {failure}", file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 1 if results["failures"] else 0


def compression_main(args: argparse.Namespace, plan: Plan, out: Path, docs: bool) -> int:
    """``--compression``: run the comparison of compression settings, write its report."""
    from . import report

    print(
        f"benchmarks: compression, {plan.name} plan, {plan.rounds} round(s), "
        f"servers {', '.join(COMPRESSION_SERVERS)}",
        file=sys.stderr,
    )
    results = compression_run(plan, max(1, args.clients), not args.no_pin, out / "logs")
    results["medians"] = medians(results["rounds"])
    results["command"] = " ".join(
        ["python -m benchmarks --compression"]
        + ([f"--{plan.name}"] if plan.name != "full" else [])
        + ([f"--rounds {args.rounds}"] if args.rounds else [])
    )
    (out / "compression.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    table = report.compression_table(results)
    (out / "compression.md").write_text(table + "\n")
    print(table)
    written = [out / "compression.json", out / "compression.md"]
    if docs:
        written += report.update_compression_docs(results, ROOT / "docs")
    for failure in results["failures"]:
        print(f"warning: {failure}", file=sys.stderr)
    print("wrote " + ", ".join(str(path) for path in written), file=sys.stderr)
    return 1 if results["failures"] else 0
