"""CPU per provider call through ProviderHttp, httpx's own transport vs the aiohttp backend.

Starts one Commet sandbox (``bench.sandbox``) and POSTs to it from this process, sequentially and
with ``--concurrency`` callers, alternating the backends over ``--rounds`` to spread out noise
from the sandbox and the machine. CPU is this process's (``time.process_time``), so the sandbox's
own work is not counted; req/s is bounded by the sandbox too.

    .venv/bin/python -m bench.transport --requests 2000 --concurrency 32 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.stack import COMMET_KEY, HOST, _clean_env, free_port, start, wait_ready
from payout_gateway.domain.enums import Provider
from payout_gateway.providers.transport import HttpBackend, HttpPolicy, ProviderHttp, build_client

PATH = "/payouts/bank-accounts"
# The body and headers the Commet adapter sends for addBankAccount. The sandbox organization has
# no payout account, so it answers with a JSON 404 after auth, idempotency and validation.
BODY = {
    "accountNumber": "000123456789",
    "accountHolderName": "Ada Lovelace",
    "routingNumber": "110000000",
    "accountType": "checking",
}


async def measure(
    base_url: str, backend: HttpBackend, requests: int, concurrency: int
) -> tuple[float, float]:
    """req/s and CPU ms per call for ``requests`` POSTs made by ``concurrency`` callers."""
    policy = HttpPolicy(backend=backend, max_retries=0)
    http = ProviderHttp(Provider.COMMET, build_client(base_url, policy), policy)
    counter = iter(range(10**9))

    async def call() -> None:
        headers = {"x-api-key": COMMET_KEY, "Idempotency-Key": f"bench-{next(counter)}"}
        raw = await http.request("POST", PATH, headers=headers, json=BODY, replay_safe=True)
        assert raw.status_code == 404, raw.status_code

    async def caller(calls: int) -> None:
        for _ in range(calls):
            await call()

    try:
        await asyncio.gather(*(caller(20) for _ in range(concurrency)))  # warm the pool
        share, extra = divmod(requests, concurrency)
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(caller(share + (i < extra)) for i in range(concurrency)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await http.aclose()
    return requests / wall, cpu * 1000 / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        command = [sys.executable, "-m", "bench.sandbox", "commet", "--port", str(port)]
        sandbox = start("commet", command, port, Path(workdir), _clean_env())
        try:
            wait_ready(sandbox, "/_sandbox/requests")
            base_url = f"http://{HOST}:{port}/api/v1"
            results: dict[tuple[str, int], list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                for concurrency in (1, args.concurrency):
                    for backend in HttpBackend:
                        figures = asyncio.run(
                            measure(base_url, backend, args.requests, concurrency)
                        )
                        results.setdefault((backend.value, concurrency), []).append(figures)
        finally:
            sandbox.stop()
    print(f"{args.requests} POSTs per run, median of {args.rounds} runs")
    print(f"{'backend':<10} {'callers':>7} {'req/s':>8} {'CPU ms/call':>12}")
    for (name, concurrency), runs in sorted(results.items(), key=lambda item: item[0][::-1]):
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"{name:<10} {concurrency:>7} {rate:>8.0f} {cpu:>12.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
