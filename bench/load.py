"""Drives one wrk run with bench/wrk/load.lua and reads back its JSON summary and CPU use."""

from __future__ import annotations

import functools
import json
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

SCRIPT = Path(__file__).resolve().parent / "wrk" / "load.lua"
MARK = "BENCHJSON "


@dataclass
class LoadResult:
    """One wrk run: counts, latency percentiles (ms) and CPU seconds spent per watched process
    (its children included), plus wrk's own under ``"wrk"``."""

    label: str
    connections: int
    duration_s: float
    requests: int
    failed: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    sample: str
    cpu_s: dict[str, float] = field(default_factory=dict)
    # Instructions retired per watched process (its children included), where ``perf`` can
    # count them: unlike CPU seconds, they hardly move with what else the machine runs.
    instructions: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def errors(self) -> int:
        return self.failed + self.socket_errors + self.timeouts

    def cpu_us_per_request(self, name: str) -> float:
        return 1e6 * self.cpu_s.get(name, 0.0) / self.requests if self.requests else 0.0

    def instructions_per_request(self, name: str) -> float | None:
        counted = self.instructions.get(name)
        return counted / self.requests if counted is not None and self.requests else None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": self.rps, "errors": self.errors}


def percentile(values: Iterable[float], share: float) -> float:
    """The value at ``share`` (0-1) of ``values`` sorted, nearest rank; NaN for none (the
    latencies our own load generators record: bench/outage.py, bench/load_row.py)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed (scripts/bench installs it)")
    return found


# A process is keyed by pid and start time, so that a reused pid is not taken for the same one.
ProcessKey = tuple[int, float]


def _cpu_snapshot(pids: Mapping[str, int]) -> dict[str, dict[ProcessKey, float]]:
    """User + system CPU seconds of each watched process and of all its descendants (uvicorn's
    supervisor spawns the workers with ``--workers N``), per process. A watched process that is
    gone is left out."""
    snapshot: dict[str, dict[ProcessKey, float]] = {}
    for name, pid in pids.items():
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        seconds: dict[ProcessKey, float] = {}
        for process in family:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    seconds[(process.pid, process.create_time())] = times.user + times.system
            except psutil.Error:
                continue  # exited between listing and reading
        snapshot[name] = seconds
    return snapshot


def _cpu_used(
    before: Mapping[str, Mapping[ProcessKey, float]],
    after: Mapping[str, Mapping[ProcessKey, float]],
) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per watched name: the difference for a process
    present in both, all of it for a process started in between (it had spent none before). A
    process that exited in between is missed (its CPU cannot be read any more); a gateway's
    workers live as long as it does."""
    used = {}
    for name, now in after.items():
        if name not in before:
            continue
        then = before[name]
        used[name] = sum(seconds - then.get(key, 0.0) for key, seconds in now.items())
    return used


@functools.cache
def perf_counts_instructions() -> bool:
    """Whether ``perf stat`` reads the instructions counter here (not on every machine)."""
    if shutil.which("perf") is None:
        return False
    probe = subprocess.run(
        ["perf", "stat", "-x,", "-e", "instructions", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.returncode == 0 and perf_count(probe.stderr) is not None


def perf_count(output: str) -> int | None:
    """The instructions count in ``perf stat -x,`` output, None without one."""
    for line in output.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            return int(fields[0])
    return None


@contextmanager
def _instructions(pids: Mapping[str, int]) -> Iterator[dict[str, int]]:
    """Instructions each watched process and its descendants retire inside the block, counted
    by one ``perf stat`` per name; filled in as the block ends, empty without ``perf``."""
    counted: dict[str, int] = {}
    if not perf_counts_instructions():
        yield counted
        return
    counters: dict[str, subprocess.Popen[str]] = {}
    for name, pid in pids.items():
        try:
            root = psutil.Process(pid)
            family = [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.Error:
            continue
        counters[name] = subprocess.Popen(
            ["perf", "stat", "-x,", "-e", "instructions", "-p", ",".join(map(str, family))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        yield counted
    finally:
        for name, counter in counters.items():
            counter.send_signal(signal.SIGINT)
            _, output = counter.communicate(timeout=30)
            count = perf_count(output)
            if count is not None:
                counted[name] = count


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    label: str,
    base_url: str,
    *,
    connections: int,
    duration: float,
    options: Mapping[str, str | int],
    watch: Mapping[str, int],
    timeout_s: float = 10.0,
) -> LoadResult:
    """Run wrk with one thread against ``base_url`` for ``duration`` seconds; ``watch`` names
    the server processes whose CPU is counted, each with its children (see ``_cpu_snapshot``)."""
    args = [
        wrk_binary(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s:g}s",
        "-s",
        str(SCRIPT),
        base_url,
        "--",
        *(f"{key}={value}" for key, value in options.items()),
    ]
    before = _cpu_snapshot(watch)
    children_before = _children_cpu()
    with _instructions(watch) as instructions:
        completed = subprocess.run(
            args, capture_output=True, text=True, timeout=duration + timeout_s + 30, check=False
        )
    cpu = _cpu_used(before, _cpu_snapshot(watch))
    cpu["wrk"] = _children_cpu() - children_before
    line = next((x for x in completed.stdout.splitlines() if x.startswith(MARK)), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed for {label} (exit {completed.returncode}):\n"
            f"{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}"
        )
    raw = json.loads(line.removeprefix(MARK))
    return LoadResult(
        label=label,
        connections=connections,
        duration_s=raw["duration_us"] / 1e6,
        requests=raw["requests"],
        failed=raw["failed"],
        socket_errors=raw["socket_errors"],
        timeouts=raw["timeouts"],
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        sample=raw["sample"],
        cpu_s=cpu,
        instructions=instructions,
    )
