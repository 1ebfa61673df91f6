"""Frontends' credentials: JWTs from the customer's identity provider, naming the organization.

A browser app cannot hold a gateway API key (anyone could read it from the page). Instead the
customer's own backend or identity provider signs a short-lived JWT whose claim (``org_id`` by
default) is the gateway organization's id, and the frontend sends it as ``Authorization:
Bearer <jwt>``, or in ``connection_init`` for subscriptions. The gateway checks the signature,
``exp`` (required), ``nbf``, the audience (required) and, where configured, the issuer:

- a shared secret (HS256), for a backend that mints the tokens itself; or
- the identity provider's JWKS URL (RS256, ES256, PS256, EdDSA; HTTPS in production), cached, and
  fetched again when a token names a key the cache does not have (a rotation), at most once
  per ``refetch_interval`` so that tokens naming made-up keys cannot make the gateway hammer
  the provider.

Only the algorithms of the configured key are accepted: never ``none``, and never an HMAC
with a public key as its secret (the classic algorithm confusion).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError, PyJWTError
from jwt.types import Options

logger = logging.getLogger("payout_gateway.auth")

# Clock skew tolerated between the token's issuer and this gateway.
LEEWAY_SECONDS = 30
# Tokens are a few hundred bytes; one far larger is refused before any parsing.
MAX_TOKEN_LENGTH = 8192
_ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}


def looks_like_jwt(credential: str) -> bool:
    """Three base64url segments: a JWS in compact form (an API key never has dots)."""
    return credential.count(".") == 2 and len(credential) <= MAX_TOKEN_LENGTH


class JwksKeys:
    """The signing keys at a JWKS URL, by key id, fetched when first needed and again when a
    token names an unknown key or ``max_age`` has passed."""

    def __init__(
        self,
        url: str,
        *,
        client: httpx.AsyncClient | None = None,
        max_age: float = 600.0,
        refetch_interval: float = 30.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._owns_client = client is None
        self._max_age = max_age
        self._refetch_interval = refetch_interval
        self._clock = clock
        self._keys: dict[str | None, PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, key_id: str | None) -> PyJWK | None:
        """The key a token's header names (``kid``; a set of one key serves a token without
        one), fetching the set first if needed; None if there is no such key."""
        if self._stale() or self._find(key_id) is None:
            async with self._lock:  # callers arriving together share one fetch
                if self._stale() or (self._find(key_id) is None and self._may_refetch()):
                    await self._fetch()
        return self._find(key_id)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def _find(self, key_id: str | None) -> PyJWK | None:
        if key_id is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(key_id)

    def _stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > self._max_age

    def _may_refetch(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at > self._refetch_interval

    async def _fetch(self) -> None:
        # The time is set even when the fetch fails: an identity provider that is down is
        # asked again after ``refetch_interval``, not on every request meanwhile.
        self._fetched_at = self._clock()
        try:
            response = await self._client.get(self._url, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, PyJWKError, PyJWKSetError) as error:
            # Keys fetched before stay in use: a failed refresh does not log everyone out.
            logger.warning("could not fetch the JWT signing keys (%s)", type(error).__name__)
            return
        usable = {}
        for key in keys:
            if key.algorithm_name in _ASYMMETRIC and key.public_key_use in (None, "sig"):
                usable[key.key_id] = key
        self._keys = usable


class JwtVerifier:
    """Checks a token and returns the organization id its claim names, or None."""

    def __init__(
        self,
        *,
        audience: str,
        issuer: str | None = None,
        secret: str | None = None,
        jwks: JwksKeys | None = None,
        organization_claim: str = "org_id",
    ) -> None:
        if (secret is None) == (jwks is None):
            raise ValueError("a JWT verifier needs either a shared secret or a JWKS URL")
        self._audience = audience
        self._issuer = issuer
        self._secret = secret
        self._jwks = jwks
        self._claim = organization_claim
        required = ["exp", "aud"] + (["iss"] if issuer is not None else [])
        self._options: Options = {"require": required}

    async def organization_id(self, token: str) -> str | None:
        if not looks_like_jwt(token):
            return None
        try:
            header = jwt.get_unverified_header(token)
            key, algorithm = await self._key_for(header)
            if key is None:
                return None
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options=self._options,
            )
        except PyJWTError:
            # Expired, not yet valid, another audience or issuer, a bad signature, a broken
            # token: all answer as an unknown credential does. The token is never logged.
            return None
        organization_id = claims.get(self._claim)
        if not isinstance(organization_id, str) or not organization_id:
            return None
        return organization_id

    async def aclose(self) -> None:
        if self._jwks is not None:
            await self._jwks.aclose()

    async def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if self._secret is not None:
            return (self._secret, "HS256") if algorithm == "HS256" else (None, "")
        assert self._jwks is not None
        key_id = header.get("kid")
        if key_id is not None and not isinstance(key_id, str):
            return None, ""
        key = await self._jwks.key(key_id)
        # The key's own algorithm, whatever the header claims: a token saying HS256 over a
        # public key is refused here, not verified with the key's bytes as a secret.
        if key is None or algorithm != key.algorithm_name:
            return None, ""
        return key.key, key.algorithm_name
