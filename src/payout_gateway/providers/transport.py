"""Shared HTTP plumbing for adapters: the transport, retries, capped reads, and the one
seam where httpx exceptions become domain errors.

Nothing above ``providers/`` ever sees an ``httpx`` exception: :func:`map_transport_error` is the
only place they are translated, and a test walks every httpx exception class through it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import urllib.request
from collections import OrderedDict
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, NamedTuple, Protocol, runtime_checkable

import httpx
import orjson

from payout_gateway import __version__
from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import (
    PayoutGatewayError,
    ProviderBadResponseError,
    ProviderCircuitOpenError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from payout_gateway.metrics import (
    PROVIDER_ATTEMPTS,
    PROVIDER_CIRCUIT_OPEN,
    PROVIDER_SECONDS,
    LabelledChildren,
)
from payout_gateway.providers.circuit import CircuitBreaker, CircuitOpen, CircuitState
from payout_gateway.request_log import report_provider_call

logger = logging.getLogger("payout_gateway.providers")

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

# Methods httpx gives a ``Content-Length: 0`` when they carry no body.
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# Headers ProviderHttp derives from each request's URL and body; nobody else may set them.
_SET_PER_REQUEST = frozenset({"host", "content-length", "transfer-encoding"})

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
    # Failed requests in a row that open the provider's circuit, and how long it then stays open
    # (see circuit.py).
    circuit_failures: int = 5
    circuit_reset_seconds: float = 30.0


# What every provider call carries unless its adapter sets the header itself: httpx's client
# defaults (the encodings httpx decodes without extras), with the gateway named as the agent so
# that a provider's support can tell its calls apart.
BASE_HEADERS: Mapping[str, str] = {
    "accept": "*/*",
    "accept-encoding": "gzip, deflate",
    "connection": "keep-alive",
    "user-agent": f"payout-gateway/{__version__}",
}


def open_transport(base_url: httpx.URL, policy: HttpPolicy) -> httpx.AsyncBaseTransport:
    """The policy's backend with its pool limits, through the environment's proxy for
    ``base_url`` if it names one (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY), as httpx's
    client would have it."""
    limits = httpx.Limits(
        max_connections=policy.max_connections,
        max_keepalive_connections=policy.max_keepalive_connections,
    )
    if policy.backend is HttpBackend.AIOHTTP:
        # Imported here: aiohttp takes ~0.1 s to import, which CLI commands never need.
        from payout_gateway.providers.aiohttp_transport import AiohttpProviderTransport

        return AiohttpProviderTransport(limits)
    return httpx.AsyncHTTPTransport(
        limits=limits, proxy=environment_proxy(base_url, urllib.request.getproxies_environment())
    )


def environment_proxy(url: httpx.URL, proxies: Mapping[str, str]) -> str | None:
    """The proxy for ``url`` among ``proxies`` (urllib's ``getproxies_environment()``: scheme
    -> URL, "no" -> hosts), NO_PROXY matched as urllib matches it (host names and domain
    suffixes)."""
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and _bypasses_proxy(url.netloc.decode("ascii"), proxies):
        return None
    return proxy or None


# ``proxy_bypass_environment`` is defined on every platform; ``proxy_bypass`` takes the proxies
# only on Linux.
_bypasses_proxy: Callable[[str, Mapping[str, str]], bool] = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]


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


def _outlasts(deadline: asyncio.Timeout, delay: float) -> bool:
    """Whether waiting ``delay`` seconds would reach ``deadline``."""
    when = deadline.when()
    return when is not None and asyncio.get_running_loop().time() + delay >= when


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


class ProviderAnswer(NamedTuple):
    """A provider's status, headers (looked up regardless of case) and whole, decoded body."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes


class ResponseTooLarge(Exception):
    """A provider's body went past the gateway's read cap."""

    def __init__(self, status_code: int) -> None:
        super().__init__(status_code)
        self.status_code = status_code


@runtime_checkable
class ExchangingTransport(Protocol):
    """A transport that can also send a request and read its whole answer without httpx's
    request and response models (the aiohttp backend). Its errors are the ones its httpx
    interface raises, so ProviderHttp reads both paths alike."""

    async def exchange(
        self,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        content: bytes,
        timeouts: Mapping[str, float | None],
        max_bytes: int,
    ) -> ProviderAnswer:
        """Send ``content`` with exactly ``headers``; the answer, its body read whole (decoded
        when it has a content coding). Raises ResponseTooLarge past ``max_bytes``."""
        ...


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """``response``'s body, decoded, or ResponseTooLarge as soon as it passes ``max_bytes``
    (declared or read), without reading the rest. Decoded bytes, so the cap also bounds a
    decompression bomb."""
    declared = response.headers.get("content-length")
    if (
        declared is not None
        and declared.isascii()
        and declared.isdigit()
        and int(declared) > max_bytes
    ):
        raise ResponseTooLarge(response.status_code)
    # A body sent without a content coding is its raw bytes: read straight from the
    # transport's stream, without httpx's decoder and chunker generators stacked on it per
    # chunk (~3 % of an add's instructions; bench/PROFILE.md, ninth round).
    stream = response.stream
    chunks: AsyncIterable[bytes] = (
        stream
        if isinstance(stream, httpx.AsyncByteStream) and "content-encoding" not in response.headers
        else response.aiter_bytes()
    )
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(response.status_code)
        parts.append(chunk)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A provider's answer, fully read (up to the cap) and detached from httpx."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes
    request_id: str | None
    attempts: int = 1
    # An earlier attempt of the same call reached the provider and got no answer or a 5xx: it
    # may have been applied, whatever this last answer says (a 429 to the resend, say).
    earlier_may_have_applied: bool = False


def with_earlier_attempts(error: PayoutGatewayError, raw: RawResponse) -> PayoutGatewayError:
    """``error``, read from the last answer of ``raw``'s call, with its outcome unknown when an
    earlier attempt may have been applied: a resend answered 429 or "not applied" says nothing
    of the attempt before it."""
    if raw.earlier_may_have_applied and isinstance(
        error, ProviderUnavailableError | ProviderBadResponseError
    ):
        error.outcome_unknown = True
    return error


class ProviderHttp:
    """Sends one logical request to a provider with the retry policy and deadline applied.

    Requests go straight to an httpx transport (aiohttp's by default, httpx's own if the policy
    says so; a mock or an ASGI app in tests and sandbox mode), not through ``httpx.AsyncClient``:
    provider calls use none of the client's per-request machinery (auth flows, redirects, which
    are never followed here, a cookie jar, which must stay empty because one client serves
    every organization, event hooks), and a request built from headers merged once costs a
    fraction of the client's merge: together about an eighth of a call's client CPU
    (bench/transport.py; bench/PROFILE.md, ninth round).

    A transport that can exchange a request without httpx's models (``ExchangingTransport``:
    the aiohttp backend) is given the same URL, headers and body directly: building httpx's
    Request and Response around aiohttp's own (each normalizing its headers, the response's
    looked up by scanning them) was about a quarter of a call's instructions, a tenth of an
    add's (bench/PROFILE.md, twelfth round). Both paths send the same bytes and read answers,
    caps and errors alike (tests/unit/test_aiohttp_transport.py).
    """

    def __init__(
        self,
        provider: Provider,
        base_url: str,
        policy: HttpPolicy | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        request_id_header: str = "x-request-id",
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        circuit: CircuitBreaker | None = None,
    ) -> None:
        self.provider = provider
        self.policy = policy or HttpPolicy()
        self.circuit = circuit or CircuitBreaker(
            provider.value,
            failures=self.policy.circuit_failures,
            reset_seconds=self.policy.circuit_reset_seconds,
        )
        base = httpx.URL(base_url)
        # Paths are appended to the base URL's path, as httpx's client appends them.
        self.base_url = (
            base if base.raw_path.endswith(b"/") else base.copy_with(raw_path=base.raw_path + b"/")
        )
        # ``transport`` (sandbox mode, tests) replaces the policy's backend.
        self.transport = transport or open_transport(self.base_url, self.policy)
        self._exchange = (
            self.transport.exchange if isinstance(self.transport, ExchangingTransport) else None
        )
        # How Host and Content-Length are named in what goes to the transport: as httpx names
        # them in a request it builds from ``content=``, or, for an exchange, as httpx hands
        # them on to a transport (lower case), so that both aiohttp paths send the same bytes.
        self._host_name, self._length_name = (
            ("host", "content-length") if self._exchange else ("Host", "Content-Length")
        )
        self.request_id_header = request_id_header
        self.sleep = sleep
        self.jitter = jitter
        self._headers = {
            **BASE_HEADERS,
            **{name.lower(): value for name, value in (headers or {}).items()},
        }
        if not self._headers.keys().isdisjoint(_SET_PER_REQUEST):
            raise ValueError(f"provider calls set {sorted(_SET_PER_REQUEST)} themselves")
        self._timeout = httpx.Timeout(
            connect=self.policy.connect_timeout,
            read=self.policy.read_timeout,
            write=self.policy.write_timeout,
            pool=self.policy.pool_timeout,
        ).as_dict()
        self._urls: OrderedDict[str, httpx.URL] = OrderedDict()
        self._closed = False
        # This provider's metrics, looked up once (metrics.LabelledChildren).
        self._attempt_children = LabelledChildren(PROVIDER_ATTEMPTS)
        self._seconds = PROVIDER_SECONDS.labels(provider.value)
        self._circuit_gauge = PROVIDER_CIRCUIT_OPEN.labels(provider.value)
        self._circuit_gauge.set(0)
        self._circuit_shown_open = False

    def _attempts(self, outcome: str) -> Any:
        """The attempts counter of this provider and ``outcome``."""
        return self._attempt_children(self.provider.value, outcome)

    @property
    def is_closed(self) -> bool:
        return self._closed

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
        """Send with retries; raise a domain error when no usable answer arrived in time.

        Every attempt asks the provider's circuit first (circuit.py) and reports to it how it
        went: while the circuit is open, a call fails at once with nothing sent, and a call
        already under way makes no more attempts but ends as its last attempt did. (Retries
        around the breaker, as resilience4j and Polly arrange them: a hung provider is found
        out by its first attempts' timeouts, not once whole calls have spent their retries.)
        """
        sent = False
        # An attempt that was sent and answered nothing or a 5xx: the write may be applied.
        may_have_applied = False
        # An attempt cut by the deadline may already be at the provider: its outcome is unknown.
        in_flight = False
        # How the call ends if it makes no more attempts: the last answer or error.
        ending: RawResponse | ProviderError | None = None
        try:
            async with asyncio.timeout(self.policy.total_deadline) as deadline:
                attempt = 0
                while True:
                    try:
                        probe = self.circuit.admit()
                    except CircuitOpen as refused:
                        self._attempts("circuit_open").inc()
                        self._report_unanswered(method, path, "circuit_open", None, None)
                        if ending is None:
                            raise self._circuit_open_error(refused) from None
                        break  # opened by other calls during this one's back-off
                    in_flight = True
                    started = time.perf_counter()
                    try:
                        response = await self._send_once(method, path, headers, json, params)
                    except httpx.HTTPError as exc:
                        in_flight = False
                        self.circuit.failed(probe)
                        kind = failure_kind(exc)
                        self._attempts(kind.value).inc()
                        self._report_unanswered(method, path, kind.value, started, exc)
                        sent = sent or kind is FailureKind.SENT_NO_ANSWER
                        may_have_applied = may_have_applied or kind is FailureKind.SENT_NO_ANSWER
                        ending = map_transport_error(exc, self.provider)
                        ending.__cause__ = exc
                        if sent and isinstance(ending, ProviderUnavailableError):
                            ending.outcome_unknown = True
                        delay = retry_delay(
                            attempt=attempt,
                            policy=self.policy,
                            replay_safe=replay_safe,
                            failure=kind,
                            jitter=self.jitter(),
                        )
                    except BaseException:
                        if deadline.expired():  # no answer in time
                            self._attempts("deadline").inc()
                            self._report_unanswered(method, path, "deadline", started, None)
                            self.circuit.failed(probe)
                        else:  # an answer the adapter cannot use, cancelled, a bug of ours
                            self.circuit.undecided(probe)
                        raise
                    else:
                        in_flight = False
                        sent = True
                        if response.status_code >= 500:  # failed on the provider's side
                            self.circuit.failed(probe)
                        else:
                            self.circuit.succeeded(probe)
                        ending = RawResponse(
                            status_code=response.status_code,
                            headers=response.headers,
                            body=response.body,
                            request_id=response.request_id,
                            attempts=attempt + 1,
                            earlier_may_have_applied=may_have_applied,
                        )
                        may_have_applied = may_have_applied or response.status_code >= 500
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
                            if delay is not None and _outlasts(deadline, delay):
                                # The deadline would cut the wait: a timeout whose outcome is
                                # unknown would then replace this answer (a 429 applied
                                # nothing), and its Retry-After would not reach the caller.
                                delay = None
                    if delay is None or not self.circuit.admits():
                        break
                    attempt += 1
                    await self.sleep(delay)
        except TimeoutError:
            raise ProviderTimeoutError(
                f"{self.provider.value} did not answer within "
                f"{self.policy.total_deadline:g} s (retries included).",
                provider=self.provider,
                outcome_unknown=sent or in_flight,
            ) from None
        finally:
            # Open or probing: either way the provider is not being called freely.
            circuit_open = self.circuit.state is not CircuitState.CLOSED
            if circuit_open is not self._circuit_shown_open:
                self._circuit_shown_open = circuit_open
                self._circuit_gauge.set(circuit_open)
        if isinstance(ending, RawResponse):
            return ending
        raise ending

    def _report_unanswered(
        self,
        method: str,
        path: str,
        outcome: str,
        started: float | None,
        error: BaseException | None,
    ) -> None:
        """An attempt that got no answer goes on the request's access line (``request_log``)
        as an answered one does, its ``outcome`` as ``/metrics`` counts it (``not_sent``,
        ``sent_no_answer``, ``deadline``, ``circuit_open``) and no status: without it, a
        request that waited out a hung provider, or failed at once, showed no call at all."""
        if not logger.isEnabledFor(logging.INFO):
            return
        try:
            logged_path = self._absolute_url(path).path
        except ValueError:  # refused before it was sent (a full URL): named as given
            logged_path = path
        elapsed = time.perf_counter() - started if started is not None else 0.0
        self._report_call(method, logged_path, None, elapsed, outcome=outcome, error=error)

    def _count_answer(
        self,
        method: str,
        path: str,
        status_code: int,
        started: float,
        request_id: str | None,
        error: BaseException | None = None,
    ) -> None:
        """An answered attempt, counted and timed for ``/metrics`` and put on the request's
        access line (``request_log``)."""
        self._attempts(str(status_code)).inc()
        elapsed = time.perf_counter() - started
        self._seconds.observe(elapsed)
        if logger.isEnabledFor(logging.INFO):
            self._report_call(
                method, path, status_code, elapsed, request_id=request_id, error=error
            )

    def _report_call(
        self,
        method: str,
        path: str,
        status: int | None,
        elapsed: float,
        *,
        request_id: str | None = None,
        outcome: str | None = None,
        error: BaseException | None = None,
    ) -> None:
        call: dict[str, Any] = {
            "provider": self.provider.value,
            "method": method,
            "path": path,
            "status": status,
        }
        if outcome is not None:
            call["outcome"] = outcome
        call["duration_ms"] = round(elapsed * 1000, 2)
        call["provider_request_id"] = request_id
        if error is not None:
            call["error"] = type(error).__name__  # the class only: a message may quote the URL
        report_provider_call(logger, call)

    def _circuit_open_error(self, refused: CircuitOpen) -> ProviderCircuitOpenError:
        # A probe in flight answers within seconds: "1 s" rather than "now".
        retry_after = max(1, math.ceil(refused.retry_in))
        return ProviderCircuitOpenError(
            f"{self.provider.value} is failing: its last {refused.failures} requests got no "
            "usable answer, so the gateway is not calling it for now. Nothing was sent; "
            f"retry in {retry_after} s.",
            provider=self.provider,
            retry_after=retry_after,
        )

    async def _send_once(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None,
        json: Any,
        params: Mapping[str, str | int] | None,
    ) -> RawResponse:
        if self._closed:
            raise RuntimeError(f"the {self.provider.value} client has been closed")
        started = time.perf_counter()
        url = self._absolute_url(path)
        if params is not None:
            url = httpx.URL(url, params=params)  # as httpx.Request(params=...) builds it
        # The headers httpx adds to a request built from ``content=`` (Host, Content-Length),
        # named and placed as httpx places them, so that the request can be built from its
        # stream: httpx then normalizes the headers once instead of twice (bench/PROFILE.md,
        # tenth round). A test compares the two requests.
        length = self._length_name
        merged = {self._host_name: url.netloc.decode("ascii")}
        if json is None and method.upper() in _METHODS_WITH_BODY:
            merged[length] = "0"
        merged.update(self._headers)
        if headers:
            for name, value in headers.items():
                name = name.lower()
                if name in _SET_PER_REQUEST:
                    raise ValueError(f"provider calls set {name!r} themselves")
                merged[name] = value
        content = b""
        if json is not None:
            # The bytes httpx's ``json=`` sends (compact, UTF-8), encoded in C.
            content = orjson.dumps(json)
            merged.setdefault("content-type", "application/json")
            merged[length] = str(len(content))
        try:
            if self._exchange is not None:
                answer = await self._exchange(
                    method, url, merged, content, self._timeout, self.policy.max_response_bytes
                )
            else:
                answer = await self._send_through_httpx(method, url, merged, content)
        except ResponseTooLarge as too_large:
            # Answered, if unreadably: counted and logged as every answer is, or a provider
            # sending endless bodies would show on no metric and no log line.
            self._count_answer(method, url.path, too_large.status_code, started, None, too_large)
            raise ProviderBadResponseError(
                f"{self.provider.value} sent a body larger than the gateway reads.",
                provider=self.provider,
                http_status=too_large.status_code,
            ) from None
        status_code = answer.status_code
        request_id = answer.headers.get(self.request_id_header)
        self._count_answer(method, url.path, status_code, started, request_id)
        if 300 <= status_code < 400:
            # Never followed (it could point at a metadata address) and never retried: the
            # same request would get the same redirect.
            raise ProviderBadResponseError(
                f"{self.provider.value} answered with a redirect, which the gateway does not "
                "follow.",
                provider=self.provider,
                outcome_unknown=True,
                http_status=status_code,
                request_id=request_id,
            )
        return RawResponse(
            status_code=status_code,
            headers=answer.headers,
            body=answer.body,
            request_id=request_id,
        )

    async def _send_through_httpx(
        self, method: str, url: httpx.URL, headers: dict[str, str], content: bytes
    ) -> ProviderAnswer:
        request = httpx.Request(
            method,
            url,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions={"timeout": self._timeout},
        )
        request.read()
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            body = await read_capped(response, self.policy.max_response_bytes)
        finally:
            await response.aclose()
        return ProviderAnswer(response.status_code, response.headers, body)

    def _absolute_url(self, path: str) -> httpx.URL:
        """``path`` under the base URL, merged as httpx's client merges it (appended to the
        base's path, a query string kept), parsed once per path: httpx parses a relative URL
        twice per request, about a seventh of a call's client CPU. Least recently used paths
        go first. A full URL is refused: the call's credentials go to the provider's origin
        only."""
        url = self._urls.get(path)
        if url is not None:
            self._urls.move_to_end(path)
            return url
        url = httpx.URL(path)
        if url.scheme or url.netloc:  # "//host/path" too, which httpx would merge host-less
            raise ValueError(f"provider calls take a path under the base URL, not {path!r}")
        url = self.base_url.copy_with(raw_path=self.base_url.raw_path + url.raw_path.lstrip(b"/"))
        self._urls[path] = url
        if len(self._urls) > URL_CACHE_SIZE:
            self._urls.popitem(last=False)
        return url

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self.transport.aclose()
