"""Two gateway processes sharing PostgreSQL and Redis: a change made on one reaches the other's
subscribers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from gql.transport.exceptions import TransportQueryError
from redis.asyncio import Redis

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.events import ChangeSource, ObjectType, StatusChanged
from payout_gateway.events.redis_broker import stream_key
from payout_gateway.sandbox.commet import create_commet_sandbox
from payout_gateway.store import Store
from tests.realtime.support import (
    PAYOUT_ACCOUNT_CHANGES,
    Subscriber,
    commet_verifies_payout_account,
    run,
    subscribed,
    verify,
)
from tests.support.gateway import PEPPER, SeededOrg, seed_organizations
from tests.support.live_server import free_port, live_server
from tests.support.names import unique_suffix
from tests.support.postgres import fresh_database
from tests.support.stalling_proxy import stalling_proxy

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"
ORG = SeededOrg("rt2-a", Provider.COMMET, "ck_live_replicasA0001")
# Verified through the replica that is killed.
KILLED_ORG = SeededOrg("rt2-k", Provider.COMMET, "ck_live_replicasK0003")
# A move still in the status outbox this long after its commit is relayed by the leader.
OUTBOX_GRACE_SECONDS = 2.0
WEBHOOK_ORG_KEY = "ck_live_replicasW0002"
WEBHOOK_SECRET = "whsec_replicas_test_secret"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PROBE = "probe"


@dataclass(frozen=True)
class Replica:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"


@dataclass(frozen=True)
class Cluster:
    a: Replica
    b: Replica
    commet_url: str
    keys: dict[str, str]
    org_ids: dict[str, str]
    channel_prefix: str
    # How a replica of this cluster is configured (another may join with it).
    env: dict[str, str]

    async def commet_control(
        self, provider_key: str, path: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                f"{self.commet_url}/_sandbox{path}", json=body, headers={"x-api-key": provider_key}
            )
        assert response.status_code < 300, response.text
        return dict(response.json())


def _org_ids(
    database_url: str, names: list[str], webhook_secrets: dict[str, str]
) -> dict[str, str]:
    async def read() -> dict[str, str]:
        store = Store.from_url(database_url)
        try:
            async with store.session() as session:
                orgs = {name: await session.organization_by_name(name) for name in names}
                ids = {name: org.id for name, org in orgs.items() if org is not None}
                for name, secret in webhook_secrets.items():
                    await session.set_webhook_secret(ids[name], secret)
        finally:
            await store.dispose()
        return ids

    return asyncio.run(read())


def _commet_organization_id(commet_url: str, provider_key: str) -> str:
    response = httpx.get(
        f"{commet_url}/_sandbox/organization", headers={"x-api-key": provider_key}, timeout=10
    )
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["id"])  # Commet's envelope: {success, data}


@contextmanager
def replica(name: str, env: dict[str, str], workdir: Path) -> Iterator[Replica]:
    """``uvicorn --factory payout_gateway.web:create_app`` configured by environment only."""
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "payout_gateway.web:create_app", "--factory"),
                *("--host", "127.0.0.1", "--port", str(port), "--ws", "websockets-sansio"),
                *("--log-level", "warning", "--no-access-log"),
            ],
            env=env,
            cwd=workdir,  # no stray .env file is read
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Replica(name, f"http://127.0.0.1:{port}", process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def wait_ready(replicas: list[Replica]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(replicas)
    while pending:
        current = pending[0]
        if current.process.poll() is not None:
            raise RuntimeError(f"{current.name} exited:\n{current.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{current.name} not ready:\n{current.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{current.url}/readyz", timeout=1.0).status_code == 200:
                pending.pop(0)
                continue
        except httpx.TransportError:
            pass
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("replicas")
    prefix = f"pgw-test-{unique_suffix()}:status:"
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database())
        commet_url = stack.enter_context(live_server(create_commet_sandbox()))
        # Commet's webhooks name its own organization id: the gateway org must know it.
        webhook_org = SeededOrg(
            "rt2-w",
            Provider.COMMET,
            WEBHOOK_ORG_KEY,
            provider_org_id=_commet_organization_id(commet_url, WEBHOOK_ORG_KEY),
        )
        keys = seed_organizations(database_url, (ORG, webhook_org, KILLED_ORG))
        org_ids = _org_ids(
            database_url,
            [ORG.name, webhook_org.name, KILLED_ORG.name],
            {webhook_org.name: WEBHOOK_SECRET},
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_GATEWAY_")}
        env |= {
            "PAYOUT_GATEWAY_DATABASE_URL": database_url,
            "PAYOUT_GATEWAY_REDIS_URL": REDIS_URL,
            "PAYOUT_GATEWAY_REDIS_CHANNEL_PREFIX": prefix,
            "PAYOUT_GATEWAY_COMMET__BASE_URL": f"{commet_url}/api/v1",
            "PAYOUT_GATEWAY_PAYGENTIC__BASE_URL": "http://paygentic.invalid",
            "PAYOUT_GATEWAY_API_KEY_PEPPER": PEPPER.get_secret_value(),
            "PAYOUT_GATEWAY_DEMO_ORGANIZATIONS": "false",
            "PAYOUT_GATEWAY_LOG_LEVEL": "WARNING",
            "PAYOUT_GATEWAY_STATUS_OUTBOX_GRACE_SECONDS": str(OUTBOX_GRACE_SECONDS),
        }
        a = stack.enter_context(replica("replica-a", env, workdir))
        b = stack.enter_context(replica("replica-b", env, workdir))
        wait_ready([a, b])
        yield Cluster(a, b, commet_url, keys, org_ids, prefix, env)


async def wait_until_live(
    subscriber: Subscriber,
    cluster: Cluster,
    org: str,
    object_type: ObjectType,
    field: str,
    prefix: str | None = None,
) -> None:
    """Write probes straight to the Redis stream until one comes through replica A's
    subscription: from then on A reads the stream and this GraphQL subscription is in place."""
    probe = StatusChanged(
        organization_id=cluster.org_ids[org],
        object_type=object_type,
        object_id=PROBE,
        from_status=None,
        to_status="PENDING_VERIFICATION" if object_type is ObjectType.PAYOUT_ACCOUNT else "PENDING",
        provider_status=PROBE,
        source=ChangeSource.REFRESH,
        at=datetime.now(UTC),
    )
    redis = Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while asyncio.get_running_loop().time() < deadline:
            await redis.xadd(
                stream_key(prefix or cluster.channel_prefix),
                {"id": uuid.uuid4().hex, "change": probe.model_dump_json()},
            )
            try:
                event = (await subscriber.next(timeout=0.25))[field]
            except TimeoutError:
                continue
            assert event["providerStatus"] == PROBE
            return
        raise TimeoutError("replica A's subscription never came live")
    finally:
        await redis.aclose()


async def next_real_event(subscriber: Subscriber, field: str) -> dict[str, Any]:
    while True:
        event: dict[str, Any] = (await subscriber.next())[field]
        if event["providerStatus"] != PROBE:  # probes still in flight are skipped
            return event


async def test_a_change_made_on_replica_b_reaches_a_subscriber_on_replica_a(
    cluster: Cluster,
) -> None:
    key = cluster.keys[ORG.name]
    created = await verify(cluster.b.graphql_url, key)
    assert created["payoutAccount"]["status"] == "PENDING_VERIFICATION"

    init = {"Authorization": f"Bearer {key}"}
    async with subscribed(cluster.a.graphql_url, PAYOUT_ACCOUNT_CHANGES, init_payload=init) as on_a:
        await wait_until_live(
            on_a, cluster, ORG.name, ObjectType.PAYOUT_ACCOUNT, "payoutAccountStatusChanged"
        )

        # The provider approves; replica B learns it from Commet's answer and publishes.
        await commet_verifies_payout_account(cluster.commet_url, ORG.provider_api_key)
        again = await verify(cluster.b.graphql_url, key)
        assert again["payoutAccount"]["status"] == "VERIFIED"

        event = await next_real_event(on_a, "payoutAccountStatusChanged")
        assert event["fromStatus"] == "PENDING_VERIFICATION"
        assert event["toStatus"] == "VERIFIED"
        assert event["source"] == "PROVIDER_RESPONSE"
        # Replica A read the object from the shared database as B committed it.
        assert event["payoutAccount"]["status"] == "VERIFIED"
        assert event["payoutAccount"]["transfersEnabled"] is True
        assert (
            event["payoutAccount"]["providerAccountId"]
            == (created["payoutAccount"]["providerAccountId"])
        )


PAYOUT_CHANGES = """
subscription { payoutStatusChanged { payoutId fromStatus toStatus providerStatus source at } }
"""
REQUEST_PAYOUT = """
mutation Pay($input: RequestPayoutInput!) {
  requestPayout(input: $input) {
    __typename
    ... on RequestPayoutSuccess { payout { id providerPayoutId status } }
    ... on UserError { message code }
  }
}
"""


async def test_a_webhook_delivered_to_replica_b_reaches_a_subscriber_on_replica_a(
    cluster: Cluster,
) -> None:
    key = cluster.keys["rt2-w"]
    await verify(cluster.b.graphql_url, key)
    await commet_verifies_payout_account(cluster.commet_url, WEBHOOK_ORG_KEY)
    assert (await verify(cluster.b.graphql_url, key))["payoutAccount"]["status"] == "VERIFIED"
    await cluster.commet_control(WEBHOOK_ORG_KEY, "/balance", {"availableAmount": 100_000})
    # Commet delivers this organization's events, signed, to replica B only.
    await cluster.commet_control(
        WEBHOOK_ORG_KEY,
        "/webhooks",
        {"url": f"{cluster.b.url}/webhooks/commet", "secret": WEBHOOK_SECRET},
    )
    requested = (
        await run(cluster.b.graphql_url, key, REQUEST_PAYOUT, {"input": {"amount": 5000}})
    )["requestPayout"]
    assert requested["__typename"] == "RequestPayoutSuccess", requested
    payout = requested["payout"]
    assert payout["status"] == "PENDING"

    init = {"Authorization": f"Bearer {key}"}
    async with subscribed(cluster.a.graphql_url, PAYOUT_CHANGES, init_payload=init) as on_a:
        await wait_until_live(on_a, cluster, "rt2-w", ObjectType.PAYOUT, "payoutStatusChanged")

        # The processor pays out; Commet's payout.paid webhook goes to B, B's pipeline applies
        # it and publishes through Redis.
        await cluster.commet_control(
            WEBHOOK_ORG_KEY, f"/payouts/{payout['providerPayoutId']}/status", {"status": "paid"}
        )
        event = await next_real_event(on_a, "payoutStatusChanged")
        assert event["payoutId"] == payout["id"]
        assert event["fromStatus"] == "PENDING"
        assert event["toStatus"] == "PAID"
        assert event["providerStatus"] == "paid"
        assert event["source"] == "WEBHOOK"


async def test_a_change_committed_by_a_replica_killed_before_redis_took_it_is_still_shown(
    cluster: Cluster, tmp_path: Path
) -> None:
    key = cluster.keys[KILLED_ORG.name]
    with stalling_proxy(("127.0.0.1", 6379)) as to_redis:
        env = cluster.env | {"PAYOUT_GATEWAY_REDIS_URL": f"redis://127.0.0.1:{to_redis.port}/0"}
        with replica("replica-c", env, tmp_path) as c:
            wait_ready([c])
            created = await verify(c.graphql_url, key)
            assert created["payoutAccount"]["status"] == "PENDING_VERIFICATION"

            init = {"Authorization": f"Bearer {key}"}
            async with subscribed(
                cluster.a.graphql_url, PAYOUT_ACCOUNT_CHANGES, init_payload=init
            ) as on_a:
                await wait_until_live(
                    on_a,
                    cluster,
                    KILLED_ORG.name,
                    ObjectType.PAYOUT_ACCOUNT,
                    "payoutAccountStatusChanged",
                )
                # C's way to Redis goes silent; the provider approves, C learns it from
                # Commet's answer and commits it, and is killed while the change waits for
                # Redis in its memory.
                to_redis.stall()
                await commet_verifies_payout_account(
                    cluster.commet_url, KILLED_ORG.provider_api_key
                )
                again = await verify(c.graphql_url, key)
                assert again["payoutAccount"]["status"] == "VERIFIED"
                c.process.kill()
                c.process.wait(timeout=STOP_TIMEOUT)

                # The relay's leader (A or B) publishes it from the outbox after its grace.
                event = await next_real_event(on_a, "payoutAccountStatusChanged")
                assert event["fromStatus"] == "PENDING_VERIFICATION"
                assert event["toStatus"] == "VERIFIED"
                assert event["payoutAccount"]["status"] == "VERIFIED"


async def test_a_subscriber_on_a_replica_frozen_while_the_stream_moved_on_past_it_is_told_so(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The replica stays connected to Redis (stopped, not cut off); meanwhile the others
    publish more than the stream keeps. Once it runs again, its subscriber is shown every
    change in order, or what it was shown ends with SUBSCRIPTION_OVERFLOW: never a gap."""
    prefix = f"pgw-test-{unique_suffix()}:status:"
    kept, published = 100, 300
    env = cluster.env | {
        "PAYOUT_GATEWAY_REDIS_CHANNEL_PREFIX": prefix,
        "PAYOUT_GATEWAY_REDIS_STREAM_MAX_LENGTH": str(kept),
    }
    init = {"Authorization": f"Bearer {cluster.keys[ORG.name]}"}
    with replica("replica-frozen", env, tmp_path) as frozen:
        wait_ready([frozen])
        async with subscribed(frozen.graphql_url, PAYOUT_CHANGES, init_payload=init) as on_it:
            await wait_until_live(
                on_it, cluster, ORG.name, ObjectType.PAYOUT, "payoutStatusChanged", prefix
            )
            redis = Redis.from_url(REDIS_URL, socket_timeout=5)
            frozen.process.send_signal(signal.SIGSTOP)
            try:
                # Other replicas' publications, trimmed as they trim.
                async with redis.pipeline(transaction=False) as pipe:
                    for n in range(published):
                        change = StatusChanged(
                            organization_id=cluster.org_ids[ORG.name],
                            object_type=ObjectType.PAYOUT,
                            object_id=f"po_frozen_{n}",
                            from_status="PENDING",
                            to_status="PAID",
                            provider_status=f"paid-{n}",
                            source=ChangeSource.WEBHOOK,
                            at=datetime.now(UTC),
                        )
                        pipe.xadd(
                            stream_key(prefix),
                            {"id": uuid.uuid4().hex, "change": change.model_dump_json()},
                            maxlen=kept,
                            approximate=True,
                        )
                    await pipe.execute()
            finally:
                frozen.process.send_signal(signal.SIGCONT)
                await redis.aclose()
            shown: list[str] = []
            ended: TransportQueryError | None = None
            try:
                while len(shown) < published:
                    shown.append(
                        (await next_real_event(on_it, "payoutStatusChanged"))["providerStatus"]
                    )
            except TransportQueryError as error:
                ended = error
            except TimeoutError:
                pass
            assert ended is not None, f"shown {len(shown)} of {published}, then nothing"
            assert shown == [f"paid-{n}" for n in range(len(shown))]  # no gap before the end
            assert ended.errors
            assert ended.errors[0]["extensions"] == {
                "code": "SUBSCRIPTION_OVERFLOW",
                "retryable": True,
            }
