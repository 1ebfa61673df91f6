"""Organizations and their credentials: API keys (issued once, revocable) and frontends' JWTs."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection
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
from payout_gateway.jwt_tokens import JwtVerifier, looks_like_jwt
from payout_gateway.service import Clock, new_id, utcnow
from payout_gateway.store import Store, StoreSession

logger = logging.getLogger("payout_gateway.tenancy")

API_KEY_PREFIX = "pgw_"
# A demo organization's key is labelled so; retired (``retire_demo_keys``) it is relabelled,
# which tells sandbox mode it may restore it: one its operator revoked stays revoked.
_DEMO_KEY = "demo"
_RETIRED_DEMO_KEY = "demo (retired while its provider was a real one)"


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
        jwt: JwtVerifier | None = None,
    ) -> None:
        self._store = store
        self._jwt = jwt
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

    async def authenticate(self, credential: str) -> Organization | None:
        """The organization of a gateway API key or, where JWTs are on, of a valid token's
        organization claim; None for anything else."""
        if credential.startswith(API_KEY_PREFIX):
            return await self._by_api_key(credential)
        if self._jwt is not None and looks_like_jwt(credential):
            organization_id = await self._jwt.organization_id(credential)
            return None if organization_id is None else await self._by_id(organization_id)
        return None

    async def aclose(self) -> None:
        if self._jwt is not None:
            await self._jwt.aclose()

    async def _by_api_key(self, api_key: str) -> Organization | None:
        if len(api_key) > 200:
            return None
        key_hash = self.hash_key(api_key)
        return await self._cached(key_hash, lambda s: s.organization_for_key_hash(key_hash))

    async def _by_id(self, organization_id: str) -> Organization | None:
        # The token was checked above, every time; only the organization is remembered.
        # "org:" cannot start a key's hash, which is hex.
        return await self._cached(
            f"org:{organization_id}", lambda s: s.get_organization(organization_id)
        )

    async def _cached(
        self, entry: str, load: Callable[[StoreSession], Awaitable[Organization | None]]
    ) -> Organization | None:
        if self._cache is not None and (cached := self._cache.get(entry)) is not None:
            return cached
        async with self._store.session(write=False) as session:
            org = await load(session)
        if org is not None and self._cache is not None:
            self._cache[entry] = org
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
        self._forget_cached()

    async def ensure_demo_organizations(
        self, providers: Collection[Provider] = frozenset(Provider)
    ) -> list[Organization]:
        """Create the demo organizations of ``providers`` and their fixed keys when missing
        (idempotent)."""
        orgs = []
        for demo in DEMO_ORGANIZATIONS:
            if demo.provider not in providers:
                continue
            async with self._store.session() as session:
                org = await session.organization_by_name(demo.name)
            if org is None:
                org = await self.create_organization(
                    name=demo.name,
                    provider=demo.provider,
                    credentials=demo.credentials,
                    profile=demo.profile,
                )
            key_hash = self.hash_key(demo.api_key)
            async with self._store.session() as session:
                has_key = await session.api_key_hash_exists(key_hash)
                if has_key:  # retired while its provider was a real one (below): back
                    await session.set_key_revoked(
                        key_hash, None, labelled=_RETIRED_DEMO_KEY, relabel=_DEMO_KEY
                    )
            if not has_key:
                await self.issue_api_key(org.id, label=_DEMO_KEY, key=demo.api_key)
            orgs.append(org)
        self._forget_cached()
        return orgs

    async def retire_demo_keys(self, keep: Collection[Provider]) -> list[str]:
        """Revoke the public key of each demo organization whose provider is not in ``keep``
        (demo organizations are for simulated providers only: an earlier sandbox run on the
        same database left one behind a key the README prints); its data stays, and sandbox
        mode restores the key. The names of the organizations whose key was revoked now."""
        retired = []
        for demo in DEMO_ORGANIZATIONS:
            if demo.provider in keep:
                continue
            async with self._store.session() as session:
                if await session.set_key_revoked(
                    self.hash_key(demo.api_key),
                    self._clock(),
                    labelled=_DEMO_KEY,
                    relabel=_RETIRED_DEMO_KEY,
                ):
                    retired.append(demo.name)
        if retired:
            self._forget_cached()
            logger.warning(
                "revoked the public API key of the demo organization(s) %s: demo organizations "
                "are for simulated providers only",
                ", ".join(retired),
            )
        return retired

    def _forget_cached(self) -> None:
        if self._cache is not None:
            self._cache.clear()
