"""``payout-gateway serve --workers 2``: two processes on one port and one SQLite file, under
concurrent writes, lose nothing and fail nothing; sandbox mode refuses more than one worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from payout_gateway.cli import WORKER_HEALTHCHECK_SECONDS, main
from payout_gateway.domain.enums import HolderType, Provider
from tests.realtime.support import verify
from tests.support.gateway import SeededOrg
from tests.support.serve_process import ServedGateway, log_records, served_gateway

ORGS = (
    SeededOrg("workers-commet", Provider.COMMET, "ck_live_workers0000001"),
    SeededOrg(
        "workers-paygentic",
        Provider.PAYGENTIC,
        "pgx_token_workers",
        provider_org_id="org_workers",
        bank_name="Test Bank",
        holder_type=HolderType.INDIVIDUAL,
    ),
)
PER_ORG = 40
ADD = (
    "mutation($input: AddBankAccountInput!, $key: String) { "
    "addBankAccount(input: $input, idempotencyKey: $key) { __typename "
    "... on AddBankAccountSuccess { bankAccount { id last4 } } ... on UserError { code } } }"
)
LIST = "{ bankAccounts(first: 100) { edges { node { id last4 } } } }"


@contextmanager
def serving_workers(workdir: Path, **settings: str) -> Iterator[ServedGateway]:
    """``serve --workers 2`` (tests/support/serve_process.py) until both workers listen."""
    with served_gateway(workdir, ORGS, workers=2, settings=settings) as running:
        # One worker answering is not both listening: connections opened before the second
        # one listens all go to the first.
        deadline = time.monotonic() + 60
        while sys.platform.startswith("linux") and listening_sockets(running.port) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(running.log.read_text()[-3000:])
            time.sleep(0.1)
        yield running


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    with serving_workers(tmp_path_factory.mktemp("workers")) as running:
        yield running
    # The logging set-up reaches the worker processes: they answered, and logged it.
    records = log_records(running)
    assert any(r.get("name") == "payout_gateway.access" for r in records), records[-5:]


def listening_sockets(port: int) -> int:
    """Sockets listening on ``port`` (Linux: /proc/net/tcp, state 0A)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                count += fields[1].endswith(f":{port:04X}") and fields[3] == "0A"
    return count


def _variables(index: int, org: str) -> dict[str, object]:
    return {
        "input": {
            "bankAccount": {
                "accountNumber": f"77{index:010d}",
                "holderName": "Worker Holder",
                "routingNumber": "021000021",
            }
        },
        # Half with an idempotency key: the claim and finish are writes of their own.
        "key": f"{org}-{index}" if index % 2 else None,
    }


async def test_concurrent_adds_across_two_workers_all_land_once(workers: ServedGateway) -> None:
    # Commet takes bank accounts once the payout account exists (this saves one account too).
    await verify(f"{workers.url}/graphql", workers.keys["workers-commet"])
    async with httpx.AsyncClient(base_url=workers.url, timeout=30) as client:

        async def add(org: str, index: int) -> str:
            answer = await client.post(
                "/graphql",
                json={"query": ADD, "variables": _variables(index, org)},
                headers={"Authorization": f"Bearer {workers.keys[org]}"},
            )
            assert answer.status_code == 200, answer.text
            result = answer.json()["data"]["addBankAccount"]
            assert result["__typename"] == "AddBankAccountSuccess", result
            return str(result["bankAccount"]["id"])

        ids = await asyncio.gather(
            *(add(org.name, index) for index in range(PER_ORG) for org in ORGS)
        )
        assert len(set(ids)) == PER_ORG * len(ORGS)
        for org in ORGS:
            listed = await client.post(
                "/graphql",
                json={"query": LIST},
                headers={"Authorization": f"Bearer {workers.keys[org.name]}"},
            )
            edges = listed.json()["data"]["bankAccounts"]["edges"]
            saved_by_verification = 1 if org.provider is Provider.COMMET else 0
            assert len(edges) == PER_ORG + saved_by_verification
    # Both processes still serving: no worker died on a locked database.
    assert workers.process.poll() is None


def healthz_over_32_connections_at_once(workers: ServedGateway) -> Counter[int]:
    """GET /healthz over 32 connections opened at once, as a backend's connection pool opens
    them; how many each worker process served (its access log)."""
    already = workers.log.stat().st_size
    address = ("127.0.0.1", int(workers.url.rpartition(":")[2]))
    with ExitStack() as stack:
        connections = [
            stack.enter_context(socket.create_connection(address, timeout=30)) for _ in range(32)
        ]
        for connection in connections:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        for connection in connections:
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
    served_by: Counter[int] = Counter()
    deadline = time.monotonic() + 10
    while sum(served_by.values()) < 32 and time.monotonic() < deadline:
        time.sleep(0.1)  # each access record is written once its answer is sent
        with workers.log.open("rb") as log:
            log.seek(already)
            records = [json.loads(line) for line in log if line.startswith(b"{")]
        served_by = Counter(
            record["process"]
            for record in records
            if record["name"] == "payout_gateway.access" and record["path"] == "/healthz"
        )
    assert sum(served_by.values()) == 32, served_by
    return served_by


def test_connections_opened_together_are_served_by_both_workers(workers: ServedGateway) -> None:
    """uvicorn's one shared socket gave every connection to whichever worker was awake; a
    socket per worker (web/listeners.py) spreads them."""
    served_by = healthz_over_32_connections_at_once(workers)
    # By hash, a worker gets fewer than 4 of 32 about once in a million runs.
    assert len(served_by) == 2 and min(served_by.values()) >= 4, served_by


def healthz_answers(metrics: str) -> float:
    """The ``/healthz`` 200s a ``/metrics`` answer counts."""
    wanted = {"route": "/healthz", "method": "GET", "status": "200"}
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "payout_gateway_http_requests_total" and sample.labels == wanted
    )


def test_metrics_from_any_worker_count_what_every_worker_served(workers: ServedGateway) -> None:
    """Each worker counts in files of its own (PROMETHEUS_MULTIPROC_DIR, set by ``serve``); a
    scrape reaching either one answers with the sum."""

    def scrape() -> float:
        # A connection of its own each time: the kernel picks the worker per connection.
        with httpx.Client() as client:
            return healthz_answers(client.get(f"{workers.url}/metrics").text)

    before = scrape()
    # Both workers serve some of them: a scrape that saw only its own worker's counts would
    # be short.
    assert len(healthz_over_32_connections_at_once(workers)) == 2
    assert [scrape() for _ in range(8)] == [before + 32] * 8


def test_sandbox_mode_refuses_more_than_one_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("PAYOUT_GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["serve", "--workers", "2"])
    assert result.exit_code == 2
    assert "--workers > 1 needs PAYOUT_GATEWAY_COMMET__BASE_URL" in result.output


def test_one_worker_runs_the_status_refresh(tmp_path: Path) -> None:
    """Both workers run a refresh loop; the flock beside the SQLite file lets one of them
    refresh (store/leadership.py), so each object is read once per cycle, not once per
    worker."""
    lead = "this process leads gateway.db-status-refresh.lock"
    with serving_workers(tmp_path, refresh_interval_seconds="0.05") as running:
        # A bound, not a timing claim: the lead is taken on the first cycle.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            record.get("message") == lead for record in log_records(running)
        ):
            time.sleep(0.05)
        time.sleep(0.5)  # ten more cycles of each worker's loop
        # Read while both serve: at shutdown the leader steps down and the other may take
        # the lead for its last moments, as it should.
        leads = [record for record in log_records(running) if record.get("message") == lead]
    # Both workers listened (serving_workers waits for it) and asked each cycle; a worker
    # taking the lead logs it, so one record means the other was refused every time.
    assert len(leads) == 1, leads


def circuit_gauge_pids(workers: ServedGateway) -> set[int]:
    """The worker pids /metrics reports the providers' circuit gauges for."""
    answer = httpx.get(f"{workers.url}/metrics").text
    return {
        int(sample.labels["pid"])
        for family in text_string_to_metric_families(answer)
        for sample in family.samples
        if sample.name == "payout_gateway_provider_circuit_open"
    }


def test_a_killed_worker_restarts_and_its_gauges_are_no_longer_reported(tmp_path: Path) -> None:
    """uvicorn starts a new worker for one that died; the dead one's gauge files stay in the
    metrics directory, and /metrics reports only the running workers' gauges (metrics.py)."""
    with serving_workers(tmp_path) as running:
        before = circuit_gauge_pids(running)
        assert len(before) == 2, before
        killed = min(before)
        os.kill(killed, signal.SIGKILL)
        # uvicorn's supervisor pings each worker every half second. A SIGKILL landing while a
        # ping to that worker is in flight leaves the ping unanswered for the whole health
        # check (the supervisor holds both ends of the pipe, so it sees no EOF): the new
        # worker then starts only after WORKER_HEALTHCHECK_SECONDS (about 1 run in 7 here).
        deadline = time.monotonic() + WORKER_HEALTHCHECK_SECONDS + 30
        while True:
            assert time.monotonic() < deadline, running.log.read_text()[-3000:]
            time.sleep(0.2)
            # Also reports the new worker once it is up (its gauges start at its start).
            with contextlib.suppress(httpx.TransportError):
                after = circuit_gauge_pids(running)
                if len(after - before) == 1:
                    break
        restarted = after - before
        # The survivor and the new worker; the killed one's gauges no longer reported.
        assert after == (before - {killed}) | restarted
        assert killed not in after


def test_workers_slower_to_start_than_uvicorn_s_health_check_are_not_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new worker answers uvicorn's health check only once its interpreter has started and
    imported the command module. On a busy host that took longer than uvicorn's 5 s, and
    every worker was killed and replaced before answering, so the replica never served.
    Here each worker process's start is held up 6 s (a sitecustomize run only in the
    processes multiprocessing spawns): both still come up, and none is killed."""
    slow = tmp_path / "slow-start"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import sys, time\nif '--multiprocessing-fork' in sys.argv:\n    time.sleep(6)\n"
    )
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(slow), os.environ.get("PYTHONPATH")]))
    )
    with serving_workers(tmp_path) as running:
        assert httpx.get(f"{running.url}/readyz").status_code == 200
        log = running.log.read_text()
    assert "died" not in log, log[-3000:]
