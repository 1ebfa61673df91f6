"""``/metrics`` summed over worker processes: the gauges of workers that are gone (exited,
or exited and not yet reaped) stop being reported; running workers' gauges and every
worker's counters stay."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from payout_gateway.metrics import MULTIPROCESS_DIRECTORY, exposition

# A worker's life in short: its provider circuit is open, one subscription is open, one
# request was answered; then it waits for a line on stdin, or exits at once.
WORKER = textwrap.dedent(
    """
    import sys
    from payout_gateway.metrics import HTTP_REQUESTS, PROVIDER_CIRCUIT_OPEN, SUBSCRIPTIONS
    PROVIDER_CIRCUIT_OPEN.labels("commet").set(1)
    SUBSCRIPTIONS.inc()
    HTTP_REQUESTS.labels("/graphql", "POST", "200").inc()
    print("counted", flush=True)
    if sys.argv[1] == "wait":
        sys.stdin.readline()
    """
)


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(MULTIPROCESS_DIRECTORY, str(tmp_path))
    return tmp_path


def start_worker(*, wait: bool) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, "wait" if wait else "exit"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stdout.readline() == "counted\n"
    return worker


def waiting_worker() -> Iterator[subprocess.Popen[str]]:
    worker = start_worker(wait=True)
    yield worker
    worker.communicate("\n", timeout=10)


@pytest.fixture
def running_worker(directory: Path) -> Iterator[subprocess.Popen[str]]:
    yield from waiting_worker()


@pytest.fixture
def other_worker(directory: Path) -> Iterator[subprocess.Popen[str]]:
    """A second worker, running beside ``running_worker``."""
    yield from waiting_worker()


def samples(name: str) -> list[tuple[dict[str, str], float]]:
    text, _ = exposition("")
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == name
    ]


def circuit_pids() -> set[str]:
    return {labels["pid"] for labels, _ in samples("payout_gateway_provider_circuit_open")}


def wait_for_exit(pid: int) -> None:
    """Until ``pid`` has exited: a zombie, as nobody has reaped it."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the worker did not exit"
        time.sleep(0.01)


def test_a_reaped_workers_gauges_go_its_counters_stay(
    directory: Path, running_worker: subprocess.Popen[str]
) -> None:
    gone = start_worker(wait=False)
    gone.communicate(timeout=10)

    assert circuit_pids() == {str(running_worker.pid)}
    assert samples("payout_gateway_subscriptions_active") == [({}, 1.0)]
    # A count never goes down: the gone worker's request is still in the sum.
    requests = samples("payout_gateway_http_requests_total")
    assert [value for labels, value in requests if labels.get("route") == "/graphql"] == [2.0]
    assert not list(directory.glob(f"gauge_live*_{gone.pid}.db"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_dead_worker_not_yet_reaped_is_gone_too(
    directory: Path, running_worker: subprocess.Popen[str]
) -> None:
    zombie = start_worker(wait=False)
    try:
        wait_for_exit(zombie.pid)
        assert circuit_pids() == {str(running_worker.pid)}
    finally:
        zombie.communicate(timeout=10)


def test_running_workers_are_all_reported(
    running_worker: subprocess.Popen[str], other_worker: subprocess.Popen[str]
) -> None:
    assert circuit_pids() == {str(running_worker.pid), str(other_worker.pid)}
    assert samples("payout_gateway_subscriptions_active") == [({}, 2.0)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_each_worker_notes_when_it_started(
    directory: Path, running_worker: subprocess.Popen[str]
) -> None:
    noted = (directory / f"started_{running_worker.pid}.txt").read_text()
    stat = Path(f"/proc/{running_worker.pid}/stat").read_text()
    assert noted == stat.rpartition(")")[2].split()[19]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_gauges_under_a_pid_now_given_to_another_process_go(
    directory: Path, running_worker: subprocess.Popen[str], other_worker: subprocess.Popen[str]
) -> None:
    # As if the files under this pid had been written by an earlier process that had it.
    (directory / f"started_{other_worker.pid}.txt").write_text("1")
    assert circuit_pids() == {str(running_worker.pid)}
    assert samples("payout_gateway_subscriptions_active") == [({}, 1.0)]
    assert not list(directory.glob(f"gauge_live*_{other_worker.pid}.db"))
    assert not (directory / f"started_{other_worker.pid}.txt").exists()


def test_a_running_worker_that_noted_no_start_is_reported(
    directory: Path, running_worker: subprocess.Popen[str]
) -> None:
    (directory / f"started_{running_worker.pid}.txt").unlink(missing_ok=True)
    assert circuit_pids() == {str(running_worker.pid)}
