"""addBankAccount through the same gateway app under uvicorn (what ``serve`` runs) and granian.

One stack (both sandboxes, one SQLite file): the gateway as ``payout-gateway serve`` starts it,
and beside it the same app (``payout_gateway.web:create_app``, same environment) under
granian's ASGI interface with uvloop. Rounds alternate the two servers; each round warms up,
then drives Commet adds with wrk. CPU counts each server's process and its children. Granian is
not a dependency of the gateway: ``scripts/bench servers`` installs it into .venv for this.

    scripts/bench servers --connections 32 --rounds 3

Not quite like for like: ``serve`` sets up the gateway's logging (two JSON lines per add, about
40 µs of CPU), while granian runs the bare app factory, whose INFO records are dropped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from bench.load import run_wrk
from bench.run import VERIFY
from bench.stack import HOST, _clean_env, free_port, running_stack, start, wait_ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    granian = Path(sys.executable).parent / "granian"
    with (
        tempfile.TemporaryDirectory(prefix="payout-servers-") as folder,
        running_stack(Path(folder)) as stack,
    ):
        key = stack.keys.commet
        httpx.post(
            f"{stack.gateway.base}/graphql",
            json={"query": VERIFY},
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        ).raise_for_status()
        port = free_port()
        command = [str(granian), "--interface", "asgi", "--factory", "--loop", "uvloop"]
        command += ["--host", HOST, "--port", str(port), "--log-level", "warning"]
        command += ["payout_gateway.web:create_app"]
        other = start("granian", command, port, Path(folder), {**_clean_env(), **stack.env})
        try:
            wait_ready(other, "/healthz")
            servers = {"uvicorn (serve)": stack.gateway, "granian": other}
            rps: dict[str, list[float]] = {name: [] for name in servers}
            cpu: dict[str, list[float]] = {name: [] for name in servers}
            salt = 0
            for round_number in range(1, args.rounds + 1):
                for name, service in servers.items():
                    results = []
                    for duration in (2.0, args.seconds):  # warm-up, then the measured run
                        salt += 1
                        results.append(
                            run_wrk(
                                name,
                                service.base,
                                connections=args.connections,
                                duration=duration,
                                options={
                                    "mode": "gql_add",
                                    "path": "/graphql",
                                    "auth": f"Bearer {key}",
                                    "salt": f"7{salt:04d}",
                                    "ok": "AddBankAccountSuccess",
                                },
                                watch={"server": service.pid},
                            )
                        )
                    result = results[-1]
                    if result.errors:
                        raise RuntimeError(f"{name}: {result.errors} failed requests")
                    rps[name].append(result.rps)
                    cpu[name].append(result.cpu_us_per_request("server") / 1000)
                    print(
                        f"round {round_number}: {name:<16} c={args.connections}  "
                        f"{result.rps:7.1f} req/s  p50 {result.p50_ms:6.2f} ms  "
                        f"CPU {cpu[name][-1]:.2f} ms/req",
                        flush=True,
                    )
        finally:
            other.stop()
    print(f"\nCommet addBankAccount, c={args.connections}, medians of {args.rounds} rounds")
    print("| server | req/s | CPU per add |")
    print("|---|---:|---:|")
    for name in servers:
        print(
            f"| {name} | {statistics.median(rps[name]):.0f} | "
            f"{statistics.median(cpu[name]):.2f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
