"""Shared HTTP plumbing for adapters: client construction, retries, capped reads, and the one
seam where httpx exceptions become domain errors.

Nothing above ``providers/`` ever sees an ``httpx`` exception: :func:`map_transport_error` is the
only place they are translated, and a test walks every httpx exception class through it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from http.cookiejar import CookieJar
from typing import Any

import httpx

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import (
    ProviderBadResponseError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from payout_gateway.request_log import report_provider_call

logger = logging.getLogger("payout_gateway.providers")

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# Paths whose merged URL one ProviderHttp keeps; ids in paths make the set of paths open-ended.
URL_CACHE_SIZE = 512


class HttpBackend(StrEnum):
    """What carries httpx's requests over the network."""

    # httpx over aiohttp: a fraction of httpcore's CPU per call (bench/transport.py).
    AIOHTTP = "aiohttp"
    HTTPCORE = "httpcore"  # httpx's own transport


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """Timeouts, pool limits, read cap and retry budget of one provider client."""

    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    write_timeout: float = 10.0
    pool_timeout: float = 3.0
    # Whole call, retries and back-off included: callers get an answer within this.
    total_deadline: float = 25.0
    max_connections: int = 100
    max_keepalive_connections: int = 50
    max_response_bytes: int = 1024 * 1024
    max_retries: int = 2
    backoff_base: float = 0.25
    backoff_cap: float = 4.0
    retry_after_cap: float = 30.0
    backend: HttpBackend = HttpBackend.AIOHTTP


def build_client(
    base_url: str,
    policy: HttpPolicy,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """One client per provider: explicit timeouts and limits, redirects never followed (a
    redirect to a metadata address must not be fetched with our credentials). ``transport``
    (in-process sandbox, tests) replaces the policy's backend."""
    limits = httpx.Limits(
        max_connections=policy.max_connections,
        max_keepalive_connections=policy.max_keepalive_connections,
    )
    if transport is None and policy.backend is HttpBackend.AIOHTTP:
        # Imported here: aiohttp takes ~0.1 s to import, which CLI commands never need.
        from payout_gateway.providers.aiohttp_transport import AiohttpProviderTransport

        transport = AiohttpProviderTransport(limits)
    return ProviderClient(
        base_url=base_url.rstrip("/"),
        headers=dict(headers or {}),
        timeout=httpx.Timeout(
            connect=policy.connect_timeout,
            read=policy.read_timeout,
            write=policy.write_timeout,
            pool=policy.pool_timeout,
        ),
        limits=limits,
        follow_redirects=False,
        transport=transport,
    )


class NoCookies(httpx.Cookies):
    """A cookie jar that stays empty. The providers authenticate every request by its key, and
    one client serves every organization of a provider: a cookie set by an answer to one
    organization's call would ride along on every other organization's later calls. Keeping
    none also spares httpx's jar work on every answer (a urllib request and an email message
    built from its headers, about an eighth of a call's client CPU in bench/transport.py)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> None:
        raise TypeError("provider clients keep no cookies")


class ProviderClient(httpx.AsyncClient):
    """httpx's client with :class:`NoCookies` as its cookies. httpx reaches a client's cookies
    only through this property, to add them to requests and to store what answers set (a test
    in tests/unit/test_transport.py would notice if that stopped)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._no_cookies = NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(
        self, _: httpx.Cookies | CookieJar | dict[str, str] | list[tuple[str, str]]
    ) -> None:
        raise TypeError("provider clients keep no cookies")


class FailureKind(Enum):
    """Where a request failed, which decides whether the provider may have applied it."""

    NOT_SENT = "not_sent"  # connect/pool failure: the provider never saw it
    SENT_NO_ANSWER = "sent_no_answer"  # sent, then timeout/reset: outcome unknown


def map_transport_error(exc: httpx.HTTPError, provider: Provider) -> ProviderError:
    """The one seam from httpx exceptions to the domain error tree."""
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ProviderTimeoutError(
            f"{provider.value} did not accept a connection in time ({name}).",
            provider=provider,
            outcome_unknown=False,
        )
    if isinstance(exc, httpx.TimeoutException):  # read or write timeout: the request was sent
        return ProviderTimeoutError(
            f"{provider.value} did not answer in time ({name}).",
            provider=provider,
            outcome_unknown=True,
        )
    if isinstance(exc, httpx.ConnectError):
        return ProviderUnavailableError(
            f"{provider.value} could not be reached ({name}).",
            provider=provider,
            outcome_unknown=False,
        )
    # Any network failure after connecting (read, write, close) may follow a sent request.
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return ProviderUnavailableError(
            f"The connection to {provider.value} failed mid-request ({name}).",
            provider=provider,
            outcome_unknown=True,
        )
    if isinstance(exc, httpx.DecodingError | httpx.TooManyRedirects | httpx.HTTPStatusError):
        return ProviderBadResponseError(
            f"{provider.value} sent a response the gateway cannot read ({name}).",
            provider=provider,
        )
    # Proxy, local protocol, unsupported scheme: our configuration, detected before anything
    # reached the provider. An unclassified error keeps the conservative answer of failure_kind.
    return ProviderUnavailableError(
        f"The request to {provider.value} could not be made ({name}).",
        provider=provider,
        outcome_unknown=failure_kind(exc) is FailureKind.SENT_NO_ANSWER,
    )


def failure_kind(exc: httpx.HTTPError) -> FailureKind:
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout | httpx.ConnectError):
        return FailureKind.NOT_SENT
    if isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
    ):
        return FailureKind.NOT_SENT
    return FailureKind.SENT_NO_ANSWER


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form only; dates are ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def retry_delay(
    *,
    attempt: int,
    policy: HttpPolicy,
    replay_safe: bool,
    status: int | None = None,
    failure: FailureKind | None = None,
    retry_after: float | None = None,
    jitter: float = 0.5,
) -> float | None:
    """Seconds to wait before retry number ``attempt + 1``, or None to stop.

    ``replay_safe``: sending the same request twice cannot apply it twice (a read, or a write the
    provider dedupes by idempotency key). A request that never left is always safe to resend; a
    429 was not processed, so it is safe too, but only when the provider says when to come back.
    """
    if attempt >= policy.max_retries:
        return None
    if failure is FailureKind.NOT_SENT:
        allowed = True
    elif failure is FailureKind.SENT_NO_ANSWER:
        allowed = replay_safe
    elif status == 429:
        if retry_after is None or retry_after > policy.retry_after_cap:
            return None
        return retry_after
    elif status in RETRYABLE_STATUSES:
        allowed = replay_safe
    else:
        allowed = False
    if not allowed:
        return None
    if retry_after is not None:
        return retry_after if retry_after <= policy.retry_after_cap else None
    backoff: float = min(policy.backoff_cap, policy.backoff_base * float(2**attempt))
    # "Equal jitter": half fixed, half random, so concurrent clients spread out.
    return backoff / 2 + backoff / 2 * jitter


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A provider's answer, fully read (up to the cap) and detached from httpx."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes
    request_id: str | None
    attempts: int = 1


CLOSED_STREAM = httpx.ByteStream(b"")


@dataclass
class ProviderHttp:
    """Sends one logical request to a provider with the retry policy and deadline applied."""

    provider: Provider
    client: httpx.AsyncClient
    policy: HttpPolicy = field(default_factory=HttpPolicy)
    request_id_header: str = "x-request-id"
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    jitter: Callable[[], float] = random.random
    _urls: OrderedDict[str, httpx.URL] = field(default_factory=OrderedDict, init=False, repr=False)
    _urls_base: httpx.URL | None = field(default=None, init=False, repr=False)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        replay_safe: bool,
    ) -> RawResponse:
        """Send with retries; raise a domain error when no usable answer arrived in time."""
        sent = False
        # An attempt cut by the deadline may already be at the provider: its outcome is unknown.
        in_flight = False
        try:
            async with asyncio.timeout(self.policy.total_deadline):
                attempt = 0
                while True:
                    in_flight = True
                    try:
                        response = await self._send_once(method, path, headers, json, params)
                    except httpx.HTTPError as exc:
                        in_flight = False
                        kind = failure_kind(exc)
                        sent = sent or kind is FailureKind.SENT_NO_ANSWER
                        delay = retry_delay(
                            attempt=attempt,
                            policy=self.policy,
                            replay_safe=replay_safe,
                            failure=kind,
                            jitter=self.jitter(),
                        )
                        if delay is None:
                            error = map_transport_error(exc, self.provider)
                            if sent and isinstance(error, ProviderUnavailableError):
                                error.outcome_unknown = True
                            raise error from exc
                    else:
                        in_flight = False
                        sent = True
                        delay = None
                        if response.status_code in RETRYABLE_STATUSES:
                            delay = retry_delay(
                                attempt=attempt,
                                policy=self.policy,
                                replay_safe=replay_safe,
                                status=response.status_code,
                                retry_after=parse_retry_after(response.headers.get("retry-after")),
                                jitter=self.jitter(),
                            )
                        if delay is None:
                            return RawResponse(
                                status_code=response.status_code,
                                headers=response.headers,
                                body=response.body,
                                request_id=response.request_id,
                                attempts=attempt + 1,
                            )
                    attempt += 1
                    await self.sleep(delay)
        except TimeoutError:
            raise ProviderTimeoutError(
                f"{self.provider.value} did not answer within "
                f"{self.policy.total_deadline:g} s (retries included).",
                provider=self.provider,
                outcome_unknown=sent or in_flight,
            ) from None

    async def _send_once(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None,
        json: Any,
        params: Mapping[str, str | int] | None,
    ) -> RawResponse:
        started = time.perf_counter()
        request = self.client.build_request(
            method, self._absolute_url(path), headers=headers, json=json, params=params
        )
        response = await self.client.send(request, stream=True)
        try:
            body = await self._read_capped(response)
        finally:
            await response.aclose()
            # httpx's response and its stream point at each other: a cycle that holds the
            # response, its headers and the transport's response until the cycle collector runs.
            response.stream = CLOSED_STREAM
        request_id = response.headers.get(self.request_id_header)
        if logger.isEnabledFor(logging.INFO):
            report_provider_call(
                logger,
                {
                    "provider": self.provider.value,
                    "method": method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "provider_request_id": request_id,
                },
            )
        if 300 <= response.status_code < 400:
            # Never followed (it could point at a metadata address) and never retried: the
            # same request would get the same redirect.
            raise ProviderBadResponseError(
                f"{self.provider.value} answered with a redirect, which the gateway does not "
                "follow.",
                provider=self.provider,
                outcome_unknown=True,
                http_status=response.status_code,
                request_id=request_id,
            )
        return RawResponse(
            status_code=response.status_code,
            headers=response.headers,
            body=body,
            request_id=request_id,
        )

    def _absolute_url(self, path: str) -> httpx.URL:
        """``path`` under the client's base URL, merged as httpx merges it (appended to the base's
        path, a query string kept), parsed once per path: httpx parses a relative URL twice per
        request, about a seventh of a call's client CPU. Least recently used paths go first."""
        base = self.client.base_url
        if base is not self._urls_base:
            self._urls.clear()
            self._urls_base = base
        url = self._urls.get(path)
        if url is not None:
            self._urls.move_to_end(path)
            return url
        url = httpx.URL(path)
        if url.is_relative_url:
            url = base.copy_with(raw_path=base.raw_path + url.raw_path.lstrip(b"/"))
        self._urls[path] = url
        if len(self._urls) > URL_CACHE_SIZE:
            self._urls.popitem(last=False)
        return url

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if (
            declared is not None
            and declared.isascii()
            and declared.isdigit()
            and int(declared) > self.policy.max_response_bytes
        ):
            raise ProviderBadResponseError(
                f"{self.provider.value} sent a body larger than the gateway reads.",
                provider=self.provider,
                http_status=response.status_code,
            )
        chunks: list[bytes] = []
        size = 0
        # Decoded bytes, so the cap also bounds a decompression bomb.
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.policy.max_response_bytes:
                raise ProviderBadResponseError(
                    f"{self.provider.value} sent a body larger than the gateway reads.",
                    provider=self.provider,
                    http_status=response.status_code,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self.client.aclose()
