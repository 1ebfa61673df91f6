"""Turns one run's raw numbers into the markdown table and the PNG plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

Run = dict[str, Any]


def _find(runs: Sequence[Run], **match: Any) -> Run:
    for run in runs:
        if all(run.get(k) == v for k, v in match.items()):
            return run
    raise KeyError(match)


def _cpu_us(run: Run, process: str) -> float:
    requests = run["requests"]
    return 1e6 * run["cpu_s"].get(process, 0.0) / requests if requests else 0.0


def _instructions(run: Run, process: str) -> str:
    """Instructions per request in millions, where ``perf`` counted them (bench/load.py)."""
    counted = run.get("instructions", {}).get(process)
    requests = run["requests"]
    return f"{counted / requests / 1e6:.2f} M" if counted and requests else "n/a"


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line: (intercept, slope)."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    return mean_y - slope * mean_x, slope


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _add_runs(raw: Run) -> list[Run]:
    """The addBankAccount rows, each with its gateway worker count (1 in runs from before the
    bench measured several)."""
    return [{"workers": 1, **run} for run in raw["add"]]


def _worker_counts(raw: Run) -> list[int]:
    """The worker counts in run order: every part ran with the first, addBankAccount again with
    each further one."""
    counts = raw["machine"].get("gateway_workers", 1)
    return [counts] if isinstance(counts, int) else list(counts)


def _workers(n: int) -> str:
    return f"{n} worker{'s' if n != 1 else ''}"


def _gateway_workers(counts: Sequence[int]) -> str:
    first, rest = counts[0], counts[1:]
    text = f"{first} uvicorn worker{'s' if first != 1 else ''}"
    if rest:
        flags = [f"`--workers {n}`" for n in rest]
        again = " and ".join([", ".join(flags[:-1]), flags[-1]] if len(flags) > 1 else flags)
        text += (
            f" for every part, then restarted with {again} (same database and sandboxes) and "
            "addBankAccount measured again"
        )
    return text


def markdown(raw: Run) -> str:
    m = raw["machine"]
    plan = raw["plan"]
    lines = [
        "# Benchmark: payout-gateway vs calling the sandboxes directly",
        "",
        f"- **Date:** {m['date']} · commit `{m['commit']}` (src sha256 {m['src_sha256']}) · "
        f"{'quick smoke run' if plan['quick'] else 'full run'}, {raw['seconds']:.0f} s",
        f"- **Machine:** {m['nproc']} cores ({m['cpu']}), Python {m['python']}, {m['platform']}; "
        f"load average {m['loadavg_before']:.2f} before the run, {raw['loadavg_after']:.2f} after",
        f"- **Gateway:** {_gateway_workers(_worker_counts(raw))} "
        f"(uvloop {_yes(m['uvloop'])}, "
        f"httptools {_yes(m['httptools'])}), `PAYOUT_GATEWAY_ENVIRONMENT={m['environment']}`, "
        f"{m['database']}, `PAYOUT_GATEWAY_MAX_PAGE_SIZE={m['max_page_size']}`, background "
        f"status refresh {m['status_refresh']}",
        "- **Providers:** the Commet and Paygentic sandboxes, each its own process (1 uvicorn "
        f"worker); Commet with a {m['commet_idempotency_ttl_s']} s idempotency window "
        "(see bench/sandbox.py), Paygentic with `page_max` = the gateway's page size",
        f"- **Load:** {m['wrk']}, 1 thread, on loopback; every run {plan['add_seconds']:g} s "
        f"(reads {plan['read_seconds']:g} s) after a warm-up; all processes share the "
        f"{m['nproc']} cores",
        "- **Ratio** = gateway ÷ direct, both measured in this run (for addBankAccount, back "
        "to back with the same gateway workers). CPU/req = CPU time of the gateway's processes "
        "(with several workers: the uvicorn supervisor and its workers) per request during the "
        "run (from /proc).",
        "",
    ]
    lines += _adds(_add_runs(raw))
    lines += _reads(raw["read"], plan["read_concurrency"])
    lines += _by_ids(raw["by_ids"])
    lines += _soak(raw["soak"], _worker_counts(raw)[0])
    lines += _targets(raw)
    lines += _log_errors(raw.get("gateway_log_errors", {}))
    return "\n".join(lines) + "\n"


def _yes(flag: bool) -> str:
    return "on" if flag else "off"


def _adds(runs: Sequence[Run]) -> list[str]:
    lines = [
        "## addBankAccount: gateway vs `POST` straight to the provider",
        "",
        "Each worker count's rows: gateway and direct measured back to back, after a warm-up. "
        "Instructions per request (counted by `perf` where it can) move far less with the "
        "machine's load than CPU seconds do.",
        "",
        "| provider | workers | c | gateway req/s | direct req/s | ratio | gateway p50 / p99 ms | "
        "direct p50 / p99 ms | added p50 ms | gateway CPU/req | direct sandbox CPU/req | "
        "gateway / direct sandbox instructions/req | errors g / d |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for provider in ("commet", "paygentic"):
        for w in sorted({r["workers"] for r in runs}):
            for c in sorted({r["connections"] for r in runs if r["workers"] == w}):
                lines.append(_add_row(runs, provider, w, c))
    shares = [
        f"{r['provider'].capitalize()} c={r['connections']}: "
        + " / ".join(f"{n:,}" for n in r["per_worker"])
        for r in runs
        if r.get("per_worker") is not None
    ]
    if shares:
        lines += [
            "",
            "Requests each gateway worker process served (its access log), in the rows with "
            "several workers: " + "; ".join(shares) + ".",
        ]
    return [*lines, ""]


def _add_row(runs: Sequence[Run], provider: str, w: int, c: int) -> str:
    g = _find(runs, provider=provider, side="gateway", workers=w, connections=c)
    d = _find(runs, provider=provider, side="direct", workers=w, connections=c)
    return (
        f"| {provider.capitalize()} | {w} | {c} | {g['rps']:.0f} | {d['rps']:.0f} | "
        f"**{100 * g['rps'] / d['rps']:.1f} %** | {g['p50_ms']:.2f} / {g['p99_ms']:.1f} | "
        f"{d['p50_ms']:.2f} / {d['p99_ms']:.1f} | {g['p50_ms'] - d['p50_ms']:.2f} | "
        f"{_cpu_us(g, 'gateway') / 1000:.2f} ms | {_cpu_us(d, provider) / 1000:.2f} ms | "
        f"{_instructions(g, 'gateway')} / {_instructions(d, provider)} | "
        f"{g['errors']} / {d['errors']} |"
    )


def _reads(runs: Sequence[Run], concurrency: int) -> list[str]:
    sizes = sorted({r["n"] for r in runs})
    lines = [
        "## bankAccounts(first: N) vs Paygentic's `GET /v0/externalAccounts?limit=N`",
        "",
        "Same 500 accounts on both sides (created through the gateway before this part); the "
        "query selects the fields a Paygentic list item carries.",
        "",
        f"| N | gateway req/s (c={concurrency}) | direct req/s | ratio | gateway p50 ms (c=1) | "
        "direct p50 ms (c=1) | gateway CPU/req | errors g / d |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        g = _find(runs, n=n, side="gateway", connections=concurrency)
        d = _find(runs, n=n, side="direct", connections=concurrency)
        g1 = _find(runs, n=n, side="gateway", connections=1)
        d1 = _find(runs, n=n, side="direct", connections=1)
        lines.append(
            f"| {n} | {g['rps']:.0f} | {d['rps']:.0f} | **{100 * g['rps'] / d['rps']:.1f} %** | "
            f"{g1['p50_ms']:.2f} | {d1['p50_ms']:.2f} | {_cpu_us(g, 'gateway') / 1000:.2f} ms | "
            f"{g['errors'] + g1['errors']} / {d['errors'] + d1['errors']} |"
        )
    lines.append("")
    fits = read_fits(runs, concurrency)
    for side, values in fits.items():
        lines.append(
            f"- **{side}** cost per item: latency {values['latency_us_per_item']:.1f} µs/item "
            f"({_signed_ms(values['latency_ms_fixed'])} fixed, mean latency at c=1), CPU "
            f"{values['cpu_us_per_item']:.1f} µs/item ({_signed_ms(values['cpu_ms_fixed'])} fixed)"
        )
    return [*lines, ""]


def _signed_ms(value: float) -> str:
    """A fit's fixed part: "+ 0.50 ms", or "- 1.07 ms" where the line crosses below zero (the
    noise of a few points when the per-item part dominates)."""
    return f"+ {value:.2f} ms" if value >= 0 else f"- {-value:.2f} ms"


def read_fits(runs: Sequence[Run], concurrency: int) -> dict[str, dict[str, float]]:
    sizes = sorted({r["n"] for r in runs})
    fits = {}
    for side, process in (("gateway", "gateway"), ("direct", "paygentic")):
        lat = [_find(runs, n=n, side=side, connections=1)["mean_ms"] for n in sizes]
        cpu = [
            _cpu_us(_find(runs, n=n, side=side, connections=concurrency), process) for n in sizes
        ]
        lat_fixed, lat_slope = fit(sizes, lat)
        cpu_fixed, cpu_slope = fit(sizes, cpu)
        fits[side] = {
            "latency_ms_fixed": lat_fixed,
            "latency_us_per_item": 1000 * lat_slope,
            "cpu_ms_fixed": cpu_fixed / 1000,
            "cpu_us_per_item": cpu_slope,
        }
    return fits


def _by_ids(data: Run) -> list[str]:
    auth = data["in_process"]["auth only"]["statements"]
    lines = [
        f"## One query naming {data['count']} accounts by id (Paygentic organization)",
        "",
        "Store statements counted in-process (`app.state.gateway.store.statements`, same "
        "database and sandboxes); provider calls from the sandboxes' `/_sandbox/requests`. "
        f"Authenticating a request costs {auth} statement(s), subtracted below.",
        "",
        "| query | store reads | provider calls | gateway p50 ms (one query) | "
        f"direct: {data['count']} `GET /v0/externalAccounts/{{id}}` ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("aliases", "nodes"):
        counted = data["in_process"][name]
        http = data["over_http"][name]
        calls = max(counted["provider_calls"], http["provider_calls_per_query"])
        label = (
            f"{data['count']} aliases `a0: bankAccount(id: …)`"
            if name == "aliases"
            else f"`nodes(ids: [{data['count']} ids])`"
        )
        lines.append(
            f"| {label} | {counted['statements'] - auth} | {calls:g} | {http['p50_ms']:.1f} | "
            f"{data['direct_100_gets_p50_ms']:.1f} |"
        )
    add = data["in_process"].get("addBankAccount")
    if add is not None:
        lines += [
            "",
            f"For comparison, one `addBankAccount` (Paygentic) sends {add['statements'] - auth} "
            f"SQL statements besides authentication and makes {add['provider_calls']} provider "
            "call(s).",
        ]
    return [*lines, ""]


def _soak(data: Run, workers: int) -> list[str]:
    series = data["series"]
    before, after = series[0]["rss_mb"], series[-1]["rss_mb"]
    capped = data["requests"] < data["target"]
    lines = [
        "## Gateway RSS under load",
        "",
        f"`bankAccounts(first: 10)` with one `addBankAccount` in 10, c={data['concurrency']}, "
        f"on the gateway with {_workers(workers)} (the RSS of that one process), after every "
        "other part had run (warm).",
        "",
        "| requests | time | req/s | errors | RSS before | RSS after | growth |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {data['requests']:,} | {data['seconds']:.0f} s | "
        f"{data['requests'] / data['seconds']:.0f} | {data['errors']} | "
        f"{before:.1f} MB | {after:.1f} MB | **{after - before:+.1f} MB** |",
        "",
    ]
    if capped:
        lines += [
            f"Stopped by the time cap before {data['target']:,} requests; "
            "`scripts/bench --soak-seconds S` raises the cap.",
            "",
        ]
    return lines


def _targets(raw: Run) -> list[str]:
    adds, reads, ids, soak = _add_runs(raw), raw["read"], raw["by_ids"], raw["soak"]
    lines = ["## Targets (issue 5)", "", "| target | measured | |", "|---|---|---|"]
    counts = sorted({r["workers"] for r in adds})
    for provider in ("commet", "paygentic"):
        name = provider.capitalize()
        for w in counts:
            if not any(r["workers"] == w and r["connections"] == 32 for r in adds):
                continue
            g = _find(adds, provider=provider, side="gateway", workers=w, connections=32)
            d = _find(adds, provider=provider, side="direct", workers=w, connections=32)
            ratio = 100 * g["rps"] / d["rps"]
            lines.append(
                f"| {name} add throughput ≥ 40 % of direct at c=32, gateway with "
                f"{_workers(w)} | {ratio:.1f} % | {_mark(ratio >= 40)} |"
            )
        g = _find(adds, provider=provider, side="gateway", workers=counts[0], connections=1)
        d = _find(adds, provider=provider, side="direct", workers=counts[0], connections=1)
        added = g["p50_ms"] - d["p50_ms"]
        lines.append(
            f"| {name} added p50 at c=1 ≤ 2 ms, gateway with {_workers(counts[0])} | "
            f"{added:.2f} ms | {_mark(added <= 2)} |"
        )
    auth = ids["in_process"]["auth only"]["statements"]
    for name in ("aliases", "nodes"):
        counted = ids["in_process"][name]
        reads_ = counted["statements"] - auth
        calls = max(counted["provider_calls"], ids["over_http"][name]["provider_calls_per_query"])
        lines.append(
            f"| 100 ids ({name}): 1 store read, 0 provider calls | {reads_} read(s), "
            f"{calls:g} call(s) | {_mark(reads_ == 1 and calls == 0)} |"
        )
    fits = read_fits(reads, raw["plan"]["read_concurrency"])
    lines.append(
        "| bankAccounts linear in N, small constant | "
        f"{fits['gateway']['cpu_us_per_item']:.0f} µs CPU/item "
        f"(direct {fits['direct']['cpu_us_per_item']:.0f}) | stated |"
    )
    growth = soak["series"][-1]["rss_mb"] - soak["series"][0]["rss_mb"]
    verdict = _mark(growth < 20)
    if soak["requests"] < soak["target"]:
        verdict = f"partial: {verdict}"
    lines.append(
        f"| RSS growth after {soak['target']:,} requests < 20 MB | {growth:+.1f} MB after "
        f"{soak['requests']:,} | {verdict} |"
    )
    return [*lines, ""]


def _log_errors(counts: dict[str, int]) -> list[str]:
    if not counts:
        return ["No exception in the gateway's log during the run.", ""]
    lines = ["## Exceptions in the gateway's log during the run", ""]
    for line, n in counts.items():
        note = (
            " (requests still in flight when wrk ends a run)" if "ClientDisconnect" in line else ""
        )
        lines.append(f"- `{line}`: {n} time(s){note}")
    return [*lines, ""]


def plot(raw: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adds = _add_runs(raw)
    counts = sorted({r["workers"] for r in adds})
    concurrencies = sorted({r["connections"] for r in adds})
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = {"commet": "tab:blue", "paygentic": "tab:orange"}
    # Colour: provider. Gateway: one line style and marker per worker count. Direct: dashed
    # squares, from the first worker count's round (each round's own direct run is in the table
    # and is what the % labels divide by).
    gateway_styles = [("-", "o"), ("-.", "^"), (":", "D"), ((0, (5, 1)), "v")]
    lines: list[tuple[str, str, int, Any, str, str]] = []
    for provider in colors:
        for index, w in enumerate(counts):
            dash, marker = gateway_styles[index % len(gateway_styles)]
            label = f"{provider.capitalize()} via gateway, {_workers(w)}"
            lines.append((provider, "gateway", w, dash, marker, label))
        lines.append((provider, "direct", counts[0], "--", "s", f"{provider.capitalize()} direct"))
    ax_rps, ax_lat, ax_n, ax_rss = axes.flat
    for provider, side, w, dash, marker, label in lines:
        xs = [
            c
            for c in concurrencies
            if any(r["workers"] == w and r["connections"] == c for r in adds)
        ]
        runs = [_find(adds, provider=provider, side=side, workers=w, connections=c) for c in xs]
        style = {"linestyle": dash, "color": colors[provider], "marker": marker}
        ax_rps.plot(xs, [r["rps"] for r in runs], label=label, **style)
        ax_lat.plot(xs, [r["p50_ms"] for r in runs], label=label, **style)
        ax_lat.plot(xs, [r["p99_ms"] for r in runs], alpha=0.45, **style)
    for provider, color in colors.items():
        for g in (r for r in adds if r["provider"] == provider and r["side"] == "gateway"):
            d = _find(
                adds,
                provider=provider,
                side="direct",
                workers=g["workers"],
                connections=g["connections"],
            )
            text = f"{100 * g['rps'] / d['rps']:.1f} %"
            # Commet's labels below its points, Paygentic's above; with several worker counts,
            # each count's label on its own side (then row) and prefixed with the count.
            dx, dy, ha = 0, -13 if provider == "commet" else 7, "center"
            if len(counts) > 1:
                index = counts.index(g["workers"])
                dx, ha = (-4, "right") if index % 2 == 0 else (4, "left")
                dy += (index // 2) * (-10 if provider == "commet" else 10)
                text = f"{g['workers']}w: {text}"
            ax_rps.annotate(
                text,
                (g["connections"], g["rps"]),
                textcoords="offset points",
                xytext=(dx, dy),
                ha=ha,
                fontsize=8,
                color=color,
            )
    for ax in (ax_rps, ax_lat):
        ax.set_xscale("log", base=2)
        # room for the labels beside the outermost points
        ax.set_xlim(min(concurrencies) / 1.7, max(concurrencies) * 1.7)
        ax.set_xticks(concurrencies, [str(c) for c in concurrencies])
        ax.set_xlabel("concurrent connections")
        ax.grid(True, which="both", alpha=0.3)
    ax_rps.set_yscale("log")
    ax_rps.set_ylim(bottom=min(r["rps"] for r in adds) / 2)
    ax_rps.set_ylabel("requests / s (log)")
    ax_rps.set_title(
        "addBankAccount throughput (labels: gateway as % of direct"
        + ("; Nw: N workers)" if len(counts) > 1 else ")")
    )
    ax_rps.legend(fontsize=8)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency ms (log)")
    ax_lat.set_title("addBankAccount latency: p50 (strong) and p99 (faint, same style)")
    ax_lat.legend(fontsize=7, ncol=2)

    reads = raw["read"]
    sizes = sorted({r["n"] for r in reads})
    fits = read_fits(reads, raw["plan"]["read_concurrency"])
    for side, color, label in (
        ("gateway", "tab:green", "bankAccounts(first: N) via gateway"),
        ("direct", "tab:gray", "Paygentic list, limit=N"),
    ):
        means = [_find(reads, n=n, side=side, connections=1)["mean_ms"] for n in sizes]
        ax_n.plot(sizes, means, "o", color=color, label=f"{label} (mean, c=1)")
        fixed = fits[side]["latency_ms_fixed"]
        slope = fits[side]["latency_us_per_item"] / 1000
        ax_n.plot(
            [0, max(sizes)],
            [fixed, fixed + slope * max(sizes)],
            "-",
            color=color,
            alpha=0.6,
            label=f"fit: {fixed:.2f} ms + {1000 * slope:.1f} µs per item",
        )
    ax_n.set_xlabel("N (page size)")
    ax_n.set_ylabel("latency ms")
    ax_n.set_title("Cost of a page of N accounts")
    ax_n.grid(True, alpha=0.3)
    ax_n.legend(fontsize=8)

    series = raw["soak"]["series"]
    ax_rss.plot(
        [p["requests"] / 1000 for p in series], [p["rss_mb"] for p in series], "o-", color="tab:red"
    )
    ax_rss.set_xlabel("requests (thousands)")
    ax_rss.set_ylabel("gateway RSS MB")
    ax_rss.set_title(
        f"Gateway memory under load, {_workers(_worker_counts(raw)[0])} (queries + 1 add in 10)"
    )
    ax_rss.grid(True, alpha=0.3)
    low = min(p["rss_mb"] for p in series)
    ax_rss.set_ylim(max(0, low - 20), max(p["rss_mb"] for p in series) + 20)

    m = raw["machine"]
    fig.suptitle(
        f"payout-gateway vs direct sandbox calls · {m['date']} · {m['nproc']} cores · "
        f"Python {m['python']} · {_workers_title(_worker_counts(raw))} · {m['environment']} · "
        "SQLite",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _workers_title(counts: Sequence[int]) -> str:
    if len(counts) == 1:
        return f"gateway: {_workers(counts[0])}"
    rest = ", ".join(str(n) for n in counts[1:])
    return f"gateway: {_workers(counts[0])} (addBankAccount also with {rest})"


def write(raw: Run, md_path: Path, png_path: Path) -> None:
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(markdown(raw) + f"\n![benchmark plot]({png_path.name})\n")
    plot(raw, png_path)
