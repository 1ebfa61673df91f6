"""Organizations and their gateway API keys: create, issue (shown once), revoke, authenticate."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cachetools import TTLCache
from pydantic import SecretStr

from payout_gateway.domain.enums import HolderType, Provider
from payout_gateway.domain.errors import InputValidationError, NotFoundError
from payout_gateway.domain.models import (
    ApiKey,
    Organization,
    OrganizationProfile,
    ProviderCredentials,
    validated,
)
from payout_gateway.service import Clock, new_id, utcnow
from payout_gateway.store import Store

API_KEY_PREFIX = "pgw_"


@dataclass(frozen=True, slots=True)
class DemoOrganization:
    """A sandbox-mode organization with a fixed, documented key."""

    name: str
    api_key: str
    provider: Provider
    credentials: ProviderCredentials
    profile: OrganizationProfile


# Commet's payout routes are live-only (a ck_sandbox_ key is refused), hence a ck_live_ key
# against the sandbox simulator.
DEMO_ORGANIZATIONS = (
    DemoOrganization(
        name="demo-commet",
        api_key="pgw_demo_commet",
        provider=Provider.COMMET,
        credentials=ProviderCredentials(api_key=SecretStr("ck_live_demo0commet0gateway")),
        profile=OrganizationProfile(country="US", currency="USD"),
    ),
    DemoOrganization(
        name="demo-paygentic",
        api_key="pgw_demo_paygentic",
        provider=Provider.PAYGENTIC,
        credentials=ProviderCredentials(
            api_key=SecretStr("pgx_demo_paygentic_token"),
            provider_organization_id="org_demogateway",
            payout_source_id="src_demogateway",
        ),
        profile=OrganizationProfile(
            country="US", currency="USD", bank_name="Demo Bank", holder_type=HolderType.COMPANY
        ),
    ),
)


class Tenancy:
    """Answers "which organization is this credential?" and manages organizations and keys."""

    def __init__(
        self,
        store: Store,
        pepper: SecretStr,
        *,
        clock: Clock = utcnow,
        cache_seconds: float = 5.0,
    ) -> None:
        self._store = store
        self._pepper = pepper.get_secret_value().encode()
        self._clock = clock
        # Key hash -> organization for a few seconds: authentication then costs no database
        # round trip per request. A revocation here clears it at once; one made elsewhere
        # (another replica, the CLI) takes effect within ``cache_seconds``.
        self._cache: TTLCache[str, Organization] | None = (
            TTLCache(maxsize=10_000, ttl=cache_seconds) if cache_seconds > 0 else None
        )

    def hash_key(self, api_key: str) -> str:
        # HMAC with a server-side pepper: a leaked database alone cannot be used to test keys.
        return hmac.new(self._pepper, api_key.encode(), hashlib.sha256).hexdigest()

    async def authenticate(self, api_key: str) -> Organization | None:
        if not api_key.startswith(API_KEY_PREFIX) or len(api_key) > 200:
            return None
        key_hash = self.hash_key(api_key)
        if self._cache is not None and (cached := self._cache.get(key_hash)) is not None:
            return cached
        async with self._store.session(write=False) as session:
            org = await session.organization_for_key_hash(key_hash)
        if org is not None and self._cache is not None:
            self._cache[key_hash] = org
        return org

    async def create_organization(
        self,
        *,
        name: str,
        provider: Provider,
        credentials: ProviderCredentials,
        profile: OrganizationProfile,
    ) -> Organization:
        if not name.strip() or len(name) > 200:
            raise InputValidationError.single(("name",), "must have 1 to 200 characters")
        org = validated(
            Organization,
            {
                "id": new_id("org"),
                "name": name.strip(),
                "provider": provider,
                "credentials": credentials,
                "profile": profile,
                "created_at": self._clock(),
            },
        )
        async with self._store.session() as session:
            if await session.organization_by_name(org.name) is not None:
                raise InputValidationError.single(("name",), "an organization has that name")
            await session.add_organization(org)
        return org

    async def issue_api_key(
        self, organization_id: str, *, label: str | None = None, key: str | None = None
    ) -> tuple[ApiKey, str]:
        """Returns the stored record and the key itself, which is never shown again."""
        plaintext = key or f"{API_KEY_PREFIX}{secrets.token_urlsafe(32)}"
        async with self._store.session() as session:
            if await session.get_organization(organization_id) is None:
                raise NotFoundError("No such organization.")
            record = await session.add_api_key(
                key_id=new_id("key"),
                organization_id=organization_id,
                key_hash=self.hash_key(plaintext),
                prefix=plaintext[:12],
                label=label,
                created_at=self._clock(),
            )
        return record, plaintext

    async def revoke_api_key(self, key_id: str) -> None:
        async with self._store.session() as session:
            if not await session.revoke_api_key(key_id, self._clock()):
                raise NotFoundError("No such active API key.")
        if self._cache is not None:
            self._cache.clear()

    async def ensure_demo_organizations(self) -> list[Organization]:
        """Create the demo organizations and their fixed keys when missing (idempotent)."""
        orgs = []
        for demo in DEMO_ORGANIZATIONS:
            async with self._store.session() as session:
                org = await session.organization_by_name(demo.name)
            if org is None:
                org = await self.create_organization(
                    name=demo.name,
                    provider=demo.provider,
                    credentials=demo.credentials,
                    profile=demo.profile,
                )
            async with self._store.session() as session:
                has_key = await session.api_key_hash_exists(self.hash_key(demo.api_key))
            if not has_key:
                await self.issue_api_key(org.id, label="demo", key=demo.api_key)
            orgs.append(org)
        return orgs
