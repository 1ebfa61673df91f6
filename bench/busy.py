"""How busy every thread of the stack is while wrk drives addBankAccount through the gateway.

A ratio below target has two different causes: the gateway's event loop may be saturated (its
thread near 100 % of a core: only less CPU per add helps), or requests may spend their time
waiting (the loop idle part of the time while every request in flight waits for the provider,
the commit or the file's writer turn: shorter waits help too). This starts the stack as the
benchmark does (bench/stack.py), warms it up, then samples each thread's CPU time (user and
system, from /proc) of the gateway's processes, both sandboxes and wrk over the middle of one
wrk run, and prints each thread's share of one core (bench/PROFILE.md, fifteenth round).

    .venv/bin/python -m bench.busy --provider paygentic --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from bench.load import LoadResult
from bench.run import Bench, Plan
from bench.stack import running_stack

# (process label, thread id) -> (thread name, CPU seconds so far)
Sample = dict[tuple[str, int], tuple[str, float]]


def thread_name(pid: int, tid: int) -> str:
    """The main thread (a Python process's event loop) or the kernel's name of the thread:
    Python 3.11 does not name its threads for the kernel, so the commit thread and the
    writer-turn thread show only their ids."""
    try:
        command = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        command = "?"
    return f"main thread ({command})" if tid == pid else f"thread {tid} ({command})"


def sample(processes: dict[str, psutil.Process]) -> Sample:
    taken: Sample = {}
    for label, process in processes.items():
        try:
            threads = process.threads()
        except psutil.Error:
            continue
        for thread in threads:
            name = thread_name(process.pid, thread.id)
            taken[(label, thread.id)] = (name, thread.user_time + thread.system_time)
    return taken


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", choices=["commet", "paygentic"], default="paygentic")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--seconds", type=float, default=8, help="the wrk run; 1 s each end unsampled"
    )
    args = parser.parse_args()
    plan = Plan.make(quick=False, soak_requests=0, soak_seconds=1)
    with (
        tempfile.TemporaryDirectory(prefix="payout-busy-") as folder,
        running_stack(Path(folder), args.workers, None) as stack,
    ):
        bench = Bench(stack, plan, Path(folder))
        try:
            if args.provider == "commet":
                bench.verify_commet()
            base, options = bench.add_targets()[args.provider]["gateway"]
            bench.wrk("warm-up", base, options, connections=8, seconds=plan.warmup_seconds)
            gateway = psutil.Process(stack.gateway.pid)
            # With several workers, the process started is uvicorn's supervisor.
            processes = {"gateway" if args.workers == 1 else "gateway supervisor": gateway}
            for child in gateway.children(recursive=True):
                processes[f"gateway process {child.pid}"] = child
            processes["commet sandbox"] = psutil.Process(stack.commet.pid)
            processes["paygentic sandbox"] = psutil.Process(stack.paygentic.pid)
            result: list[LoadResult] = []
            driving = threading.Thread(
                target=lambda: result.append(
                    bench.wrk(
                        "gateway", base, options, connections=args.connections, seconds=args.seconds
                    )
                )
            )
            driving.start()
            time.sleep(1)
            processes.update(
                {
                    f"wrk {child.pid}": child
                    for child in psutil.Process().children(recursive=True)
                    if child.name() == "wrk"
                }
            )
            before, started = sample(processes), time.monotonic()
            time.sleep(max(args.seconds - 2, 1))
            after, ended = sample(processes), time.monotonic()
            driving.join()
        finally:
            bench.http.close()
    if result[0].errors:
        raise SystemExit(f"the gateway answered with errors: {result[0].sample[:300]}")
    elapsed = ended - started
    print(
        f"\naddBankAccount ({args.provider}) through the gateway, {args.workers} worker(s), "
        f"c={args.connections}: {result[0].rps:.0f} req/s\n"
    )
    print("| process | thread | busy (% of one core) |\n|---|---|---:|")
    total = 0.0
    for key in sorted(after):
        name, cpu = after[key]
        busy = (cpu - before.get(key, (name, 0.0))[1]) / elapsed
        total += busy
        if busy >= 0.005:
            print(f"| {key[0]} | {name} | {busy * 100:.1f} |")
    print(f"| all | | {total * 100:.1f} (of {psutil.cpu_count() * 100}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
