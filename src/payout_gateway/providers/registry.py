"""Which adapter serves which provider: a third provider is one package plus one entry here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx

from payout_gateway.domain.enums import Provider
from payout_gateway.ports import PayoutProvider
from payout_gateway.providers.transport import HttpPolicy


@dataclass(frozen=True, slots=True)
class ProviderEntry:
    provider: Provider
    # Path of the API root below the provider's host (Commet's API lives under /api/v1).
    api_root: str
    build: Callable[[str, HttpPolicy, httpx.AsyncBaseTransport | None], PayoutProvider]


def _commet(
    base_url: str, policy: HttpPolicy, transport: httpx.AsyncBaseTransport | None
) -> PayoutProvider:
    from payout_gateway.providers.commet import CommetAdapter

    return CommetAdapter(base_url=base_url, policy=policy, transport=transport)


def _paygentic(
    base_url: str, policy: HttpPolicy, transport: httpx.AsyncBaseTransport | None
) -> PayoutProvider:
    from payout_gateway.providers.paygentic import PaygenticAdapter

    return PaygenticAdapter(base_url=base_url, policy=policy, transport=transport)


REGISTRY: dict[Provider, ProviderEntry] = {
    Provider.COMMET: ProviderEntry(Provider.COMMET, "/api/v1", _commet),
    Provider.PAYGENTIC: ProviderEntry(Provider.PAYGENTIC, "", _paygentic),
}
