"""Turn a run's medians into the table, the target checks, the chart and the docs section."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

NONE = "n/a"
START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"

LABELS = {
    "bare": "bare ASGI",
    "trioweb": "trioweb",
    "starlette": "Starlette",
    "quart-trio": "quart-trio",
}


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
            ">= 0.95x",
            None if ratio is None else ratio >= 0.95,
        )
        for peer in ("starlette", "quart-trio"):
            ratio = _ratio(_get(medians, tw, f"{key}.msgs_s"), _get(medians, peer, f"{key}.msgs_s"))
            if ratio is not None:
                check(f"echo {label} throughput vs {LABELS[peer]}", ratio, "> 1x", ratio > 1)
    ratio = _ratio(_get(medians, tw, "handshakes.per_s"), _get(medians, "bare", "handshakes.per_s"))
    check("handshakes/s vs bare ASGI", ratio, ">= 0.95x", None if ratio is None else ratio >= 0.95)
    mine, bare = (
        _get(medians, tw, "memory.kib_per_socket"),
        _get(medians, "bare", "memory.kib_per_socket"),
    )
    extra = None if mine is None or bare is None else mine - bare
    check(
        "memory per idle socket over bare ASGI (KiB)",
        extra,
        "<= +4 KiB",
        None if extra is None else extra <= 4,
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
        ">= 1.5x",
        None if ratio is None else ratio >= 1.5,
    )
    return out


# -- the table -----------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return NONE
    return f"{value:,.{digits}f}"


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

    head = row("", [LABELS[n] for n in names])
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
    mem_ref = _get(med, "bare", "memory.kib_per_socket")
    mem_cells = []
    for n in names:
        value = _get(med, n, "memory.kib_per_socket")
        text = _num(value, 1)
        if n != "bare" and value is not None and mem_ref is not None:
            text += f" ({value - mem_ref:+.1f})"
        mem_cells.append(text)
    lines.append(row(f"memory, KiB per idle socket ({plan['hold_sockets']} open)", mem_cells))
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

    lines += ["", "Server and load generator CPU, in % of one core, during each measurement:", ""]
    lines += [row("", [LABELS[n] for n in names]), rule]
    for label, key in (
        ("echo 16 B", "echo16"),
        ("echo 16 KiB", "echo16k"),
        ("handshakes", "handshakes"),
        ("fan-out", "fanout"),
    ):
        cells = []
        for n in names:
            server, client = _get(med, n, f"{key}.server_cpu"), _get(med, n, f"{key}.client_cpu")
            cells.append(
                NONE
                if server is None or client is None
                else f"server {100 * server:.0f} / client {100 * client:.0f}"
            )
        lines.append(row(label, cells))

    lines += ["", "How the cost grows (server CPU time per message or delivery, µs):", ""]
    lines += [row("", [LABELS[n] for n in names]), rule]
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
        ax.bar(xs, values, width, label=LABELS[name], color=COLORS[name])
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
        ax.bar(xs, p99, width, color=COLORS[name], alpha=0.35)
        ax.bar(xs, p50, width, color=COLORS[name], label=LABELS[name])
    ax.set_xticks([g + width * (len(names) - 1) / 2 for g in range(2)])
    ax.set_xticklabels(["echo 16 B", "echo 16 KiB"])
    ax.set_ylabel("ms")
    ax.set_title(f"echo latency, {plan['echo_sockets']} sockets (p50 solid, p99 light)")

    ax = axes[0][2]
    values = [_get(med, n, "memory.kib_per_socket") or 0 for n in names]
    ax.bar([LABELS[n] for n in names], values, color=[COLORS[n] for n in names])
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
                    *zip(*points, strict=True), marker="o", label=LABELS[name], color=COLORS[name]
                )
        ax.set_xscale("log")
        ax.set_xlabel("sockets" if "echo" in key else "subscribers")
        ax.set_ylim(bottom=0)
        ax.set_title(title)

    ax = axes[1][2]
    tc = [(n, _get(med, n, "testclient.round_trips_s")) for n in names]
    tc = [(n, v) for n, v in tc if v is not None]
    ax.bar([LABELS[n] for n, _ in tc], [v for _, v in tc], color=[COLORS[n] for n, _ in tc])
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
    text = page.read_text() if page.exists() else f"# Performance\n\n{START}\n{END}\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    page.write_text(text)
    return [page] + ([image] if image else [])
