"""Instructions per addBankAccount, counted by callgrind: the gateway's app in-process, its real
service, SQLite store and provider adapter (Commet's, or Paygentic's with ``--provider
paygentic``), that provider's sandbox in a process of its own.

Throughput and CPU seconds on a shared 2-core machine move by 10-30 % between runs of the same
code, more than most levers left; ``perf stat`` reads the instructions counter only where the
machine exposes one. Valgrind's callgrind counts every instruction the process executes on any
machine: the same tree counted twice differed by 0.5-2 % here (the adds' interleaving, and so
the SQLite commit groups, vary from run to run), so a lever of 3 % or more shows. It runs the
code ~25 times slower, which is why it counts a few hundred adds in-process (the ASGI app
called as uvicorn calls it) instead of serving wrk: uvicorn's HTTP
handling (~36 us per request on this machine) and the log lines (no handler is configured
here) are not in the count.

Each tree's child process seeds an organization, verifies it, warms up, then zeroes the
counters (``callgrind_control -z``), runs ``--adds`` adds from ``--callers`` concurrent callers,
dumps the counters (``callgrind_control -d``, which resets them), runs twice as many adds and
dumps again: the difference of the two counts is ``--adds`` adds without the fixed cost of the
control calls. Trees run side by side (the count does not depend on the machine's load); the
sandbox's own work is not counted.

    .venv/bin/python -m bench.instructions --tree before=/tmp/wt-base --tree after=.
    .venv/bin/python -m bench.instructions --provider paygentic

Needs valgrind (Debian: ``apt-get install valgrind``). ``--counter perf`` counts the same adds
with ``perf stat`` (user-space instructions) instead, about ten times faster, where the machine
exposes an instructions counter: the child starts ``perf stat`` on itself for each phase, and
the difference of the phases is again the adds alone (the same tree counted twice differed by
under 0.5 %). ``--keyed`` sends every add with an idempotency key, as backend services do.
``--postgres URL`` stores in a new database on that PostgreSQL server per tree instead of a
SQLite file (the server's own work is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.compare import python_path, tree
from bench.load import perf_count, perf_counts_instructions
from bench.stack import COMMET_KEY, ROOT, fresh_postgres_database, provider_sandbox
from payout_gateway.domain.enums import Provider

TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)
PERF_MARK = "perf phases: "


KEYED_ADD = (
    "mutation($input: AddBankAccountInput!, $key: String) { addBankAccount(input: $input, "
    "idempotencyKey: $key) { __typename ... on AddBankAccountSuccess { bankAccount { id last4 } "
    "} } }"
)


def _keyed_body(sequence: int) -> bytes:
    """bench/graphql_layer's add body with an idempotency key of its own."""
    from bench.graphql_layer import add_body

    body = json.loads(add_body(sequence))
    body["query"] = KEYED_ADD
    body["variables"]["key"] = f"bench-{sequence}"
    return json.dumps(body).encode()


class _PerfPhase:
    """``perf stat`` on this process for one phase; its user-space instructions once stopped."""

    def __init__(self) -> None:
        self._counter = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", "instructions:u", "-p", str(os.getpid())],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.3)  # perf attaches asynchronously

    def stop(self) -> int:
        self._counter.send_signal(signal.SIGINT)
        _, output = self._counter.communicate(timeout=30)
        count = perf_count(output)
        if count is None:
            raise RuntimeError(f"perf stat counted nothing: {output[-500:]}")
        return count


async def child(
    base_url: str,
    provider: Provider,
    callers: int,
    adds: int,
    warm_up: int,
    counter: str,
    keyed: bool,
    database_url: str | None,
) -> None:
    """Runs in the process being counted: the adds between zeroing and dumping (callgrind), or
    inside each phase's ``perf stat`` (perf). ``database_url``: an empty PostgreSQL database
    to store in instead of a SQLite file."""
    from bench.graphql_layer import add_body, gateway_settings, post, seed
    from bench.run import VERIFY
    from payout_gateway.web import create_app
    from payout_gateway.web.gc_tuning import tune_cycle_collector

    with tempfile.TemporaryDirectory() as workdir:
        database_url = database_url or f"sqlite:///{workdir}/gateway.db"
        # Every tree's child adds for the same Commet organization of the one sandbox: account
        # numbers start from the process id so that they never repeat across children.
        api_key = await seed(database_url, commet_api_key=COMMET_KEY, provider=provider)
        base_urls = (
            {"commet_base_url": base_url}
            if provider is Provider.COMMET
            else {"paygentic_base_url": base_url}
        )
        app = create_app(gateway_settings(database_url, **base_urls))
        async with app.router.lifespan_context(app):
            if provider is Provider.COMMET:
                verified = await post(app, api_key, json.dumps({"query": VERIFY}).encode())
                if b"CompletePayoutVerificationSuccess" not in verified:
                    raise RuntimeError(f"verification failed: {verified[:300]!r}")
            sequence = iter(range(os.getpid() * 1_000_000, 10**15))

            body = _keyed_body if keyed else add_body

            async def caller(count: int) -> None:
                for _ in range(count):
                    answer = await post(app, api_key, body(next(sequence)))
                    if b"AddBankAccountSuccess" not in answer:
                        raise RuntimeError(f"unexpected answer: {answer[:300]!r}")

            await asyncio.gather(*(caller(warm_up) for _ in range(callers)))
            tune_cycle_collector()  # as a serving process does once it has started
            if counter == "perf":
                counts = []
                for share in (adds // callers, 2 * adds // callers):
                    phase = _PerfPhase()
                    await asyncio.gather(*(caller(share) for _ in range(callers)))
                    counts.append(phase.stop())
                print(f"{PERF_MARK}{json.dumps(counts)}", flush=True)
                return
            # Blocking on purpose: nothing may run between a reset or a dump and the adds.
            control = ["callgrind_control", str(os.getpid())]
            subprocess.run([*control, "--zero"], check=True, capture_output=True)  # noqa: ASYNC221
            for share in (adds // callers, 2 * adds // callers):
                await asyncio.gather(*(caller(share) for _ in range(callers)))
                # A dump also resets the counters.
                subprocess.run([*control, "--dump"], check=True, capture_output=True)  # noqa: ASYNC221


def count(
    source: Path, base_url: str, args: argparse.Namespace, out: Path, database_url: str | None
) -> subprocess.Popen[str]:
    """Starts one tree's child, under callgrind (its two dumps go to ``out.1`` and
    ``out.2``) or counting itself with perf (it prints both phases' counts)."""
    command = [
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        base_url,
        *("--provider", args.provider),
        *("--callers", str(args.callers), "--adds", str(args.adds)),
        *("--warm-up", str(args.warm_up), "--counter", args.counter),
        *(["--keyed"] if args.keyed else []),
        *(["--database", database_url] if database_url else []),
    ]
    if args.counter == "callgrind":
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *command]
    with python_path(source):
        return subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )


def _perf_counts(output: str) -> tuple[int, int] | None:
    for line in output.splitlines():
        if line.startswith(PERF_MARK):
            first, second = json.loads(line.removeprefix(PERF_MARK))
            return int(first), int(second)
    return None


def _totals(dump: Path) -> int | None:
    found = TOTALS.search(dump.read_text()) if dump.exists() else None
    return int(found.group(1)) if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=tree, action="append")
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--adds", type=int, default=320, help="adds counted per tree")
    parser.add_argument("--warm-up", type=int, default=5, help="adds per caller before counting")
    parser.add_argument(
        "--counter",
        choices=["callgrind", "perf"],
        default="callgrind",
        help="what counts (perf: where the machine exposes an instructions counter)",
    )
    parser.add_argument("--keyed", action="store_true", help="adds with idempotency keys")
    parser.add_argument("--provider", choices=["commet", "paygentic"], default="commet")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL server (e.g. postgresql://127.0.0.1/test) to store in, a new "
        "database per tree, instead of a SQLite file",
    )
    parser.add_argument("--child", metavar="BASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        uvloop.run(
            child(
                args.child,
                Provider(args.provider.upper()),
                args.callers,
                args.adds,
                args.warm_up,
                args.counter,
                args.keyed,
                args.database,
            )
        )
        return 0
    if args.counter == "callgrind" and shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    if args.counter == "perf" and not perf_counts_instructions():
        parser.error("perf cannot count instructions on this machine: use --counter callgrind")
    trees = args.tree or [tree(f"working tree={ROOT}")]
    if args.adds % args.callers:
        parser.error("--adds must be a multiple of --callers")
    with (
        tempfile.TemporaryDirectory(prefix="payout-instructions-") as workdir,
        provider_sandbox(args.provider, Path(workdir)) as base_url,
        contextlib.ExitStack() as databases,
    ):
        runs: dict[str, tuple[subprocess.Popen[str], int]] = {}
        for n, (name, source) in enumerate(trees):
            database_url = None
            if args.postgres:
                database_url = databases.enter_context(
                    fresh_postgres_database(args.postgres, suffix=f"_{n}")
                )
            out = Path(workdir) / f"{n}.out"
            runs[name] = (count(source, base_url, args, out, database_url), n)
        kind = f"{args.provider} keyed adds" if args.keyed else f"{args.provider} adds"
        kind += " on PostgreSQL" if args.postgres else ""
        print(f"{args.adds} {kind} by {args.callers} callers, counted by {args.counter}")
        for name, (process, n) in runs.items():
            output, _ = process.communicate(timeout=3600)
            if args.counter == "perf":
                first, second = _perf_counts(output) or (None, None)
            else:
                first, second = (_totals(Path(workdir) / f"{n}.out.{dump}") for dump in (1, 2))
            if process.returncode != 0 or first is None or second is None:
                print(output[-3000:], file=sys.stderr)
                raise RuntimeError(f"{name}: no count (exit {process.returncode})")
            # The second phase ran twice the adds of the first: the difference is ``adds``
            # adds without what both phases pay once (the callgrind_control calls that
            # start and end them: ~70 M instructions, ~0.2 M per add at 320).
            per_add = (second - first) / args.adds / 1e6
            print(f"{name:<20} {per_add:8.3f} M instructions per add")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
