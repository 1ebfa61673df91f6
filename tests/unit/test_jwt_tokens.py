"""Frontends' JWTs: what the verifier accepts and refuses, with a shared secret and with an
identity provider's JWKS served over a real socket."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from payout_gateway.jwt_tokens import JwksKeys, JwtVerifier
from payout_gateway.settings import JwtSettings
from tests.support.live_server import live_server

SECRET = "s" * 64
AUDIENCE = "payout-gateway"
ISSUER = "https://id.example.com/"
ORG = "org_frontend"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"aud": AUDIENCE, "iss": ISSUER, "exp": now + 300, "iat": now, "org_id": ORG}
    base.update(changes)
    return {key: value for key, value in base.items() if value is not None}


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


def with_secret(**options: Any) -> JwtVerifier:
    return JwtVerifier(audience=AUDIENCE, secret=SECRET, **options)


async def test_a_valid_token_names_its_organization() -> None:
    assert await with_secret().organization_id(hs256()) == ORG
    assert await with_secret(issuer=ISSUER).organization_id(hs256()) == ORG
    custom = with_secret(organization_claim="https://example.com/org")
    assert await custom.organization_id(hs256(**{"https://example.com/org": ORG})) == ORG


def unsigned(payload: dict[str, Any]) -> str:
    def segment(part: dict[str, Any]) -> str:
        return jwt.utils.base64url_encode(json.dumps(part).encode()).decode()

    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(payload)}."


@pytest.mark.parametrize(
    ("case", "token"),
    [
        ("expired beyond the leeway", lambda: hs256(exp=int(time.time()) - 120)),
        ("not valid yet", lambda: hs256(nbf=int(time.time()) + 120)),
        ("no exp", lambda: hs256(exp=None)),
        ("another audience", lambda: hs256(aud="another-service")),
        ("no audience", lambda: hs256(aud=None)),
        ("another secret", lambda: jwt.encode(claims(), "x" * 64, algorithm="HS256")),
        ("HS512, not the configured HS256", lambda: jwt.encode(claims(), SECRET, "HS512")),
        ("unsigned (alg none)", lambda: unsigned(claims())),
        ("no organization claim", lambda: hs256(org_id=None)),
        ("an organization claim that is not a string", lambda: hs256(org_id=42)),
        ("an empty organization claim", lambda: hs256(org_id="")),
        ("a tampered payload", lambda: tampered(hs256())),
        ("not a JWT", lambda: "a.b.c"),
        ("far too long", lambda: hs256(pad="x" * 9000)),
    ],
)
async def test_a_token_is_refused(case: str, token: Any) -> None:
    assert await with_secret().organization_id(token()) is None, case


async def test_the_issuer_is_checked_when_configured() -> None:
    verifier = with_secret(issuer=ISSUER)
    assert await verifier.organization_id(hs256(iss="https://other.example.com/")) is None
    assert await verifier.organization_id(hs256(iss=None)) is None


def tampered(token: str) -> str:
    header, payload, signature = token.split(".")
    data = json.loads(jwt.utils.base64url_decode(payload))
    data["org_id"] = "org_someone_else"
    forged = jwt.utils.base64url_encode(json.dumps(data).encode()).decode()
    return f"{header}.{forged}.{signature}"


# JWKS ----------------------------------------------------------------------------------------


class IdentityProvider:
    """A JWKS endpoint over a real socket whose keys a test can rotate or break."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.keys: list[dict[str, Any]] = [
            self.jwk(self.rsa, "rsa-1"),
            self.jwk(self.ec, "ec-1"),
        ]
        self.status = 200
        self.requests = 0

    @staticmethod
    def jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
        public = key.public_key()
        algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
        return {**json.loads(algorithm.to_jwk(public)), "kid": kid, **extra}

    def sign(self, key: Any, kid: str | None, algorithm: str, **changes: Any) -> str:
        headers = {"kid": kid} if kid is not None else {}
        return jwt.encode(claims(**changes), key, algorithm=algorithm, headers=headers)

    def app(self) -> Starlette:
        async def jwks(_: Request) -> Response:
            self.requests += 1
            if self.status != 200:
                return Response("unavailable", status_code=self.status)
            return JSONResponse({"keys": self.keys})

        return Starlette(routes=[Route("/.well-known/jwks.json", jwks)])


@pytest.fixture
def idp() -> Iterator[tuple[IdentityProvider, str]]:
    provider = IdentityProvider()
    with live_server(provider.app()) as url:
        yield provider, f"{url}/.well-known/jwks.json"


@asynccontextmanager
async def jwks_verifier(url: str, **options: Any) -> AsyncIterator[JwtVerifier]:
    """A verifier on the keys at ``url`` (``options``: JwksKeys'), closed after use."""
    verifier = JwtVerifier(audience=AUDIENCE, issuer=ISSUER, jwks=JwksKeys(url, **options))
    try:
        yield verifier
    finally:
        await verifier.aclose()


async def test_rs256_and_es256_tokens_from_the_identity_provider_are_accepted(
    idp: tuple[IdentityProvider, str],
) -> None:
    provider, url = idp
    async with jwks_verifier(url) as verifier:
        assert await verifier.organization_id(provider.sign(provider.rsa, "rsa-1", "RS256")) == ORG
        assert await verifier.organization_id(provider.sign(provider.ec, "ec-1", "ES256")) == ORG
        assert provider.requests == 1  # the keys are cached


async def test_an_hmac_token_keyed_with_the_public_key_is_refused(
    idp: tuple[IdentityProvider, str],
) -> None:
    # The classic confusion: the public key (which anyone can fetch) used as an HMAC secret.
    provider, url = idp
    public_pem = provider.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode()
    payload = json.dumps(claims()).encode()
    signing_input = jwt.utils.base64url_encode(header) + b"." + jwt.utils.base64url_encode(payload)
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        signing_input, public_pem
    )
    forged = (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()
    async with jwks_verifier(url) as verifier:
        assert await verifier.organization_id(forged) is None
        # And with the right algorithm but the wrong issuer or none at all:
        rsa_token = provider.sign(provider.rsa, "rsa-1", "RS256", iss="https://evil.example/")
        assert await verifier.organization_id(rsa_token) is None
        no_issuer = provider.sign(provider.rsa, "rsa-1", "RS256", iss=None)
        assert await verifier.organization_id(no_issuer) is None


async def test_a_rotated_key_is_fetched_when_a_token_names_it(
    idp: tuple[IdentityProvider, str],
) -> None:
    provider, url = idp
    async with jwks_verifier(url, refetch_interval=0.0) as verifier:
        assert await verifier.organization_id(provider.sign(provider.rsa, "rsa-1", "RS256")) == ORG
        rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        provider.keys = [provider.jwk(rotated, "rsa-2")]
        token = provider.sign(rotated, "rsa-2", "RS256")
        assert await verifier.organization_id(token) == ORG
        assert provider.requests == 2


async def test_tokens_naming_unknown_keys_cannot_make_it_fetch_again_and_again(
    idp: tuple[IdentityProvider, str],
) -> None:
    provider, url = idp
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with jwks_verifier(url, refetch_interval=60.0) as verifier:
        for n in range(20):
            token = provider.sign(stranger, f"made-up-{n}", "RS256")
            assert await verifier.organization_id(token) is None
        assert provider.requests == 1


async def test_keys_not_for_signing_and_hmac_keys_in_the_set_are_not_used(
    idp: tuple[IdentityProvider, str],
) -> None:
    provider, url = idp
    provider.keys = [
        provider.jwk(provider.rsa, "rsa-enc", use="enc"),
        {"kty": "oct", "kid": "shared", "k": jwt.utils.base64url_encode(b"k" * 40).decode()},
    ]
    async with jwks_verifier(url) as verifier:
        assert (
            await verifier.organization_id(provider.sign(provider.rsa, "rsa-enc", "RS256")) is None
        )
        hmac_token = jwt.encode(claims(), b"k" * 40, algorithm="HS256", headers={"kid": "shared"})
        assert await verifier.organization_id(hmac_token) is None


async def test_an_identity_provider_that_fails_leaves_the_keys_it_gave_before(
    idp: tuple[IdentityProvider, str],
) -> None:
    provider, url = idp
    clock = [0.0]
    token = provider.sign(provider.rsa, "rsa-1", "RS256")
    async with jwks_verifier(
        url, max_age=10.0, refetch_interval=5.0, clock=lambda: clock[0]
    ) as verifier:
        assert await verifier.organization_id(token) == ORG
        provider.status = 503
        clock[0] = 11.0  # the keys are due for a refresh, which fails
        assert await verifier.organization_id(token) == ORG
        assert provider.requests == 2
        # A token without a key id is served by a set of exactly one key only.
        assert await verifier.organization_id(provider.sign(provider.rsa, None, "RS256")) is None


async def test_an_unreachable_identity_provider_refuses_tokens_without_raising() -> None:
    provider = IdentityProvider()
    async with jwks_verifier("http://127.0.0.1:1/jwks.json") as verifier:
        assert await verifier.organization_id(provider.sign(provider.rsa, "rsa-1", "RS256")) is None


# settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {
                "secret": SECRET,
                "jwks_url": "https://id.example.com/jwks",
                "audience": "a",
                "issuer": ISSUER,
            },
            "not both",
        ),
        ({"secret": SECRET}, "AUDIENCE is required"),
        ({"jwks_url": "https://id.example.com/jwks", "audience": "a"}, "ISSUER is required"),
        ({"secret": "short", "audience": "a"}, "at least 32 characters"),
    ],
)
def test_incomplete_jwt_settings_are_refused_at_start(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JwtSettings(**values)


def test_jwts_are_off_unless_configured() -> None:
    assert not JwtSettings().enabled
    assert JwtSettings(secret=SECRET, audience="a").enabled
