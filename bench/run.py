"""The benchmark: gateway vs direct sandbox calls in one run; writes bench/results/latest.*."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench import inprocess, report
from bench.load import LoadResult, run_wrk, wrk_binary
from bench.sandbox import COMMET_IDEMPOTENCY_TTL_SECONDS
from bench.stack import (
    COMMET_KEY,
    ENVIRONMENT,
    MAX_PAGE_SIZE,
    PAYGENTIC_ORG,
    PAYGENTIC_TOKEN,
    ROOT,
    Stack,
    restart_gateway,
    running_stack,
)

RESULTS = ROOT / "bench" / "results"
PROVIDERS = ("commet", "paygentic")
READ_SIZES = (10, 100, MAX_PAGE_SIZE)
BY_ID_COUNT = 100
SEED_ACCOUNTS = MAX_PAGE_SIZE

VERIFY = """mutation {
  completePayoutVerification(input: {
    email: "bench@example.com" businessType: INDIVIDUAL businessUrl: "https://bench.example.com"
    documentUrl: "https://files.example.com/bench-passport.pdf"
    bankAccount: { accountNumber: "000123456789" routingNumber: "021000021"
                   holderName: "Bench Holder" accountType: CHECKING }
    individual: { firstName: "Bench" lastName: "Holder" phone: "+14155550123"
                  dateOfBirth: "1990-01-31"
                  address: { line1: "1 Main St", city: "San Francisco", postalCode: "94105",
                             country: "US" } }
  }) { __typename ... on UserError { code message } }
}"""
ADD = (
    "mutation($input: AddBankAccountInput!) { addBankAccount(input: $input) "
    "{ __typename ... on AddBankAccountSuccess { bankAccount { id last4 } } } }"
)
# The gateway's counterpart of the fields a Paygentic list item carries.
NODE_FIELDS = (
    "id providerAccountId holderName holderType bankName last4 country currency status "
    "providerStatus isDefault metadata createdAt updatedAt"
)
ID_FIELDS = "id providerAccountId"
GQL_OK = {"ok": '"data"', "bad": '"errors"'}


@dataclass(frozen=True)
class Plan:
    """How long and how hard each part runs."""

    quick: bool
    add_concurrency: tuple[int, ...]
    add_seconds: float
    warmup_seconds: float
    read_concurrency: int
    read_seconds: float
    soak_requests: int
    soak_seconds: float
    soak_chunk_seconds: float
    soak_concurrency: int = 16

    @classmethod
    def make(cls, quick: bool, soak_requests: int, soak_seconds: float | None) -> Plan:
        if quick:
            return cls(
                quick=True,
                add_concurrency=(1, 32),
                add_seconds=2,
                warmup_seconds=1,
                read_concurrency=16,
                read_seconds=1,
                soak_requests=soak_requests,
                soak_seconds=soak_seconds or 8,
                soak_chunk_seconds=4,
            )
        return cls(
            quick=False,
            add_concurrency=(1, 8, 32, 64),
            add_seconds=6,
            warmup_seconds=3,
            read_concurrency=16,
            read_seconds=4,
            soak_requests=soak_requests,
            soak_seconds=soak_seconds or 150,
            soak_chunk_seconds=15,
        )


class Bench:
    """Runs every part against one stack; each result lands in ``self.raw``."""

    def __init__(self, stack: Stack, plan: Plan, workdir: Path) -> None:
        self.stack = stack
        self.plan = plan
        self.workdir = workdir
        self.salts: Iterator[int] = itertools.count(100)
        # CPU is counted for each of these processes and its children (the gateway's workers).
        self.watch = {
            "gateway": stack.gateway.pid,
            "commet": stack.commet.pid,
            "paygentic": stack.paygentic.pid,
        }
        self.http = httpx.Client(timeout=30)
        self.raw: dict[str, Any] = {"add": []}

    # -- helpers ---------------------------------------------------------------------------

    def gql(self, key: str, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        answer = self.http.post(
            f"{self.stack.gateway.base}/graphql",
            json={"query": query, "variables": dict(variables or {})},
            headers={"authorization": f"Bearer {key}"},
        )
        answer.raise_for_status()
        body = answer.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def body_file(self, name: str, query: str) -> str:
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps({"query": query}))
        return str(path)

    def wrk(
        self,
        label: str,
        base: str,
        options: Mapping[str, str | int],
        *,
        connections: int,
        seconds: float,
    ) -> LoadResult:
        salted = {**options, "salt": next(self.salts)}
        result = run_wrk(
            label, base, connections=connections, duration=seconds, options=salted, watch=self.watch
        )
        note = f"  {result.errors} errors: {result.sample[:160]}" if result.errors else ""
        log(
            f"  {label:<24} c={connections:<3} {result.rps:8.1f} req/s  "
            f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:8.2f} ms{note}"
        )
        return result

    def provider_calls(self) -> int:
        total = 0
        for service in (self.stack.commet, self.stack.paygentic):
            answer = self.http.get(f"{service.base}/_sandbox/requests").json()
            total += int(answer.get("data", answer)["total"])
        return total

    def rss_mb(self) -> float:
        """The gateway process's own RSS: with 1 worker, the process that serves (the soak
        runs before any restart with more workers)."""
        if self.stack.workers != 1:
            raise RuntimeError("rss_mb reads one process: the gateway must run 1 worker")
        return float(psutil.Process(self.stack.gateway.pid).memory_info().rss) / 2**20

    def restart(self, workers: int) -> None:
        """Restart the gateway with ``workers`` worker processes (same database and sandboxes)
        and warm it up before anything is measured on it."""
        log(f"restarting the gateway with {workers} workers")
        restart_gateway(self.stack, workers)
        self.watch["gateway"] = self.stack.gateway.pid
        for provider, sides in self.add_targets().items():
            base, options = sides["gateway"]
            self.wrk(
                f"warm-up {provider} w{workers}",
                base,
                options,
                connections=8,
                seconds=self.plan.warmup_seconds,
            )

    # -- set-up ----------------------------------------------------------------------------

    def verify_commet(self) -> None:
        """Complete the Commet organization's payout verification: Commet takes bank accounts
        only once its payout account exists."""
        result = self.gql(self.stack.keys.commet, VERIFY)["completePayoutVerification"]
        if result["__typename"] != "CompletePayoutVerificationSuccess":
            raise RuntimeError(f"Commet verification failed: {result}")

    def prepare(self) -> None:
        keys = self.stack.keys
        self.verify_commet()
        log(f"seeding {SEED_ACCOUNTS} Paygentic accounts through the gateway")
        asyncio.run(asyncio.wait_for(self._seed(keys.paygentic, SEED_ACCOUNTS), 120))

    async def _seed(self, key: str, count: int) -> None:
        limit = asyncio.Semaphore(8)
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(index: int) -> None:
                variables = {
                    "input": {
                        "bankAccount": {
                            "accountNumber": f"9{index:011d}",
                            "holderName": "Bench Holder",
                            "routingNumber": "021000021",
                        }
                    }
                }
                async with limit:
                    answer = await client.post(
                        f"{self.stack.gateway.base}/graphql",
                        json={"query": ADD, "variables": variables},
                        headers={"authorization": f"Bearer {key}"},
                    )
                typename = answer.json()["data"]["addBankAccount"]["__typename"]
                if typename != "AddBankAccountSuccess":
                    raise RuntimeError(f"seeding failed: {answer.text[:300]}")

            await asyncio.gather(*(one(i) for i in range(count)))

    # -- parts -----------------------------------------------------------------------------

    def add_targets(self) -> dict[str, dict[str, tuple[str, dict[str, str | int]]]]:
        stack = self.stack
        return {
            "commet": {
                "direct": (
                    stack.commet.base,
                    {
                        "mode": "commet_add",
                        "path": "/api/v1/payouts/bank-accounts",
                        "auth": COMMET_KEY,
                        "ok": '"success":true',
                    },
                ),
                "gateway": (
                    stack.gateway.base,
                    {
                        "mode": "gql_add",
                        "path": "/graphql",
                        "auth": f"Bearer {stack.keys.commet}",
                        "ok": "AddBankAccountSuccess",
                        "bad": '"errors"',
                    },
                ),
            },
            "paygentic": {
                "direct": (
                    stack.paygentic.base,
                    {
                        "mode": "paygentic_add",
                        "path": "/v0/externalAccounts",
                        "auth": f"Bearer {PAYGENTIC_TOKEN}",
                        "org": PAYGENTIC_ORG,
                        "ok": '"id":"eba_',
                    },
                ),
                "gateway": (
                    stack.gateway.base,
                    {
                        "mode": "gql_add",
                        "path": "/graphql",
                        "auth": f"Bearer {stack.keys.paygentic}",
                        "ok": "AddBankAccountSuccess",
                        "bad": '"errors"',
                    },
                ),
            },
        }

    def adds(self) -> None:
        """Both providers, gateway and direct side by side at each concurrency; the rows are
        tagged with the gateway's worker count and added to ``raw["add"]``."""
        workers = self.stack.workers
        log(f"addBankAccount: gateway ({workers} worker{'s' if workers > 1 else ''}) vs direct")
        plan = self.plan
        targets = self.add_targets()
        for provider, sides in targets.items():
            for side, (base, options) in sides.items():
                self.wrk(
                    f"warm-up {provider} {side}",
                    base,
                    options,
                    connections=8,
                    seconds=plan.warmup_seconds,
                )
        runs: list[dict[str, Any]] = []
        gateway_log = self.stack.gateway.log_path
        for connections in plan.add_concurrency:
            for provider, sides in targets.items():
                for side, (base, options) in sides.items():
                    logged = gateway_log.stat().st_size
                    result = self.wrk(
                        f"add {provider} {side}",
                        base,
                        options,
                        connections=connections,
                        seconds=plan.add_seconds,
                    )
                    run = {"provider": provider, "side": side, "workers": workers}
                    if side == "gateway" and workers > 1:
                        # Every worker must take its share, or N workers measure fewer.
                        served = graphql_requests_by_process(gateway_log, logged)
                        run["per_worker"] = served + [0] * (workers - len(served))
                    runs.append({**run, **result.as_dict()})
        self.raw["add"].extend(runs)

    def reads(self) -> None:
        log(f"bankAccounts(first: N) vs Paygentic's list (c=1 and c={self.plan.read_concurrency})")
        stack, plan = self.stack, self.plan
        runs: list[dict[str, Any]] = []
        for size in READ_SIZES:
            query = (
                f"{{ bankAccounts(first: {size}) {{ edges {{ cursor node {{ {NODE_FIELDS} }} }} "
                "pageInfo { hasNextPage endCursor } } }"
            )
            edges = self.gql(stack.keys.paygentic, query)["bankAccounts"]["edges"]
            direct_path = f"/v0/externalAccounts?organizationId={PAYGENTIC_ORG}&limit={size}"
            listed = self.http.get(
                stack.paygentic.base + direct_path,
                headers={"authorization": f"Bearer {PAYGENTIC_TOKEN}"},
            ).json()["data"]
            if len(edges) != size or len(listed) != size:
                raise RuntimeError(f"N={size}: gateway {len(edges)} items, direct {len(listed)}")
            sides: dict[str, tuple[str, dict[str, str | int]]] = {
                "direct": (
                    stack.paygentic.base,
                    {
                        "mode": "get",
                        "path": direct_path,
                        "auth": f"Bearer {PAYGENTIC_TOKEN}",
                        "ok": '"object":"list"',
                    },
                ),
                "gateway": (
                    stack.gateway.base,
                    {
                        "mode": "body",
                        "path": "/graphql",
                        "auth": f"Bearer {stack.keys.paygentic}",
                        "body": self.body_file(f"read-{size}", query),
                        **GQL_OK,
                    },
                ),
            }
            for side, (base, options) in sides.items():
                self.wrk(f"warm-up read {side}", base, options, connections=1, seconds=1)
            for connections in (1, plan.read_concurrency):
                for side, (base, options) in sides.items():
                    result = self.wrk(
                        f"read N={size} {side}",
                        base,
                        options,
                        connections=connections,
                        seconds=plan.read_seconds,
                    )
                    runs.append({"n": size, "side": side, **result.as_dict()})
        self.raw["read"] = runs

    def by_ids(self) -> None:
        log(f"one query naming {BY_ID_COUNT} accounts by id")
        stack = self.stack
        key = stack.keys.paygentic
        query = f"{{ bankAccounts(first: {BY_ID_COUNT}) {{ edges {{ node {{ {ID_FIELDS} }} }} }} }}"
        nodes = [e["node"] for e in self.gql(key, query)["bankAccounts"]["edges"]]
        ids = [n["id"] for n in nodes]
        provider_ids = [n["providerAccountId"] for n in nodes]
        aliases = " ".join(
            f'a{i}: bankAccount(id: "{v}") {{ id last4 status }}' for i, v in enumerate(ids)
        )
        quoted = ", ".join(f'"{v}"' for v in ids)
        queries = {
            "aliases": f"{{ {aliases} }}",
            "nodes": f"{{ nodes(ids: [{quoted}]) {{ ... on BankAccount {{ id last4 status }} }} }}",
        }
        repetitions = 5 if self.plan.quick else 20
        over_http: dict[str, Any] = {}
        for name, text in queries.items():
            data = self.gql(key, text)
            found = list(data.values()) if name == "aliases" else data["nodes"]
            if len(found) != BY_ID_COUNT or any(item is None for item in found):
                raise RuntimeError(f"{name}: not every account came back")
            calls = self.provider_calls()
            timings = []
            for _ in range(repetitions):
                started = time.perf_counter()
                self.gql(key, text)
                timings.append(time.perf_counter() - started)
            over_http[name] = {
                "provider_calls_per_query": (self.provider_calls() - calls) / repetitions,
                "p50_ms": 1000 * statistics.median(timings),
            }
        # Without the gateway: one GET per account, sequential over one kept-alive connection.
        headers = {"authorization": f"Bearer {PAYGENTIC_TOKEN}"}
        timings = []
        for _ in range(max(3, repetitions // 4)):
            started = time.perf_counter()
            for provider_id in provider_ids:
                self.http.get(
                    f"{stack.paygentic.base}/v0/externalAccounts/{provider_id}", headers=headers
                ).raise_for_status()
            timings.append(time.perf_counter() - started)
        log("  counting store statements in-process")
        add = (
            'mutation { addBankAccount(input: { bankAccount: { accountNumber: "000111222333", '
            'holderName: "Bench Holder", routingNumber: "021000021" } }) { __typename } }'
        )
        counted = inprocess.run(
            stack.env,
            key,
            {**queries, "addBankAccount": add},
            {"commet": stack.commet.base, "paygentic": stack.paygentic.base},
        )
        self.raw["by_ids"] = {
            "count": BY_ID_COUNT,
            "over_http": over_http,
            "direct_100_gets_p50_ms": 1000 * statistics.median(timings),
            "in_process": counted,
        }
        for name, values in counted.items():
            log(
                f"  {name:<10} statements {values['statements']}  provider calls "
                f"{values['provider_calls']}"
            )

    def soak(self) -> None:
        plan = self.plan
        stack = self.stack
        log(
            f"RSS soak: up to {plan.soak_requests:,} requests or {plan.soak_seconds:.0f} s "
            f"(bankAccounts(first: 10) and 1 add in 10, c={plan.soak_concurrency})"
        )
        query = (
            "{ bankAccounts(first: 10) { edges { node { id last4 status isDefault } } "
            "pageInfo { hasNextPage } } }"
        )
        options: dict[str, str | int] = {
            "mode": "mix",
            "path": "/graphql",
            "auth": f"Bearer {stack.keys.commet}",
            "body": self.body_file("soak-query", query),
            "every": 10,
            "bad": '"errors"|Error"',
        }
        series: list[dict[str, float]] = [
            {"requests": 0, "rss_mb": self.rss_mb(), "seconds": 0.0, "rps": 0.0}
        ]
        started = time.monotonic()
        done, failed = 0, 0
        while done < plan.soak_requests:
            left = plan.soak_seconds - (time.monotonic() - started)
            if left < 1:
                break
            # wrk runs for whole seconds (its main thread sleeps for -d whatever the workers
            # do), so chunks are timed and the last one may pass the target a little.
            result = run_wrk(
                "soak",
                stack.gateway.base,
                connections=plan.soak_concurrency,
                duration=min(plan.soak_chunk_seconds, left),
                options={**options, "salt": next(self.salts)},
                watch=self.watch,
            )
            done += result.requests
            failed += result.errors
            series.append(
                {
                    "requests": done,
                    "rss_mb": self.rss_mb(),
                    "seconds": time.monotonic() - started,
                    "rps": result.rps,
                    "gateway_cpu_ms_per_request": result.cpu_us_per_request("gateway") / 1000,
                }
            )
        elapsed = time.monotonic() - started
        self.raw["soak"] = {
            "requests": done,
            "errors": failed,
            "seconds": elapsed,
            "target": plan.soak_requests,
            "concurrency": plan.soak_concurrency,
            "series": series,
        }
        log(
            f"  {done:,} requests in {elapsed:.0f} s, {failed} errors; RSS "
            f"{series[0]['rss_mb']:.1f} -> {series[-1]['rss_mb']:.1f} MB"
        )


def log(message: str) -> None:
    print(message, flush=True)


def machine(workers: tuple[int, ...]) -> dict[str, Any]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    banner = subprocess.run(
        [wrk_binary(), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    wrk_version = " ".join(banner.split()[:2]) or "wrk"
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.strip()

    digest = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")):
        digest.update(path.read_bytes())

    def has(module: str) -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "loadavg_before": os.getloadavg()[0],
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_version.strip(),
        "commit": commit,
        "src_sha256": digest.hexdigest()[:12],
        # Every part with the first count; addBankAccount again with each further one.
        "gateway_workers": list(workers),
        "environment": ENVIRONMENT,
        "database": "SQLite file (statements on the loop's thread; writers queued together "
        "share one transaction and one COMMIT, run on a commit thread: store/), persistence on",
        "status_refresh": "off (PAYOUT_GATEWAY_REFRESH_INTERVAL_SECONDS=0)",
        "max_page_size": MAX_PAGE_SIZE,
        "uvloop": has("uvloop"),
        "httptools": has("httptools"),
        "commet_idempotency_ttl_s": COMMET_IDEMPOTENCY_TTL_SECONDS,
    }


ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Disconnect)\b.*$")


def keep_logs(workdir: Path, target: Path) -> dict[str, int]:
    """Copy the processes' logs next to the raw numbers; count the gateway's exception lines."""
    target.mkdir(parents=True, exist_ok=True)
    for log_file in workdir.glob("*.log"):
        shutil.copyfile(log_file, target / log_file.name)
    counts: Counter[str] = Counter()
    # gateway.log, and gateway-wN.log for each restart with N workers
    for gateway_log in sorted(workdir.glob("gateway*.log")):
        for line in gateway_log.read_text(errors="replace").splitlines():
            if ERROR_LINE.match(line):
                counts[line[:160]] += 1
    return dict(counts.most_common(10))


def graphql_requests_by_process(gateway_log: Path, start: int) -> list[int]:
    """Requests to /graphql that each gateway process logged after byte ``start`` of its log
    (the access log's JSON records), most first."""
    served: Counter[int] = Counter()
    with gateway_log.open("rb") as lines:
        lines.seek(start)
        for line in lines:
            if line.startswith(b"{") and b'"payout_gateway.access"' in line:
                record = json.loads(line)
                if record.get("path") == "/graphql":
                    served[int(record["process"])] += 1
    return sorted(served.values(), reverse=True)


def worker_counts(text: str) -> tuple[int, ...]:
    """``--workers``: a comma list starting with 1 (every part runs on the 1-worker gateway;
    the RSS soak reads one process), duplicates dropped."""
    try:
        counts = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r}") from error
    if not counts or counts[0] != 1 or not all(1 <= n <= 64 for n in counts):
        raise argparse.ArgumentTypeError(
            f"worker counts from 1 to 64, the first one 1 (e.g. 1,2 or 1,2,4): {text!r}"
        )
    return counts


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~1-minute smoke run")
    parser.add_argument("--soak-requests", type=int, default=100_000)
    parser.add_argument("--soak-seconds", type=float, default=None, help="time cap of the RSS soak")
    parser.add_argument(
        "--workers",
        type=worker_counts,
        default=(1, 2),
        metavar="1,N,...",
        help="gateway worker counts (default 1,2): every part runs with 1 worker, then the "
        "gateway is restarted with each further count and addBankAccount runs again",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    plan = Plan.make(args.quick, args.soak_requests, args.soak_seconds)
    workers: tuple[int, ...] = args.workers
    started = time.monotonic()
    raw: dict[str, Any] = {"machine": machine(workers), "plan": plan.__dict__}
    raw_dir = args.out / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    raw_path = raw_dir / f"{stamp}{'-quick' if plan.quick else ''}.json"
    try:
        with tempfile.TemporaryDirectory(prefix="payout-bench-") as tmp:
            workdir = Path(tmp)
            log(f"starting sandboxes and gateway in {workdir}")
            try:
                with running_stack(workdir, workers[0]) as stack:
                    bench = Bench(stack, plan, workdir)
                    try:
                        bench.prepare()
                        bench.reads()
                        bench.by_ids()
                        bench.adds()
                        bench.soak()
                        for count in workers[1:]:
                            bench.restart(count)
                            bench.adds()
                    finally:
                        bench.http.close()
                        raw.update(bench.raw)
            finally:
                raw["gateway_log_errors"] = keep_logs(workdir, raw_dir / "logs")
    finally:
        raw["seconds"] = time.monotonic() - started
        raw["loadavg_after"] = os.getloadavg()[0]
        raw_path.write_text(json.dumps(raw, indent=2))
        log(f"raw numbers: {raw_path}")
    # A smoke run must not replace the published results.
    target = raw_dir if plan.quick else args.out
    name = "quick" if plan.quick else "latest"
    report.write(raw, target / f"{name}.md", target / f"{name}.png")
    log(f"wrote {target / name}.md and {name}.png in {raw['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
