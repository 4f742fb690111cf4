"""Turn a run's medians into the table, the target checks, the chart and the docs section."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NONE = "n/a"
START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"
COMPRESSION_START = "<!-- bench:compression:start -->"
COMPRESSION_END = "<!-- bench:compression:end -->"

LABELS = {
    "bare": "bare ASGI",
    "trioweb": "trioweb",
    "starlette": "Starlette",
    "quart-trio": "quart-trio",
}
COMPRESSION_LABELS = {
    "off": "None",
    "default": "Compression()",
    "takeover-12": "Compression(context_takeover=True, window_bits=12)",
    "takeover": "Compression(context_takeover=True)",
}


def label(name: str) -> str:
    """A server's column title: ``trioweb (base)`` for ``trioweb@base``, the setting for a
    trioweb with one."""
    name, _, tree = name.partition("@")
    base, _, variant = name.partition("+")
    text = f"trioweb, {COMPRESSION_LABELS[variant]}" if variant else LABELS.get(base, base)
    return f"{text} ({tree})" if tree else text


def _get(medians: dict[str, dict[str, float]], name: str, key: str) -> float | None:
    value = medians.get(name, {}).get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# -- targets -------------------------------------------------------------------------------


def targets(medians: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    out: list[dict[str, Any]] = []

    def check(name: str, value: float | None, goal: str, met: bool | None, unit: str = "x") -> None:
        out.append({"target": name, "value": value, "goal": goal, "met": met, "unit": unit})

    tw = "trioweb"
    for key, label in (("echo16", "16 B"), ("echo16k", "16 KiB")):
        ratio = _ratio(_get(medians, tw, f"{key}.msgs_s"), _get(medians, "bare", f"{key}.msgs_s"))
        check(
            f"echo {label} throughput vs bare ASGI",
            ratio,
            ">= 0.97x",
            None if ratio is None else ratio >= 0.97,
        )
        for peer in ("starlette", "quart-trio"):
            ratio = _ratio(_get(medians, tw, f"{key}.msgs_s"), _get(medians, peer, f"{key}.msgs_s"))
            if ratio is not None:
                check(f"echo {label} throughput vs {LABELS[peer]}", ratio, ">= 1x", ratio >= 1)
    ratio = _ratio(_get(medians, tw, "handshakes.per_s"), _get(medians, "bare", "handshakes.per_s"))
    check("handshakes/s vs bare ASGI", ratio, ">= 0.95x", None if ratio is None else ratio >= 0.95)
    ratio = _ratio(
        _get(medians, tw, "handshakes.per_s"), _get(medians, "starlette", "handshakes.per_s")
    )
    if ratio is not None:
        check("handshakes/s vs Starlette", ratio, ">= 1x", ratio >= 1)
    mine, bare = (
        _get(medians, tw, "memory.kib_per_socket"),
        _get(medians, "bare", "memory.kib_per_socket"),
    )
    extra = None if mine is None or bare is None else mine - bare
    check(
        "memory per idle socket over bare ASGI (KiB)",
        extra,
        "<= +3.8 KiB",
        None if extra is None else extra <= 3.8,
        unit="KiB",
    )
    browser = _get(medians, tw, "memory_browser.kib_per_socket")
    extra = None if browser is None or bare is None else browser - bare
    check(
        "memory per browser-like socket (deflate, 1 KiB each way) over a plain idle bare "
        "ASGI socket (KiB)",
        extra,
        "<= +6 KiB",
        None if extra is None else extra <= 6,
        unit="KiB",
    )
    ratio = _ratio(
        _get(medians, tw, "fanout.deliveries_s"), _get(medians, "bare", "fanout.deliveries_s")
    )
    check(
        "fan-out deliveries/s vs hand-written loop (bare ASGI)",
        ratio,
        ">= 0.9x",
        None if ratio is None else ratio >= 0.9,
    )
    ratio = _ratio(
        _get(medians, tw, "testclient.round_trips_s"),
        _get(medians, "quart-trio", "testclient.round_trips_s"),
    )
    check(
        "test client round trips/s vs quart-trio's",
        ratio,
        ">= 3x",
        None if ratio is None else ratio >= 3,
    )
    return out


# -- the table -----------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return NONE
    return f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return NONE if value is None else f"{100 * value:.0f} %"


def _cell(value: float | None, ref: float | None, digits: int = 0, show_ratio: bool = True) -> str:
    text = _num(value, digits)
    ratio = _ratio(value, ref)
    if show_ratio and ratio is not None:
        text += f" ({ratio:.2f}x)"
    return text


def table(results: dict[str, Any]) -> str:
    """The results as Markdown tables: throughput, CPU, scaling, targets."""
    med: dict[str, dict[str, float]] = results["medians"]
    names: list[str] = [n for n in results["servers"] if n in med]
    plan = results["plan"]

    def row(label: str, cells: list[str]) -> str:
        return "| " + " | ".join([label, *cells]) + " |"

    head = row("", [label(n) for n in names])
    rule = "|" + "---|" * (len(names) + 1)
    lines = [
        "Medians over "
        f"{plan['rounds']} round(s); ratios are against the bare ASGI app on the same server.",
        "",
        head,
        rule,
    ]

    def metric(label: str, key: str, digits: int = 0, ratio: bool = True) -> None:
        ref = _get(med, "bare", key)
        cells = [_cell(_get(med, n, key), ref, digits, ratio and n != "bare") for n in names]
        if any(cell != NONE for cell in cells):
            lines.append(row(label, cells))

    def latency(label: str, key: str) -> None:
        cells = [
            f"{_num(_get(med, n, f'{key}.p50_ms'), 2)} / {_num(_get(med, n, f'{key}.p99_ms'), 2)}"
            for n in names
        ]
        lines.append(row(label, cells))

    sockets = plan["echo_sockets"]
    metric(f"echo 16 B, msg/s ({sockets} sockets)", "echo16.msgs_s")
    latency("echo 16 B, p50 / p99 ms", "echo16")
    metric(f"echo 16 KiB, msg/s ({sockets} sockets)", "echo16k.msgs_s")
    latency("echo 16 KiB, p50 / p99 ms", "echo16k")
    metric("handshakes/s (open, 1 message, close)", "handshakes.per_s")

    def kib(label: str, key: str) -> None:
        ref = _get(med, "bare", key)
        cells = []
        for n in names:
            value = _get(med, n, key)
            text = _num(value, 1)
            if n != "bare" and value is not None and ref is not None:
                text += f" ({value - ref:+.1f})"
            cells.append(text)
        if any(cell != NONE for cell in cells):
            lines.append(row(label, cells))

    kib(f"memory, KiB per idle socket ({plan['hold_sockets']} open)", "memory.kib_per_socket")
    kib(
        "memory, KiB per socket after 1 KiB each way, no deflate offered",
        "memory_plain1k.kib_per_socket",
    )
    kib(
        "memory, KiB per browser-like socket: deflate offered, 1 KiB each way",
        "memory_browser.kib_per_socket",
    )
    if any(_get(med, n, "memory_browser.negotiated") is not None for n in names):
        lines.append(
            row(
                "browser-like sockets: deflate accepted / echo compressed",
                [
                    f"{_percent(_get(med, n, 'memory_browser.negotiated'))} / "
                    f"{_percent(_get(med, n, 'memory_browser.compressed'))}"
                    for n in names
                ],
            )
        )
    subs = plan["fanout_subscribers"]
    metric(f"fan-out to {subs}, deliveries/s", "fanout.deliveries_s")
    lines.append(
        row(
            "fan-out, slowest subscriber lag ms (median / max)",
            [
                f"{_num(_get(med, n, 'fanout.lag_p50_ms'), 1)} / "
                f"{_num(_get(med, n, 'fanout.lag_max_ms'), 1)}"
                for n in names
            ],
        )
    )
    tc_ref = _get(med, "quart-trio", "testclient.round_trips_s")
    lines.append(
        row(
            "test client, round trips/s (ratio: vs quart-trio)",
            [
                _cell(_get(med, n, "testclient.round_trips_s"), tc_ref, 0, n != "quart-trio")
                for n in names
            ],
        )
    )

    lines += [
        "",
        "Server and load generator CPU, in % of one core, during each measurement (queued: "
        "the server was ready to run but another process had its CPU):",
        "",
    ]
    lines += [row("", [label(n) for n in names]), rule]
    for title, key in (
        ("echo 16 B", "echo16"),
        ("echo 16 KiB", "echo16k"),
        ("handshakes", "handshakes"),
        ("fan-out", "fanout"),
    ):
        cells = []
        for n in names:
            server, client = _get(med, n, f"{key}.server_cpu"), _get(med, n, f"{key}.client_cpu")
            queued = _get(med, n, f"{key}.server_queued")
            cells.append(
                NONE
                if server is None or client is None
                else f"server {100 * server:.0f} / client {100 * client:.0f}"
                + ("" if queued is None else f" / queued {100 * queued:.0f}")
            )
        lines.append(row(title, cells))

    lines += [
        "",
        "Server CPU time per message, connection or delivery, µs (steadier than rates on a busy "
        "machine), and how it grows:",
        "",
    ]
    lines += [row("", [label(n) for n in names]), rule]
    metric(f"echo 16 B, {plan['echo_sockets']} sockets", "echo16.us_per_msg", 1)
    metric(f"echo 16 KiB, {plan['echo_sockets']} sockets", "echo16k.us_per_msg", 1)
    metric("handshake (open, 1 message, close)", "handshakes.us_per_handshake", 1)
    for count in plan["scale_echo"]:
        metric(f"echo, {count} sockets", f"scale.echo.{count}.us_per_msg", 1)
    for count in plan["scale_fanout"]:
        metric(f"fan-out, {count} subscribers", f"scale.fanout.{count}.us_per_delivery", 1)

    lines += ["", "Targets (trioweb):", ""]
    lines += ["| target | goal | measured | met |", "|---|---|---|---|"]
    for target in results["targets"]:
        value = target["value"]
        if value is None:
            shown = NONE
        elif target["unit"] == "KiB":
            shown = f"{value:+.1f} KiB"
        else:
            shown = f"{value:.2f}x"
        met = {True: "yes", False: "**no**", None: "not measured"}[target["met"]]
        lines.append(f"| {target['target']} | {target['goal']} | {shown} | {met} |")
    return "\n".join(lines)


# -- the chart -----------------------------------------------------------------------------


COLORS = {"bare": "#8c8c8c", "trioweb": "#2a7ab0", "starlette": "#e08a2c", "quart-trio": "#5aa05a"}


def color(name: str) -> str:
    """A server's colour in the chart; another trioweb tree's is a lighter blue."""
    return "#8fc0e0" if "@" in name else COLORS.get(name, "#444444")


def chart(results: dict[str, Any], path: Path) -> Path | None:
    """A PNG of the main numbers; ``None`` if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    med: dict[str, dict[str, float]] = results["medians"]
    names = [n for n in results["servers"] if n in med]
    plan = results["plan"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(
        f"trioweb and its peers on hypercorn's trio worker ({plan['name']} run, "
        f"median of {plan['rounds']} round(s); {results['machine']['date']})"
    )

    ax = axes[0][0]
    groups = [
        ("echo 16 B", "echo16.msgs_s"),
        ("echo 16 KiB", "echo16k.msgs_s"),
        ("handshakes", "handshakes.per_s"),
        ("fan-out", "fanout.deliveries_s"),
    ]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [_ratio(_get(med, name, k), _get(med, "bare", k)) or 0 for _, k in groups]
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=label(name), color=color(name))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(0.95, color="black", linewidth=0.8, linestyle=":")
    ax.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels([g for g, _ in groups])
    ax.set_title("throughput relative to bare ASGI (higher is better)")
    ax.set_ylim(0, 1.35)
    ax.legend(fontsize="small", loc="upper center", ncol=len(names))

    ax = axes[0][1]
    for i, name in enumerate(names):
        p50 = [_get(med, name, f"{k}.p50_ms") or 0 for k in ("echo16", "echo16k")]
        p99 = [_get(med, name, f"{k}.p99_ms") or 0 for k in ("echo16", "echo16k")]
        xs = [g + i * width for g in range(2)]
        ax.bar(xs, p99, width, color=color(name), alpha=0.35)
        ax.bar(xs, p50, width, color=color(name), label=label(name))
    ax.set_xticks([g + width * (len(names) - 1) / 2 for g in range(2)])
    ax.set_xticklabels(["echo 16 B", "echo 16 KiB"])
    ax.set_ylabel("ms")
    ax.set_title(f"echo latency, {plan['echo_sockets']} sockets (p50 solid, p99 light)")

    ax = axes[0][2]
    values = [_get(med, n, "memory.kib_per_socket") or 0 for n in names]
    ax.bar([label(n) for n in names], values, color=[color(n) for n in names])
    ax.set_ylabel("KiB")
    ax.set_title(f"server RSS per idle socket ({plan['hold_sockets']} open)")

    for ax, counts, key, title in (
        (axes[1][0], plan["scale_echo"], "scale.echo.{}.us_per_msg", "echo: server µs per message"),
        (
            axes[1][1],
            plan["scale_fanout"],
            "scale.fanout.{}.us_per_delivery",
            "fan-out: server µs per delivery",
        ),
    ):
        for name in names:
            points = [(c, _get(med, name, key.format(c))) for c in counts]
            points = [(c, v) for c, v in points if v is not None]
            if points:
                ax.plot(
                    *zip(*points, strict=True), marker="o", label=label(name), color=color(name)
                )
        ax.set_xscale("log")
        ax.set_xlabel("sockets" if "echo" in key else "subscribers")
        ax.set_ylim(bottom=0)
        ax.set_title(title)

    ax = axes[1][2]
    tc = [(n, _get(med, n, "testclient.round_trips_s")) for n in names]
    tc = [(n, v) for n, v in tc if v is not None]
    ax.bar([label(n) for n, _ in tc], [v for _, v in tc], color=[color(n) for n, _ in tc])
    ax.set_title("in-process test client, round trips/s")

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# -- the docs ------------------------------------------------------------------------------


def describe_run(results: dict[str, Any]) -> str:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(m["versions"].items()))
    pinning = results["pinning"]
    pinned = (
        f"server pinned to CPU {pinning['server']}, load generator to {pinning['clients']}"
        if pinning["server"]
        else "no CPU pinning"
    )
    return "\n".join(
        [
            f"- Run: `{results['plan']['name']}` plan, {results['plan']['rounds']} round(s), "
            f"{results['seconds']:.0f} s, on {m['date']}.",
            f"- Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
            f"Python {m['python']}; {pinned}.",
            f"- Load generator: {', '.join(results['client_backend']) or 'n/a'} "
            f"in {results['clients']} process(es).",
            f"- Versions: {versions}.",
        ]
        + (
            [f"- Not installed, so not measured: {', '.join(results['skipped'])}."]
            if results.get("skipped")
            else []
        )
    )


def update_docs(results: dict[str, Any], docs: Path) -> list[Path]:
    """Rewrite the generated section of ``docs/performance.md`` and the chart beside it."""
    image = chart(results, docs / "img" / "bench.png")
    page = docs / "performance.md"
    section = "\n".join(
        [
            START,
            "<!-- Written by `python -m benchmarks` (nox -s bench): edits here are lost. -->",
            "",
            describe_run(results),
            "",
            "![trioweb, a bare ASGI app, Starlette and quart-trio side by side](img/bench.png)"
            if image
            else "(matplotlib was not installed: no chart.)",
            "",
            table(results),
            END,
        ]
    )
    _replace_section(page, START, END, section)
    return [page] + ([image] if image else [])


def _replace_section(page: Path, start: str, end: str, section: str) -> None:
    """Put ``section`` (which begins with ``start`` and ends with ``end``) in place of the
    page's part between those markers, or at its end."""
    text = page.read_text() if page.exists() else f"# Performance\n\n{start}\n{end}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    page.write_text(text)


# -- the compression comparison ------------------------------------------------------------


def compression_label(name: str) -> str:
    return "bare ASGI, hypercorn's deflate" if name == "bare" else label(name)


def compression_table(results: dict[str, Any]) -> str:
    """The compression comparison as a Markdown table; ratios and differences are against
    trioweb with compression off."""
    med: dict[str, dict[str, float]] = results["medians"]
    names: list[str] = [n for n in results["servers"] if n in med]
    plan = results["plan"]
    ref = "trioweb+off"

    def row(title: str, cells: list[str]) -> str:
        return "| " + " | ".join([title, *cells]) + " |"

    def value(key: str, digits: int, diff: bool = False, ratio: bool = False) -> list[str]:
        cells = []
        base = _get(med, ref, key)
        for n in names:
            number = _get(med, n, key)
            text = _num(number, digits)
            if n != ref and number is not None and base is not None:
                if diff:
                    text += f" ({number - base:+.{digits}f})"
                elif ratio and base:
                    text += f" ({number / base:.2f}x)"
            cells.append(text)
        return cells

    extensions = results.get("extensions", {})
    counted = "picows" in results.get("client_backend", [])  # the fallback counts no bytes
    lines = [
        f"Medians over {plan['rounds']} round(s). The clients offer permessage-deflate as Chrome "
        "does;\nfigures in brackets are against trioweb with `compression=None`.",
        "",
        row("", [compression_label(n) for n in names]),
        "|" + "---|" * (len(names) + 1),
        row(
            "the server's answer to the offer",
            [f"`{extensions[n]}`" if extensions.get(n) else "declined" for n in names],
        ),
        row(
            f"memory, KiB per idle socket after 1 KiB each way ({plan['hold_sockets']} open)",
            value("memory.kib_per_socket", 1, diff=True),
        ),
        row(
            f"echo 1 KiB JSON, msg/s ({plan['echo_sockets']} sockets)",
            value("echo.msgs_s", 0, ratio=True),
        ),
        row("echo, server CPU µs per message", value("echo.us_per_msg", 1, diff=True)),
        row(
            "echo, p50 / p99 ms",
            [
                f"{_num(_get(med, n, 'echo.p50_ms'), 2)} / {_num(_get(med, n, 'echo.p99_ms'), 2)}"
                for n in names
            ],
        ),
        row(
            "bytes on the wire per message byte, client to server / server to client",
            [
                f"{_wire(_get(med, n, 'echo.sent_ratio'), counted)} / "
                f"{_wire(_get(med, n, 'echo.received_ratio'), counted)}"
                for n in names
            ],
        ),
        row(
            "echo, server / client CPU in % of one core (server queued for a CPU)",
            [
                f"{_num(100 * (_get(med, n, 'echo.server_cpu') or 0))} / "
                f"{_num(100 * (_get(med, n, 'echo.client_cpu') or 0))} "
                f"({_num(100 * (_get(med, n, 'echo.server_queued') or 0))})"
                for n in names
            ],
        ),
    ]
    return "\n".join(lines)


def _wire(ratio: float | None, counted: bool) -> str:
    """Wire bytes per message byte: 1 where nothing was compressed (if bytes were counted)."""
    if not counted:
        return NONE
    return _num(1.0 if ratio is None else ratio, 2)


def update_compression_docs(results: dict[str, Any], docs: Path) -> list[Path]:
    """Rewrite the generated part of the Compression section of ``docs/performance.md``."""
    page = docs / "performance.md"
    section = "\n".join(
        [
            COMPRESSION_START,
            "<!-- Written by `python -m benchmarks --compression`: edits here are lost. -->",
            "",
            f"- Command: `{results['command']}`.",
            describe_run(results),
            "",
            compression_table(results),
            COMPRESSION_END,
        ]
    )
    _replace_section(page, COMPRESSION_START, COMPRESSION_END, section)
    return [page]


# -- rooms ---------------------------------------------------------------------------------

ROOMS_START = "<!-- bench:rooms:start -->"
ROOMS_END = "<!-- bench:rooms:end -->"
ROOMS_STORES = {"memory": "in-process", "redis": "Redis"}
TIMES = "\N{MULTIPLICATION SIGN}"
#: The commands a client sends; the others in a row run inside its scripts (HMGET: no script
#: of the rooms runs it). In a row where no script ran, the client sent every command.
_CLIENT_COMMANDS = ("evalsha", "eval", "subscribe", "unsubscribe", "hmget")


def _rooms_operations(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """The operations of the Redis cost table: key prefix and what it is."""
    rows = [
        ("join", "join an open room"),
        ("leave", "leave it (others stay)"),
        ("open", "first join, opening the room here"),
        ("close", "last leave, closing it here"),
        ("open_owned", "first join, with an owner task"),
        ("close_owned", "last leave, with an owner task"),
    ]
    for rooms, members in plan["heartbeats"]:
        rows.append((f"heartbeat.{rooms}x{members}", f"heartbeat of one room of {members} members"))
    rows.append(("renew", "lease renewal of one owned room"))
    return rows


def _commands(values: dict[str, float], prefix: str) -> str:
    """``EVALSHA (TIME, ZADD, ...)``: what one operation has Redis run, from its counts."""
    counts = {
        key[len(prefix) + 5 :]: value
        for key, value in values.items()
        if key.startswith(f"{prefix}.cmd.") and value >= 0.05
    }

    def one(name: str) -> str:
        count = counts[name]
        shown = name.upper()
        if abs(count - 1) < 0.05:
            return shown
        digits = 0 if abs(count - round(count)) < 0.05 else 1
        return f"{shown} {TIMES}{count:.{digits}f}"

    # Whether a script ran, even once in many operations (one heartbeat script serves fifty
    # rooms): then the commands other than the client's ran inside it.
    scripted = any(values.get(f"{prefix}.cmd.{name}", 0) > 0 for name in ("evalsha", "eval"))
    client = _CLIENT_COMMANDS if scripted else tuple(sorted(counts))
    sent = [one(n) for n in client if n in counts]
    inside = [one(n) for n in sorted(counts) if n not in client]
    text = ", ".join(sent) or NONE
    return text + (f" ({', '.join(inside)})" if inside else "")


def _history_operations(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """The history's rows: key prefix and what it is."""
    rows = [
        ("history.publish", "`room.publish`, not kept"),
        ("history.append", "`room.history.append`, kept"),
        ("history.update", "`room.state.update` with `announce`"),
        ("history.update_stored", "the same with `history=True`"),
    ]
    for n in plan.get("history_recover", ()):
        rows.append((f"recover.{n}", f"`room.history.recover` of {n:,} messages"))
    return rows


def _redis_cost_row(red: dict[str, float], key: str, title: str) -> str:
    """A row of a Redis cost table: round trips, commands, bytes, CPU, what runs."""

    def get(name: str) -> float | None:
        value = red.get(name)
        return None if value is None or value != value else value

    cells = [
        _num(get(f"{key}.round_trips"), 1),
        _num(get(f"{key}.commands"), 1),
        f"{_num(get(f'{key}.bytes_in'))} / {_num(get(f'{key}.bytes_out'))}",
        _num(get(f"{key}.redis_us")),
        _num(get(f"{key}.cpu_us")),
        _commands(red, key),
    ]
    return "| " + " | ".join([title, *cells]) + " |"


def rooms_table(results: dict[str, Any]) -> str:
    """The rooms benchmark as Markdown tables."""
    med: dict[str, dict[str, float]] = results["medians"]
    plan = results["plan"]
    stores = [s for s in ("memory", "redis") if s in med]
    mem, red = med.get("memory", {}), med.get("redis", {})

    def row(title: str, cells: list[str]) -> str:
        return "| " + " | ".join([title, *cells]) + " |"

    def get(store: str, key: str) -> float | None:
        return _get(med, store, key)

    def timing(store: str, key: str, digits: int = 0, unit: str = "us") -> str:
        p50, p95 = get(store, f"{key}.p50_{unit}"), get(store, f"{key}.p95_{unit}")
        if p50 is None:
            return NONE
        return f"{_num(p50, digits)} / {_num(p95, digits)}"

    head = [ROOMS_STORES[s] for s in stores]
    rule = "|" + "---|" * (len(stores) + 1)
    lines = [
        f"Medians over {plan['rounds']} round(s); each part runs in a process of its own, every "
        "member, subscriber and watcher a task of its own.",
        "",
        f"**Join and leave**, µs: median / p95 of {plan['joins']:,} members joining one open "
        f"room one after the other (then leaving), and of {plan['opens']:,} first joins "
        "(then last leaves); in brackets, this process's CPU time per operation, the processing "
        "of its presence announcement included.",
        "",
        row("", head),
        rule,
    ]
    for key, title in _rooms_operations(plan)[:6]:
        cells = []
        for store in stores:
            text = timing(store, key)
            cpu = get(store, f"{key}.cpu_us")
            cells.append(text if cpu is None else f"{text} ({_num(cpu)})")
        lines.append(row(title, cells))
    for key, title in (
        ("ping", "for reference: a bare PING through coredis"),
        ("evalsha", "for reference: EVALSHA of a script that does nothing"),
        ("publish", "for reference: a hub publish nobody receives"),
        ("publish_receive", "for reference: a hub publish, received back"),
    ):
        if get("redis", f"ref.{key}.p50_us") is not None:
            cells = [
                NONE
                if store != "redis"
                else f"{timing(store, f'ref.{key}')} ({_num(get(store, f'ref.{key}.cpu_us'))})"
                for store in stores
            ]
            lines.append(row(title, cells))

    if red:
        lines += [
            "",
            "**Redis per operation**: round trips (commands the client sends), commands Redis "
            "runs (those inside the scripts included), bytes to and from Redis (the pub/sub "
            "deliveries to this process included), redis-server's CPU time and this process's:",
            "",
            "| | round trips | commands run | bytes to / from Redis | Redis CPU µs "
            "| this process's CPU µs | what runs |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, title in _rooms_operations(plan):
            if get("redis", f"{key}.commands") is None:
                continue
            lines.append(_redis_cost_row(red, key, title))
        ttls = results["ttls"]
        rates = []
        for r, m in plan["heartbeats"]:
            rate = get("redis", f"heartbeat.{r}x{m}.per_room_s")
            text = f"{r} room{'s' if r != 1 else ''} of {m}: {_num(rate, 1)} heartbeats"
            if rate and r >= 20:
                # The loop sleeps a quarter of the TTL, then beats each room in turn (with one
                # room, the count of passes in the window is too coarse to tell).
                pass_ms = 1000 * (1 / rate - ttls["presence"] / 4) / r
                text += f", a pass taking {pass_ms:.2f} ms per room"
            rates.append(text)
        lines += [
            "",
            f"Measured at `presence_ttl={ttls['presence']:g}` (a pass over the rooms every "
            f"{ttls['presence'] / 4:g} s plus the pass itself), per room per second: "
            + "; ".join(rates)
            + f". At `lease_ttl={ttls['lease']:g}`, {_num(get('redis', 'renew.per_room_s'), 1)} "
            "renewals per "
            "owned room per second.",
        ]

    if mem.get("memory.members"):
        n, spread_rooms = int(mem["memory.members"]), int(mem["memory.rooms"])
        task = get("memory", "memory.task.kib")

        def kib(key: str) -> str:
            value = get("memory", key)
            text = _num(value, 2)
            if value is not None and task is not None and key != "memory.task.kib":
                text += f" ({value - task:+.2f})"
            return text

        lines += [
            "",
            f"**Memory**, KiB per holder task (traced by tracemalloc, in-process store), "
            f"{n:,} held at once; in brackets, over a parked task that holds nothing:",
            "",
            f"| | in one topic or room | in {spread_rooms} of {n // spread_rooms} |",
            "|---|---|---|",
            row("a parked task, holding nothing", [kib("memory.task.kib"), NONE]),
            row(
                "a bare hub subscription",
                [kib("memory.subscription.kib"), kib("memory.subscription_spread.kib")],
            ),
            row("a room member", [kib("memory.member.kib"), kib("memory.member_spread.kib")]),
        ]
        one, many = get("memory", "memory.member.kib"), get("memory", "memory.member_spread.kib")
        if one is not None and many is not None:
            lines.append(
                f"\nAn open room costs {(many - one) * n / spread_rooms:,.1f} KiB over its "
                "members (the difference between the two columns, per room)."
            )

    lines += [
        "",
        f"**Presence**, ms: median / p95 of {plan['presence_changes']:,} joins (and leaves) "
        "until another view of the room has them. In-process: another task watching the same "
        "room's `presence.changes()`; Redis: another `Rooms` on another hub, in the same "
        "process.",
        "",
        row("", head),
        rule,
        row("join, until seen", [timing(s, "presence.join", 2, "ms") for s in stores]),
        row("leave, until seen", [timing(s, "presence.leave", 2, "ms") for s in stores]),
        "",
        "**Fan-out**, `room.publish` against `hub.publish` to as many subscribers (each a "
        "task reading its queue), one publish at a time until all have it, windows of each "
        f"alternating ({plan['fanout_windows']} of {plan['fanout_publishes']} publishes): "
        "this process's CPU µs per delivery, hub / room (the median of the windows' ratios), "
        "and µs from the publish until the last subscriber has it (median), hub / room:",
        "",
        row("", [f"{ROOMS_STORES[s]}, {what}" for s in stores for what in ("CPU", "time")]),
        "|" + "---|" * (2 * len(stores) + 1),
    ]
    for size in plan["fanout_sizes"]:
        cells = []
        for store in stores:
            hub = get(store, f"fanout.{size}.hub.us_per_delivery")
            room = get(store, f"fanout.{size}.room.us_per_delivery")
            ratio = get(store, f"fanout.{size}.cpu_ratio")
            cells.append(
                f"{_num(hub, 1)} / {_num(room, 1)}" + ("" if ratio is None else f" ({ratio:.2f}x)")
            )
            cells.append(
                f"{_num(get(store, f'fanout.{size}.hub.publish.p50_us'))} / "
                f"{_num(get(store, f'fanout.{size}.room.publish.p50_us'))}"
            )
        lines.append(row(f"{size:,} subscriber{'s' if size != 1 else ''}", cells))
    if any(get(s, "history.append.p50_us") is not None for s in stores):
        lines += _history_lines(results, stores)
    return "\n".join(lines)


def _history_lines(results: dict[str, Any], stores: Sequence[str]) -> list[str]:
    """The History part of the rooms tables."""
    med: dict[str, dict[str, float]] = results["medians"]
    plan = results["plan"]
    red = med.get("redis", {})

    def get(store: str, key: str) -> float | None:
        return _get(med, store, key)

    def timing(store: str, key: str, cpu: bool = True) -> str:
        p50, p95 = get(store, f"{key}.p50_us"), get(store, f"{key}.p95_us")
        if p50 is None:
            return NONE
        text = f"{_num(p50)} / {_num(p95)}"
        used = get(store, f"{key}.cpu_us") if cpu else None
        return text if used is None else f"{text} ({_num(used)})"

    def row(title: str, cells: list[str]) -> str:
        return "| " + " | ".join([title, *cells]) + " |"

    calls = plan["history_publishes"] * plan["history_windows"]
    lines = [
        "",
        f"**History**, µs: median / p95 of one call ({calls:,} of each, in alternating windows "
        f"of {plan['history_publishes']:,}), in a room of one member whose history is full (each "
        "stored message trims the oldest); in brackets, this process's CPU time per call, the "
        f"delivery to the member included. Then {plan['history_recoveries']:,} recoveries of "
        "each size, alone and in a join with `since`, against a join without it:",
        "",
        row("", [ROOMS_STORES[s] for s in stores]),
        "|" + "---|" * (len(stores) + 1),
    ]
    for key, title in _history_operations(plan):
        lines.append(row(title, [timing(s, key, not key.startswith("recover.")) for s in stores]))
    lines.append(row("a join without `since`", [timing(s, "join_plain") for s in stores]))
    for n in plan.get("history_recover", ()):
        lines.append(
            row(
                f"a join with `since`, {n:,} messages to recover",
                [timing(s, f"join_since.{n}") for s in stores],
            )
        )
    if red.get("history.append.commands") is not None:
        lines += [
            "",
            "**The history on Redis, per operation**, as in the table above:",
            "",
            "| | round trips | commands run | bytes to / from Redis | Redis CPU µs "
            "| this process's CPU µs | what runs |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, title in _history_operations(plan):
            if red.get(f"{key}.commands") is not None:
                lines.append(_redis_cost_row(red, key, title))
    message = {s: get(s, "history.memory.message_b") for s in stores}
    room = get("redis", "history.memory.room_b")
    if any(v is not None for v in message.values()):
        parts = []
        if message.get("redis") is not None:
            parts.append(f"{_num(message['redis'])} bytes in Redis (`used_memory`)")
        if message.get("memory") is not None:
            parts.append(f"{_num(message['memory'])} bytes in-process (traced)")
        any_store = next(s for s in stores if message.get(s) is not None)
        messages = int(get(any_store, "history.memory.messages") or 0)
        rooms = int(get(any_store, "history.memory.rooms") or 0)
        text = (
            "\n**Memory**: a stored message of 100 bytes (about 130 with its offset) takes "
            + " and ".join(parts)
            + f", over {messages:,} in one room"
        )
        if room is not None:
            text += (
                f"; a room's history costs Redis {_num(room)} bytes more than its messages (the "
                f"first message stored in each of {rooms:,} rooms: a stream and its counter, "
                "each with an expiry)"
            )
        lines.append(text + ".")
    return lines


def describe_rooms_run(results: dict[str, Any]) -> str:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(m["versions"].items()))
    pinning = results["pinning"]
    pinned = (
        f"the measuring process pinned to CPU {pinning['bench']}, redis-server to "
        f"{pinning['redis']}"
        if pinning.get("bench")
        else "no CPU pinning"
    )
    return "\n".join(
        [
            f"- Command: `{results['command']}`.",
            f"- Run: `{results['plan']['name']}` plan, {results['plan']['rounds']} round(s), "
            f"{results['seconds']:.0f} s, on {m['date']}, commit `{results['commit']}`.",
            f"- Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, "
            f"Python {m['python']}; {pinned}; redis-server on a unix socket.",
            f"- Versions: {versions}.",
        ]
        + (
            ["- redis-server was not installed: no Redis figures."]
            if results.get("skipped")
            else []
        )
    )


def update_rooms_docs(results: dict[str, Any], docs: Path) -> list[Path]:
    """Rewrite the generated part of the Rooms section of ``docs/performance.md``."""
    page = docs / "performance.md"
    section = "\n".join(
        [
            ROOMS_START,
            "<!-- Written by `python -m benchmarks --rooms`: edits here are lost. -->",
            "",
            describe_rooms_run(results),
            "",
            rooms_table(results),
            ROOMS_END,
        ]
    )
    _replace_section(page, ROOMS_START, ROOMS_END, section)
    return [page]
