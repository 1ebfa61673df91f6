"""The gateway's Prometheus metrics, and ``/metrics``' answer summed over worker processes.

Process-wide, as prometheus_client intends: the code that sees an event counts it here (the
access-log middleware, the provider transport, the status pipeline, webhooks, subscriptions).
Label values come from small fixed sets (routes, providers, status codes, enums), never from
a request's own data, so no caller can grow the series.

Under ``serve --workers N`` every worker keeps its own counts and a scrape reaches one of them;
``serve`` then points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers
start, prometheus_client keeps each worker's values in files there, and ``/metrics`` answers
with the sum over all workers (gauges per worker, labelled with its pid). A worker that died
(uvicorn restarts it, SIGHUP restarts them all, SIGTTOU stops one) leaves its gauge files
behind; each scrape drops those of workers no longer running, as prometheus_client's
``mark_process_dead`` is meant to be called, since uvicorn offers no hook at a worker's exit.
A pid the system has since given to another process counts as gone too: each process notes
its start time beside its files. Its counters stay in the sums: a count must never go down.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"

# The files of gauges that count only running processes (multiprocess_mode "live..."), by pid.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")

# Seconds: a provider answers in milliseconds, a slow one in seconds, a deadline at 25 s.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25)

HTTP_REQUESTS = Counter(
    "payout_gateway_http_requests",
    "HTTP requests answered, by route, method and status code.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "payout_gateway_http_request_duration_seconds",
    "Time to answer an HTTP request, by route.",
    ["route"],
    buckets=_LATENCY_BUCKETS,
)
PROVIDER_ATTEMPTS = Counter(
    "payout_gateway_provider_attempts",
    "Requests to a provider, each retry counted, by outcome: the HTTP status, or not_sent "
    "(no connection), sent_no_answer (timed out or cut after sending), deadline (the call's "
    "total deadline) or circuit_open (refused by the gateway, nothing sent).",
    ["provider", "outcome"],
)
PROVIDER_SECONDS = Histogram(
    "payout_gateway_provider_request_duration_seconds",
    "Time for a provider to answer one request (answered attempts only).",
    ["provider"],
    buckets=_LATENCY_BUCKETS,
)
PROVIDER_CIRCUIT_OPEN = Gauge(
    "payout_gateway_provider_circuit_open",
    "1 while the gateway's circuit to the provider is open or probing, else 0.",
    ["provider"],
    multiprocess_mode="liveall",
)
STATUS_CHANGES = Counter(
    "payout_gateway_status_changes",
    "Status changes applied and published, by object type, new status and source.",
    ["object_type", "to_status", "source"],
)
WEBHOOKS = Counter(
    "payout_gateway_webhook_deliveries",
    "Provider webhook deliveries, by provider and what became of them.",
    ["provider", "outcome"],
)
SUBSCRIPTIONS = Gauge(
    "payout_gateway_subscriptions_active",
    "GraphQL subscriptions open now.",
    multiprocess_mode="livesum",
)
SUBSCRIPTIONS_ENDED_MISSING = Counter(
    "payout_gateway_subscriptions_ended_missing",
    "Subscriptions ended because they missed status changes, by reason: fell_behind (the "
    "client read too slowly) or lost_in_fanout (lost between replicas).",
    ["reason"],
)
STATUS_CHANGES_RELAYED = Counter(
    "payout_gateway_status_changes_relayed",
    "Status changes published from the status outbox: their replica committed them and "
    "stopped before Redis took them.",
)

_ROUTES = frozenset(
    {"/graphql", "/webhooks/commet", "/webhooks/paygentic", "/healthz", "/readyz", "/metrics"}
)


class LabelledChildren:
    """A metric's children by label values, looked up in a dict: ``labels()`` checks and
    locks on every call, about three times the cost of the increment itself, paid on every
    request. The label values must come from fixed sets (the caller's duty, as above)."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Counter | Histogram | Gauge) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


def route_of(path: str) -> str:
    """The route label of a request path: one of a fixed few."""
    if path in _ROUTES:
        return path
    if path.startswith("/sandbox/"):
        return "/sandbox"
    return "other"


def exposition(accept: str) -> tuple[bytes, str]:
    """The metrics and their content type, in the format the scraper's ``Accept`` asks for
    (Prometheus' text format unless it asks for OpenMetrics): this process's, or every
    worker's summed."""
    encode, content_type = choose_encoder(accept)
    directory = os.environ.get(MULTIPROCESS_DIRECTORY)
    if directory:
        forget_dead_workers(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return encode(registry), content_type
    return encode(REGISTRY), content_type


def forget_dead_workers(directory: str) -> None:
    """Remove the live gauges' files of processes no longer running, so that a dead worker's
    last values (an open circuit, its subscriptions) stop being reported: also where its pid
    now belongs to another process, told by the start time the worker noted
    (``note_worker_start``)."""
    pids = {
        int(found[1])
        for name in os.listdir(directory)
        if (found := _LIVE_GAUGE_FILE.fullmatch(name))
    }
    for pid in pids:
        if _gone(pid, directory):
            # Two workers scraping at once may both remove the same files.
            with contextlib.suppress(FileNotFoundError):
                mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            with contextlib.suppress(FileNotFoundError):
                _start_note(directory, pid).unlink()


def note_worker_start(directory: str | None = None) -> None:
    """Note when this process started, beside its metrics files, so that a scrape can tell
    it from a later process given the same pid. Where /proc tells no start time, nothing is
    noted and a running pid counts as this process's."""
    directory = directory or os.environ.get(MULTIPROCESS_DIRECTORY)
    stat = _stat(os.getpid())
    if directory and stat is not None:
        _start_note(directory, os.getpid()).write_text(stat[_START_TIME])


def _gone(pid: int, directory: str) -> bool:
    """Whether the worker whose metrics files bear ``pid`` no longer runs: no process has
    that pid, or it is a zombie (a dead worker its supervisor has not reaped yet), or it
    started at another time than the worker noted (the pid went to another process). Off
    POSIX nothing is told: there, ``os.kill`` with signal 0 would end the process instead of
    asking about it."""
    if os.name != "posix":
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's: it exists
    stat = _stat(pid)
    if stat is None:
        return False  # no /proc here: existing is all that can be told
    if stat[_STATE] == "Z":
        return True
    try:
        noted = _start_note(directory, pid).read_text()
    except FileNotFoundError:
        return False
    return noted != stat[_START_TIME]


def _start_note(directory: str, pid: int) -> Path:
    return Path(directory, f"started_{pid}.txt")


# Fields of /proc/<pid>/stat after the command name (which is in parentheses and may hold
# spaces): the state first, the start time (clock ticks after boot) twentieth.
_STATE, _START_TIME = 0, 19


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()


# As this module loads, before the process writes a metrics file of its own (and again in a
# forked child, which writes its own files under its own pid).
note_worker_start()
os.register_at_fork(after_in_child=note_worker_start)
