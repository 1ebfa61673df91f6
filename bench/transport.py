"""CPU per provider call through ProviderHttp, httpx's own transport vs the aiohttp backend.

Starts one Commet sandbox (``bench.sandbox``) and POSTs to it, sequentially and with
``--concurrency`` callers, alternating the backends over ``--rounds`` to spread out noise from the
sandbox and the machine. Each run is its own process and CPU is that process's
(``time.process_time``), so the sandbox's own work is not counted; req/s is bounded by the sandbox
too. ``--against REF`` also runs ``src/payout_gateway`` as of git revision REF, interleaved with
the working tree, to compare a change with what it replaces in one go.

    .venv/bin/python -m bench.transport --requests 2000 --concurrency 32 --rounds 3
    .venv/bin/python -m bench.transport --backend aiohttp --against HEAD
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stack import COMMET_KEY, HOST, ROOT, _clean_env, free_port, start, wait_ready
from payout_gateway.domain.enums import Provider
from payout_gateway.providers.transport import HttpBackend, HttpPolicy, ProviderHttp

PATH = "/payouts/bank-accounts"
# The body and headers the Commet adapter sends for addBankAccount. The sandbox organization has
# no payout account, so it answers with a JSON 404 after auth, idempotency and validation.
BODY = {
    "accountNumber": "000123456789",
    "accountHolderName": "Ada Lovelace",
    "routingNumber": "110000000",
    "accountType": "checking",
}
WORKING_TREE = "working tree"


def make_provider_http(base_url: str, policy: HttpPolicy) -> ProviderHttp:
    """The Commet ProviderHttp of whichever revision is imported: before the ninth round of
    bench/PROFILE.md it sent through an httpx client made by ``build_client``."""
    from payout_gateway.providers import transport

    build_client = getattr(transport, "build_client", None)
    if build_client is not None:
        return ProviderHttp(Provider.COMMET, build_client(base_url, policy), policy)  # type: ignore[arg-type]
    return ProviderHttp(Provider.COMMET, base_url, policy)


async def measure(
    base_url: str, backend: HttpBackend, requests: int, concurrency: int
) -> tuple[float, float]:
    """req/s and CPU ms per call for ``requests`` POSTs made by ``concurrency`` callers."""
    policy = HttpPolicy(backend=backend, max_retries=0)
    http = make_provider_http(base_url, policy)
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


def run_in_child(
    source: Path | None, base_url: str, backend: HttpBackend, requests: int, concurrency: int
) -> tuple[float, float]:
    """``measure`` in a fresh process importing ``payout_gateway`` from ``source`` (None: the
    working tree), so every variant starts from the same state."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "bench.transport", "--child", base_url, backend.value]
    command += ["--requests", str(requests), "--concurrency", str(concurrency)]
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True
    )
    rate, cpu = done.stdout.split()
    return float(rate), float(cpu)


def extract(revision: str, into: Path) -> Path:
    """``src/payout_gateway`` as of git ``revision``, unpacked under ``into``; its ``src``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "src/payout_gateway"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--backend", type=HttpBackend, action="append", help="only this one (repeatable)"
    )
    parser.add_argument("--against", metavar="REF", help="also measure git revision REF")
    parser.add_argument("--child", nargs=2, metavar=("BASE_URL", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rate, cpu = asyncio.run(
            measure(args.child[0], HttpBackend(args.child[1]), args.requests, args.concurrency)
        )
        print(rate, cpu)
        return 0
    backends: list[HttpBackend] = args.backend or list(HttpBackend)
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        sources: dict[str, Path | None] = {WORKING_TREE: None}
        if args.against:
            sources[args.against] = extract(args.against, Path(workdir))
        command = [sys.executable, "-m", "bench.sandbox", "commet", "--port", str(port)]
        sandbox = start("commet", command, port, Path(workdir), _clean_env())
        try:
            wait_ready(sandbox, "/_sandbox/requests")
            base_url = f"http://{HOST}:{port}/api/v1"
            results: dict[tuple[int, str, str], list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                for concurrency in (1, args.concurrency):
                    for label, source in sources.items():
                        for backend in backends:
                            figures = run_in_child(
                                source, base_url, backend, args.requests, concurrency
                            )
                            key = (concurrency, backend.value, label)
                            results.setdefault(key, []).append(figures)
        finally:
            sandbox.stop()
    print(f"{args.requests} POSTs per run, median of {args.rounds} runs")
    print(f"{'backend':<10} {'code':<14} {'callers':>7} {'req/s':>8} {'CPU ms/call':>12}  spread")
    for (concurrency, name, label), runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpus = [c for _, c in runs]
        spread = f"{min(cpus):.3f}-{max(cpus):.3f}"
        print(
            f"{name:<10} {label:<14} {concurrency:>7} {rate:>8.0f} "
            f"{statistics.median(cpus):>12.3f}  {spread}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
