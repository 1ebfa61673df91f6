"""PostgreSQL transactions on one connection: Core statements on it, the ORM's reads and updates
of organizations through a session joined to the same transaction, all or nothing, the
connection back in the pool after each."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from payout_gateway.store import Store
from payout_gateway.store.connection_session import ConnectionSession
from payout_gateway.store.tables import OrganizationRow
from tests.store.test_core_writes import T0, bank_account, seed
from tests.unit.test_store import org

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("store", ["postgres"], indirect=True),
]


class Boom(Exception):
    pass


def idle_connections(store: Store) -> int:
    return int(store.engine.pool.checkedin())


def checked_out(store: Store) -> int:
    return int(store.engine.pool.checkedout())


async def test_the_orm_reads_what_the_connection_wrote_in_the_same_transaction(
    store: Store,
) -> None:
    async with store.session() as session:
        assert isinstance(session._session, ConnectionSession)
        await session.add_organization(org("a"))
        # A Core INSERT, then an ORM read (session.get) and an ORM-enabled UPDATE of the row.
        found = await session.get_organization("org_a")
        assert found is not None and found.name == "a"
        assert await session.set_webhook_secret("org_a", "whsec_x") is True
        await session.add_bank_account(bank_account())
        assert await session.has_bank_accounts("org_a") is True
    async with store.session(write=False) as session:
        organization = await session.get_organization("org_a")
        assert organization is not None and organization.webhook_secret is not None
        assert await session.has_bank_accounts("org_a") is True
    assert checked_out(store) == 0


async def test_a_block_that_raises_undoes_the_connections_and_the_orms_writes(
    store: Store,
) -> None:
    await seed(store, "a")
    with pytest.raises(Boom):
        async with store.session() as session:
            await session.add_bank_account(bank_account())
            # Through the ORM session joined to the transaction.
            await session._session.execute(
                update(OrganizationRow).where(OrganizationRow.id == "org_a").values(name="renamed")
            )
            raise Boom
    async with store.session(write=False) as session:
        assert await session.has_bank_accounts("org_a") is False
        organization = await session.get_organization("org_a")
        assert organization is not None and organization.name == "a"
    assert checked_out(store) == 0 and idle_connections(store) >= 1


async def test_reads_of_mapped_classes_answer_with_their_objects(store: Store) -> None:
    """Statements naming a mapped class go to the ORM session: on the connection alone,
    ``scalar`` would answer a row's first column and ``scalars`` a list of ids."""
    await seed(store, "a", "b")
    async with store.session() as session:
        await session.add_api_key(
            key_id="key_1",
            organization_id="org_a",
            key_hash="hash_1",
            prefix="pgw_live_ab",
            label="ci",
            created_at=T0,
        )
    async with store.session(write=False) as session:
        by_name = await session.organization_by_name("b")
        assert by_name is not None and by_name.id == "org_b"
        assert [org.name for org in await session.list_organizations()] == ["a", "b"]
        by_key = await session.organization_for_key_hash("hash_1")
        assert by_key is not None and by_key.id == "org_a"
        assert [(key.id, key.label) for key in await session.list_api_keys("org_a")] == [
            ("key_1", "ci")
        ]
    async with store.session() as session:
        assert await session.revoke_api_key("key_1", T0) is True
    async with store.session(write=False) as session:
        assert await session.organization_for_key_hash("hash_1") is None
