"""Samples the gateway with py-spy under addBankAccount load and sums where its CPU goes."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import psutil  # type: ignore[import-untyped]

from bench.load import SCRIPT, wrk_binary
from bench.run import VERIFY
from bench.stack import ROOT, running_stack

OUT = ROOT / "bench" / "results" / "raw"
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")

# Self time: the library a sampled leaf frame belongs to (first match wins); a leaf in no
# library (a builtin, generated code "<string>") counts for its nearest caller that is in one.
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("imports at request time (importlib)", r"<frozen importlib|importlib/|_distutils_hack"),
    ("graphql-core: parser", r"graphql/language/(parser|lexer|ast|source)"),
    ("graphql-core: visitor / validation", r"graphql/(validation|language/visitor|utilities)"),
    ("graphql-core: execution", r"graphql/"),
    ("strawberry", r"strawberry/"),
    ("pydantic", r"pydantic(_core)?/"),
    ("SQLAlchemy", r"sqlalchemy/"),
    ("aiosqlite / sqlite3", r"aiosqlite/|sqlite3/"),
    ("httpx / httpcore / h11 / anyio", r"httpx/|httpcore/|h11/|anyio/|sniffio/"),
    ("json", r"(^|/)json/"),
    ("logging", r"(^|/)logging/"),
    ("uvicorn / starlette / fastapi", r"uvicorn/|starlette/|fastapi/"),
    ("event loop (uvloop, native)", r"asyncio/runners\.py"),
    ("asyncio", r"(^|/)asyncio/"),
    ("payout_gateway (own code)", r"payout_gateway/"),
    ("threading / queue", r"(^|/)(threading|queue)\.py"),
)

# Inclusive time: a sample counts for every phase a frame of its stack belongs to (they nest).
# SQLAlchemy's asyncio layer runs the ORM in greenlets, whose sampled stacks start at the
# greenlet, not at the request: so no phase here is "the whole request".
PHASES: tuple[tuple[str, str], ...] = (
    ("GraphQL parse", r"graphql/language/parser\.py"),
    ("GraphQL validation (graphql.validate)", r"graphql/validation/validate\.py"),
    ("GraphQL execution (graphql/execution, resolvers included)", r"graphql/execution/"),
    ("API-key authentication (tenancy, its SELECT included)", r"payout_gateway/tenancy\.py"),
    ("service.add_bank_account (provider call + store writes)", r"payout_gateway/service\.py"),
    ("provider adapter (request, httpx call, answer mapping)", r"payout_gateway/providers/"),
    ("httpx / httpcore (provider HTTP client)", r"httpx/|httpcore/"),
    ("pydantic generic model built per call (SuccessEnvelope[...])", r"__class_getitem__"),
    ("store (payout_gateway/store)", r"payout_gateway/store/"),
    ("SQLAlchemy (anywhere)", r"sqlalchemy/"),
    ("SQLAlchemy ORM flush (unit of work)", r"sqlalchemy/orm/(unitofwork|persistence)\.py"),
    ("pydantic (anywhere)", r"pydantic(_core)?/"),
    ("json (anywhere)", r"(^|/)json/"),
    ("logging (anywhere)", r"(^|/)logging/"),
    ("imports at request time (importlib)", r"<frozen importlib|importlib/"),
)


@dataclass(frozen=True)
class Frame:
    function: str
    file: str

    @property
    def label(self) -> str:
        file = re.sub(r".*/site-packages/", "", self.file)
        file = re.sub(r".*/(lib/python3\.\d+|src)/", "", file)
        return f"{self.function} ({file})"


def parse_frame(text: str) -> Frame:
    match = FRAME.match(text)
    if match is None:
        return Frame(text, "")
    return Frame(match["function"], match["file"])


def read_samples(path: Path) -> list[tuple[list[Frame], int]]:
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples.append(([parse_frame(part) for part in stack.split(";")], int(count)))
    return samples


def _classify(file: str, table: Iterable[tuple[str, str]]) -> list[str]:
    return [name for name, pattern in table if re.search(pattern, file)]


def summarize(samples: Sequence[tuple[list[Frame], int]]) -> dict[str, list[tuple[str, float]]]:
    """Shares of all samples (%), by library (self), by phase (inclusive), by function."""
    total = sum(count for _, count in samples) or 1
    self_lib: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for frames, count in samples:
        if frames and frames[0].function.startswith("thread"):
            threads[frames[0].function] += count
            frames = frames[1:]
        owner = next(
            (found[0] for f in reversed(frames) if (found := _classify(f.file, LIBRARIES))),
            "other",
        )
        self_lib[owner] += count
        self_fn[frames[-1].label if frames else "?"] += count
        hit = set()
        for frame in frames:
            hit.update(_classify(frame.function + " " + frame.file, PHASES))
        for phase in hit:
            phases[phase] += count
        for label in {frame.label for frame in frames}:
            incl_fn[label] += count

    def share(counter: Counter[str], limit: int | None = None) -> list[tuple[str, float]]:
        return [(name, 100 * n / total) for name, n in counter.most_common(limit)]

    return {
        "self_by_library": share(self_lib),
        "inclusive_by_phase": share(phases),
        "self_by_function": share(self_fn, 30),
        "inclusive_by_function": share(incl_fn, 80),
        "threads": share(threads),
    }


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--provider", choices=["commet", "paygentic"], default="commet")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=25)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every non-idle thread, not only the one holding the GIL",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    OUT.mkdir(parents=True, exist_ok=True)
    raw_path = OUT / f"profile-add-{args.provider}.txt"
    with (
        tempfile.TemporaryDirectory(prefix="payout-profile-") as tmp,
        running_stack(Path(tmp)) as stack,
    ):
        key = stack.keys.commet if args.provider == "commet" else stack.keys.paygentic
        import httpx

        answer = httpx.post(
            f"{stack.gateway.base}/graphql",
            json={"query": VERIFY},
            headers={"authorization": f"Bearer {stack.keys.commet}"},
            timeout=30,
        )
        answer.raise_for_status()
        load = subprocess.Popen(
            [
                wrk_binary(),
                "-t1",
                f"-c{args.connections}",
                f"-d{args.seconds + 6}s",
                "-s",
                str(SCRIPT),
                stack.gateway.base,
                "--",
                "mode=gql_add",
                "path=/graphql",
                f"auth=Bearer {key}",
                "salt=555",
                "ok=AddBankAccountSuccess",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(3)  # warm-up: caches filled, connections open
            gateway = psutil.Process(stack.gateway.pid)
            cpu_before = sum(gateway.cpu_times()[:2])
            subprocess.run(
                [
                    *(py_spy, "record", "--pid", str(stack.gateway.pid), "--rate", str(args.rate)),
                    *("--duration", str(args.seconds), "--format", "raw", "--threads"),
                    *("--output", str(raw_path), "--nonblocking"),
                    *(() if args.all_threads else ("--gil",)),
                ],
                check=True,
                timeout=args.seconds + 60,
                capture_output=True,
            )
            cpu = sum(gateway.cpu_times()[:2]) - cpu_before
            out, _ = load.communicate(timeout=args.seconds + 30)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(timeout=10)
    line = next(x for x in out.splitlines() if x.startswith("BENCHJSON "))
    wrk = json.loads(line.removeprefix("BENCHJSON "))
    rps = wrk["requests"] / (wrk["duration_us"] / 1e6)
    samples = read_samples(raw_path)
    summary = summarize(samples)
    sampled_ms = 1000 * sum(count for _, count in samples) / args.rate
    result = {
        "provider": args.provider,
        "connections": args.connections,
        "seconds": args.seconds,
        "rps": rps,
        "failed": wrk["failed"],
        "gateway_cpu_s": cpu,
        "gateway_cpu_ms_per_request": 1000 * cpu / (rps * args.seconds) if rps else None,
        # GIL-held time per request as sampled: each share x this = ms per request.
        "sampled_ms_per_request": sampled_ms / (rps * args.seconds) if rps else None,
        "raw_stacks": str(raw_path.relative_to(ROOT)),
        **summary,
    }
    summary_path = OUT / f"profile-add-{args.provider}.json"
    summary_path.write_text(json.dumps(result, indent=2))
    print(
        f"{rps:.1f} req/s, gateway CPU {result['gateway_cpu_ms_per_request']:.2f} ms/request, "
        f"sampled {result['sampled_ms_per_request']:.2f} ms/request"
    )
    for section in ("threads", "self_by_library", "inclusive_by_phase", "self_by_function"):
        print(f"\n{section}")
        for name, pct in result[section]:
            print(f"  {pct:5.1f} %  {name}")
    print(f"\nwrote {summary_path} and {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
