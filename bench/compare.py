"""addBankAccount through gateways built from different source trees, interleaved in one run.

For measuring one lever: check the change out next to the baseline (``git worktree add``) and
name both trees. Each round starts a fresh stack per tree (both sandboxes, a new SQLite file,
the gateway from that tree's ``src`` with ``--workers``, default 1), warms it up, then drives
the gateway and the direct sandbox back to back with wrk. Rounds alternate the trees, so drift
on a shared machine falls on both; the table gives medians. Where ``perf`` can read the
instructions counter, it also gives the gateway's instructions per request, which move far less
with the machine's load than its CPU seconds do.

    .venv/bin/python -m bench.compare --tree before=/tmp/wt-base --tree after=. \\
        --provider commet --connections 32 --seconds 6 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import LoadResult
from bench.run import VERIFY, Bench, Plan, log
from bench.stack import postmaster_pid, running_stack


@dataclass
class Samples:
    gateway_rps: list[float] = field(default_factory=list)
    direct_rps: list[float] = field(default_factory=list)
    gateway_cpu_ms: list[float] = field(default_factory=list)
    gateway_instructions: list[float] = field(default_factory=list)
    database_cpu_ms: list[float] = field(default_factory=list)
    gateway_p50_ms: list[float] = field(default_factory=list)
    added_p50_ms: list[float] = field(default_factory=list)


def tree(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    source = Path(path).resolve() / "src"
    if not name or not (source / "payout_gateway").is_dir():
        raise argparse.ArgumentTypeError(f"expected NAME=PATH to a checkout, got {text!r}")
    return name, source


@contextmanager
def python_path(source: Path) -> Iterator[None]:
    """Processes started inside import ``payout_gateway`` from ``source`` (it comes before the
    editable install on their path)."""
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), before]))
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def one_run(
    source: Path,
    provider: str,
    connections: int,
    seconds: float,
    workers: int,
    postgres_url: str | None,
) -> Samples:
    plan = Plan.make(quick=False, soak_requests=0, soak_seconds=1)
    samples = Samples()
    with (
        python_path(source),
        tempfile.TemporaryDirectory(prefix="payout-compare-") as folder,
        running_stack(Path(folder), workers, postgres_url) as stack,
    ):
        bench = Bench(stack, plan, Path(folder))
        if postgres_url is not None:
            bench.watch["postgres"] = postmaster_pid(postgres_url)
        try:
            if provider == "commet":
                bench.gql(stack.keys.commet, VERIFY)
            sides = bench.add_targets()[provider]
            base, options = sides["gateway"]
            bench.wrk("warm-up", base, options, connections=8, seconds=plan.warmup_seconds)
            gateway: LoadResult = bench.wrk(
                "gateway", base, options, connections=connections, seconds=seconds
            )
            direct_base, direct_options = sides["direct"]
            direct: LoadResult = bench.wrk(
                "direct", direct_base, direct_options, connections=connections, seconds=seconds
            )
        finally:
            bench.http.close()
    if gateway.errors or direct.errors:
        raise RuntimeError(f"errors: gateway {gateway.sample[:200]} direct {direct.sample[:200]}")
    samples.gateway_rps.append(gateway.rps)
    samples.direct_rps.append(direct.rps)
    samples.gateway_cpu_ms.append(gateway.cpu_us_per_request("gateway") / 1000)
    instructions = gateway.instructions_per_request("gateway")
    if instructions is not None:
        samples.gateway_instructions.append(instructions)
        log(f"  gateway instructions per request: {instructions / 1e6:.3f} M")
    samples.database_cpu_ms.append(gateway.cpu_us_per_request("postgres") / 1000)
    samples.gateway_p50_ms.append(gateway.p50_ms)
    samples.added_p50_ms.append(gateway.p50_ms - direct.p50_ms)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=tree, action="append", required=True)
    parser.add_argument("--provider", choices=["commet", "paygentic"], default="commet")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL server (e.g. postgresql://127.0.0.1/test) to store in, in a new "
        "database per run, instead of a SQLite file; its CPU per request is reported",
    )
    args = parser.parse_args()
    results: dict[str, Samples] = {name: Samples() for name, _ in args.tree}
    for round_ in range(args.rounds):
        for name, source in args.tree:
            log(f"round {round_ + 1}: {name} ({source})")
            run = one_run(
                source,
                args.provider,
                args.connections,
                args.seconds,
                args.workers,
                args.postgres,
            )
            for key, values in vars(run).items():
                getattr(results[name], key).extend(values)
    median = statistics.median
    print(
        f"\naddBankAccount ({args.provider}), c={args.connections}, {args.seconds:g} s per "
        f"run, medians of {args.rounds} rounds, {args.workers} gateway worker(s)"
    )
    database = " PostgreSQL CPU/req |" if args.postgres else ""
    counted = all(samples.gateway_instructions for samples in results.values())
    instructions = " gateway instructions/req |" if counted else ""
    print(
        f"| tree | gateway req/s | direct req/s | ratio | gateway CPU/req |{instructions}"
        f"{database} p50 ms | added p50 ms |"
    )
    extra_columns = int(counted) + int(bool(args.postgres))
    print("|---|---:|---:|---:|---:|" + "---:|" * extra_columns + "---:|---:|")
    for name, samples in results.items():
        ratios = [g / d for g, d in zip(samples.gateway_rps, samples.direct_rps, strict=True)]
        database_cpu = f" {median(samples.database_cpu_ms):.2f} ms |" if args.postgres else ""
        instruction_count = (
            f" {median(samples.gateway_instructions) / 1e6:.2f} M |" if counted else ""
        )
        print(
            f"| {name} | {median(samples.gateway_rps):.0f} | {median(samples.direct_rps):.0f} | "
            f"{100 * median(ratios):.1f} % | {median(samples.gateway_cpu_ms):.2f} ms |"
            f"{instruction_count}{database_cpu} {median(samples.gateway_p50_ms):.2f} | "
            f"{median(samples.added_p50_ms):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
