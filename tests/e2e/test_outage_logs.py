"""What the operator reads while the gateway's database is away (PostgreSQL behind a proxy
that stalls, as when its host freezes or the network drops everything): each failure is told
once, without a traceback per request or per cycle of a background job, so that an outage (or
anyone posting to a public route during one) cannot flood the log; and every request is still
answered as documented."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from payout_gateway.domain.enums import Provider
from tests.support.gateway import RunningGateway, SeededOrg, running_gateway
from tests.support.names import unique_suffix
from tests.support.postgres import fresh_database, through_stalling_proxy
from tests.support.stalling_proxy import StallingProxy
from tests.webhooks.support import COMMET_SECRET, commet_body

pytestmark = pytest.mark.postgres

ORG = SeededOrg(
    "outage-commet",
    Provider.COMMET,
    "ck_live_outage0000001",
    provider_org_id="org_outageA",
    webhook_secret=COMMET_SECRET,
)
CLIENT_TIMEOUT = 30
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Outage:
    gateway: RunningGateway
    proxy: StallingProxy
    http: httpx.Client


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[Outage]:
    """A gateway on a PostgreSQL database of its own, reached through a proxy the test stalls:
    each statement or connection attempt then fails after the database timeout (0.5 s)."""
    with gateway_behind_a_proxy(tmp_path) as outage:
        yield outage


@pytest.fixture
def replica_outage(tmp_path: Path) -> Iterator[Outage]:
    """The same gateway as a replica fanning out through Redis, so with its status outbox's
    relay running (every 0.1 s: a third of its grace period, 0.3 s here)."""
    with gateway_behind_a_proxy(
        tmp_path,
        redis_url=REDIS_URL,
        redis_channel_prefix=f"pgw-outage-logs-{unique_suffix()}:",
        status_outbox_grace_seconds=0.3,
    ) as outage:
        yield outage


@contextmanager
def gateway_behind_a_proxy(tmp_path: Path, **settings: Any) -> Iterator[Outage]:
    with (
        fresh_database() as database_url,
        through_stalling_proxy(database_url) as (proxy, proxied_url),
        running_gateway(
            tmp_path,
            providers={},
            database_url=proxied_url,
            orgs=(ORG,),
            refresh_interval_seconds=0,
            database_timeout_seconds=0.5,
            **settings,
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http,
    ):
        yield Outage(gateway, proxy, http)


def tracebacks(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith(logger) and r.exc_info is not None and r.exc_info[0] is not None
    ]


def test_webhooks_refused_for_a_database_outage_log_no_traceback_each(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="payout_gateway")
    outage.proxy.stall()
    # Forged deliveries, as anyone may post them: each needs the database to find whose
    # secret would verify it.
    answers = [
        outage.http.post(
            "/webhooks/commet",
            content=commet_body("payout.paid", payout_id=f"po_outage{n}"),
            headers={"Content-Type": "application/json", "X-Commet-Signature": "0" * 64},
        )
        for n in range(3)
    ]
    # Retryable, as documented: the provider delivers again later.
    assert [a.status_code for a in answers] == [503] * 3
    assert {a.headers.get("retry-after") for a in answers} == {"5"}
    # The store says once per request that the database failed (the cause's type, with the
    # request's id); a traceback of the driver's for each delivery says nothing more.
    assert tracebacks(caplog, "payout_gateway.webhooks") == []
    failed = [r for r in caplog.records if r.getMessage().startswith("the database failed")]
    assert len(failed) >= 3


def test_readiness_failing_through_an_outage_is_logged_once_and_its_end_once(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="payout_gateway")
    assert outage.http.get("/readyz").status_code == 200
    outage.proxy.stall()
    # A load balancer's probes, every few seconds through the outage.
    assert [outage.http.get("/readyz").status_code for _ in range(4)] == [503] * 4
    outage.proxy.resume()
    deadline = time.monotonic() + 15
    while outage.http.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "not ready again after the database came back"
        time.sleep(0.1)
    assert tracebacks(caplog, "payout_gateway") == []
    readiness = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "payout_gateway" and "ready" in r.getMessage()
    ]
    assert readiness == [
        ("WARNING", "not ready: the database failed (TimeoutError)"),
        ("INFO", "ready again"),
    ]


def test_the_outbox_relay_logs_a_database_outage_once_not_each_cycle(
    replica_outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="payout_gateway")
    # The relay runs every 0.1 s; a cycle through the stalled database takes a second or so
    # (its lock session's check, then a new connection, each timing out).
    time.sleep(0.5)
    replica_outage.proxy.stall()
    time.sleep(4)
    replica_outage.proxy.resume()
    assert tracebacks(caplog, "payout_gateway.events") == []
    told = [
        r.getMessage()
        for r in caplog.records
        if r.name == "payout_gateway.events" and r.levelno >= logging.WARNING
    ]
    assert told == ["the status outbox could not be read (database unavailable)"]
