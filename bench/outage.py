"""One provider down, the other's latency: Paygentic adds through the gateway while Commet
answers, then while Commet hangs, at fixed rates, with and without the circuit breaker.

The hardening matrix (docs/hardening.md, "Upstream faults") asks that one provider down leave
the other's p95 within +20 %. Both providers get adds at a fixed rate each (open loop: a
request goes out on schedule whether or not earlier ones have answered, and its latency counts
from its scheduled time, so a stall is not hidden by a client that waits). Commet goes down by
stopping its simulator's process (SIGSTOP): the kernel still accepts connections, nothing
answers, as with a provider that hangs. Each gateway runs two phases on a fresh start:

- ``up``: Commet answers;
- ``down``: Commet hangs for the whole phase (its calls wait for their timeouts, then, with the
  breaker, fail at once).

and the report gives Paygentic's p50/p95/p99 in each, the ratio of ``down`` to ``up`` (the
matrix's criterion: p95 ratio ≤ 1.20), and what Commet's callers got. The gateway runs with its
circuit breaker as configured by default, then with it out of reach (a threshold no outage
meets), to show what the breaker changes.

    .venv/bin/python -m bench.outage --rate 100 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.load import percentile
from bench.run import ADD, Bench, Plan, log
from bench.stack import Stack, restart_gateway, running_stack

# A read timeout short enough that the hung provider's calls end within a phase (the default
# 10 s per attempt, retries included up to the 25 s deadline, would outlast it).
READ_TIMEOUT_SECONDS = 2.0
NO_BREAKER = str(10**9)


@dataclass
class Outcomes:
    """What one provider's callers got in one phase."""

    latencies_ms: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)

    def percentile(self, share: float) -> float:
        return percentile(self.latencies_ms, share)


async def drive(gateway: str, key: str, rate: float, seconds: float, first: int) -> Outcomes:
    """Adds at ``rate`` per second for ``seconds``; latency from each request's scheduled
    start to its answer, outcome by the answer's ``__typename`` (or ``code`` for errors)."""
    outcomes = Outcomes()
    numbers = itertools.count(first)
    query = ADD.replace("{ __typename", "{ __typename ... on UserError { code }", 1)
    headers = {"authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def one(scheduled: float) -> None:
            bank = {
                "accountNumber": f"{next(numbers):012d}",
                "holderName": "Bench Holder",
                "routingNumber": "021000021",
            }
            body = {"query": query, "variables": {"input": {"bankAccount": bank}}}
            try:
                async with session.post(f"{gateway}/graphql", json=body, headers=headers) as answer:
                    data = await answer.json()
                added = data["data"]["addBankAccount"]
                outcome = str(added.get("code") or added["__typename"])
            except Exception as error:  # counted, never raised: the load goes on
                outcome = type(error).__name__
            outcomes.latencies_ms.append((time.monotonic() - scheduled) * 1000)
            outcomes.answers[outcome] += 1

        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic()
        for index in range(int(seconds * rate)):
            scheduled = started + index / rate
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    return outcomes


def drive_both(
    gateway: str, keys: dict[str, str], rate: float, seconds: float, numbers: Iterator[int]
) -> dict[str, Outcomes]:
    """``drive`` for each provider at once, each in a process of its own: a client whose
    requests to the hung provider pile up must not delay the other provider's requests."""
    children = {
        provider: subprocess.Popen(
            [
                *(sys.executable, "-m", "bench.outage", "--client", gateway, key),
                *(f"--rate={rate}", f"--seconds={seconds}", f"--first={next(numbers)}"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for provider, key in keys.items()
    }
    outcomes = {}
    for provider, child in children.items():
        out, _ = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"the {provider} client failed")
        got = json.loads(out)
        outcomes[provider] = Outcomes(got["latencies_ms"], Counter(got["answers"]))
    return outcomes


@dataclass
class Phase:
    gateway: str
    phase: str
    outcomes: dict[str, Outcomes]


def run_gateway(
    stack: Stack, label: str, rate: float, seconds: float, numbers: Iterator[int]
) -> list[Phase]:
    keys = {"paygentic": stack.keys.paygentic, "commet": stack.keys.commet}
    base = stack.gateway.base
    log(f"{label}: warm-up")
    drive_both(base, keys, rate, 2, numbers)
    phases = []
    for phase in ("up", "down"):
        if phase == "down":
            os.kill(stack.commet.pid, signal.SIGSTOP)
        try:
            outcomes = drive_both(base, keys, rate, seconds, numbers)
        finally:
            if phase == "down":
                os.kill(stack.commet.pid, signal.SIGCONT)
        phases.append(Phase(label, phase, outcomes))
        for provider, got in outcomes.items():
            log(
                f"  {label:<12} {phase:<5} {provider:<10} p50 {got.percentile(0.5):8.1f} ms  "
                f"p95 {got.percentile(0.95):8.1f} ms  {dict(got.answers)}"
            )
    return phases


def report(phases: list[Phase], rate: float, seconds: float) -> str:
    lines = [
        f"One provider down: adds at {rate:g}/s per provider for {seconds:g} s per phase "
        "(Commet hung by SIGSTOP in `down`); latency from each request's scheduled start",
        "",
        "| gateway | phase | Paygentic p50 | p95 | p99 | p95 ÷ `up` | Commet callers got |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    baseline: dict[str, float] = {}
    for phase in phases:
        paygentic = phase.outcomes["paygentic"]
        p95 = paygentic.percentile(0.95)
        if phase.phase == "up":
            baseline[phase.gateway] = p95
        commet = ", ".join(
            f"{name} {count}" for name, count in phase.outcomes["commet"].answers.most_common()
        )
        lines.append(
            f"| {phase.gateway} | {phase.phase} | {paygentic.percentile(0.5):.1f} ms | "
            f"{p95:.1f} ms | {paygentic.percentile(0.99):.1f} ms | "
            f"{p95 / baseline[phase.gateway]:.2f} | {commet} |"
        )
    failed = {
        f"{phase.gateway} {phase.phase}": dict(phase.outcomes["paygentic"].answers)
        for phase in phases
        if set(phase.outcomes["paygentic"].answers) != {"AddBankAccountSuccess"}
    }
    if failed:
        lines += ["", f"Paygentic adds that did not succeed: {json.dumps(failed)}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100, help="adds per second per provider")
    parser.add_argument("--seconds", type=float, default=20, help="per phase")
    parser.add_argument("--client", nargs=2, metavar=("GATEWAY", "KEY"), help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        gateway, key = args.client
        got = asyncio.run(drive(gateway, key, args.rate, args.seconds, args.first))
        print(json.dumps({"latencies_ms": got.latencies_ms, "answers": got.answers}))
        return 0
    # Account numbers: a block of 10^6 per client run, starting from the clock, so that runs
    # against one sandbox never repeat one.
    numbers = itertools.count(int(time.time()) % 10**5 * 10**6, 10**6)
    with (
        tempfile.TemporaryDirectory(prefix="payout-outage-") as folder,
        running_stack(Path(folder)) as stack,
    ):
        plan = Plan.make(quick=True, soak_requests=0, soak_seconds=1)
        bench = Bench(stack, plan, Path(folder))
        bench.verify_commet()
        phases: list[Phase] = []
        for label, failures in (("breaker on", None), ("breaker off", NO_BREAKER)):
            stack.env["PAYOUT_GATEWAY_COMMET__READ_TIMEOUT"] = str(READ_TIMEOUT_SECONDS)
            if failures is None:
                stack.env.pop("PAYOUT_GATEWAY_COMMET__CIRCUIT_FAILURES", None)
            else:
                stack.env["PAYOUT_GATEWAY_COMMET__CIRCUIT_FAILURES"] = failures
            restart_gateway(stack, 1)  # a fresh gateway, its circuit closed
            phases += run_gateway(stack, label, args.rate, args.seconds, numbers)
    text = report(phases, args.rate, args.seconds)
    print(text)
    out = Path(__file__).parent / "results" / "raw" / "outage.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
