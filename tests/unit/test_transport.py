"""The shared provider transport: the httpx error seam, the retry policy and ProviderHttp."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from payout_gateway import __version__
from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import (
    ProviderBadResponseError,
    ProviderCircuitOpenError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from payout_gateway.providers.circuit import CircuitBreaker, CircuitState
from payout_gateway.providers.transport import (
    BASE_HEADERS,
    URL_CACHE_SIZE,
    FailureKind,
    HttpPolicy,
    ProviderHttp,
    RawResponse,
    failure_kind,
    map_transport_error,
    parse_retry_after,
    retry_delay,
    with_earlier_attempts,
)
from tests.support.garbage import cyclic_garbage

PROVIDER = Provider.PAYGENTIC

# --- the one seam from httpx to the domain ------------------------------------------------------

# Every httpx exception: the domain error it becomes and whether the request may have been applied.
EXPECTED: dict[type[httpx.HTTPError], tuple[type[ProviderError], bool]] = {
    httpx.HTTPError: (ProviderUnavailableError, True),
    httpx.RequestError: (ProviderUnavailableError, True),
    httpx.TransportError: (ProviderUnavailableError, False),
    httpx.TimeoutException: (ProviderTimeoutError, True),
    httpx.ConnectTimeout: (ProviderTimeoutError, False),
    httpx.ReadTimeout: (ProviderTimeoutError, True),
    httpx.WriteTimeout: (ProviderTimeoutError, True),
    httpx.PoolTimeout: (ProviderTimeoutError, False),
    httpx.NetworkError: (ProviderUnavailableError, True),
    httpx.ConnectError: (ProviderUnavailableError, False),
    httpx.ReadError: (ProviderUnavailableError, True),
    httpx.WriteError: (ProviderUnavailableError, True),
    httpx.CloseError: (ProviderUnavailableError, True),
    httpx.ProtocolError: (ProviderUnavailableError, False),
    httpx.LocalProtocolError: (ProviderUnavailableError, False),
    httpx.RemoteProtocolError: (ProviderUnavailableError, True),
    httpx.ProxyError: (ProviderUnavailableError, False),
    httpx.UnsupportedProtocol: (ProviderUnavailableError, False),
    httpx.DecodingError: (ProviderBadResponseError, True),
    httpx.TooManyRedirects: (ProviderBadResponseError, True),
    httpx.HTTPStatusError: (ProviderBadResponseError, True),
}


def httpx_exception_classes() -> list[type[httpx.HTTPError]]:
    found: list[type[httpx.HTTPError]] = [httpx.HTTPError]

    def walk(cls: type[httpx.HTTPError]) -> Iterator[type[httpx.HTTPError]]:
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("httpx"):
                yield sub
                yield from walk(sub)

    found.extend(walk(httpx.HTTPError))
    return sorted(set(found), key=lambda c: c.__name__)


def instantiate(cls: type[httpx.HTTPError]) -> httpx.HTTPError:
    request = httpx.Request("POST", "https://provider.test/v0/things")
    if issubclass(cls, httpx.HTTPStatusError):
        return cls("boom", request=request, response=httpx.Response(500, request=request))
    if issubclass(cls, httpx.RequestError):
        return cls("boom", request=request)
    return cls("boom")


def test_the_table_names_every_httpx_exception() -> None:
    assert set(httpx_exception_classes()) == set(EXPECTED)


@pytest.mark.parametrize("cls", httpx_exception_classes(), ids=lambda c: c.__name__)
def test_every_httpx_exception_becomes_a_domain_error(cls: type[httpx.HTTPError]) -> None:
    expected, outcome_unknown = EXPECTED[cls]
    error = map_transport_error(instantiate(cls), PROVIDER)
    assert type(error) is expected
    assert error.provider is PROVIDER
    assert getattr(error, "outcome_unknown") is outcome_unknown  # noqa: B009
    assert error.retryable is True


@pytest.mark.parametrize("cls", httpx_exception_classes(), ids=lambda c: c.__name__)
def test_the_seam_and_the_retry_policy_agree_on_what_was_sent(cls: type[httpx.HTTPError]) -> None:
    exc = instantiate(cls)
    error = map_transport_error(exc, PROVIDER)
    sent = failure_kind(exc) is FailureKind.SENT_NO_ANSWER
    assert getattr(error, "outcome_unknown") is sent  # noqa: B009


# --- the retry policy ---------------------------------------------------------------------------

POLICY = HttpPolicy(max_retries=2, backoff_base=0.25, backoff_cap=4.0, retry_after_cap=30.0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # attempt limits
        ({"attempt": 2, "status": 500, "replay_safe": True}, None),
        ({"attempt": 2, "failure": FailureKind.NOT_SENT, "replay_safe": True}, None),
        ({"attempt": 5, "status": 429, "retry_after": 1.0, "replay_safe": True}, None),
        # retryable statuses, only when the request is replay-safe
        ({"attempt": 0, "status": 500, "replay_safe": True, "jitter": 0.0}, 0.125),
        ({"attempt": 0, "status": 500, "replay_safe": True, "jitter": 1.0}, 0.25),
        ({"attempt": 1, "status": 503, "replay_safe": True, "jitter": 0.0}, 0.25),
        ({"attempt": 0, "status": 408, "replay_safe": True, "jitter": 0.5}, 0.1875),
        ({"attempt": 0, "status": 500, "replay_safe": False}, None),
        ({"attempt": 0, "status": 502, "replay_safe": False}, None),
        ({"attempt": 0, "status": 504, "replay_safe": False}, None),
        # statuses that are answers, never retried
        ({"attempt": 0, "status": 400, "replay_safe": True}, None),
        ({"attempt": 0, "status": 404, "replay_safe": True}, None),
        ({"attempt": 0, "status": 409, "replay_safe": True}, None),
        ({"attempt": 0, "status": 501, "replay_safe": True}, None),
        # 429: only with Retry-After, within the cap, replay-safe or not
        ({"attempt": 0, "status": 429, "replay_safe": True}, None),
        ({"attempt": 0, "status": 429, "replay_safe": False, "retry_after": 3.0}, 3.0),
        ({"attempt": 0, "status": 429, "replay_safe": True, "retry_after": 30.0}, 30.0),
        ({"attempt": 0, "status": 429, "replay_safe": True, "retry_after": 31.0}, None),
        ({"attempt": 0, "status": 429, "replay_safe": True, "retry_after": 0.0}, 0.0),
        # Retry-After on a retryable status replaces the back-off, within the cap
        ({"attempt": 0, "status": 503, "replay_safe": True, "retry_after": 2.0}, 2.0),
        ({"attempt": 0, "status": 503, "replay_safe": True, "retry_after": 300.0}, None),
        ({"attempt": 0, "status": 503, "replay_safe": False, "retry_after": 2.0}, None),
        # transport failures: never sent is always safe; sent without answer only if replay-safe
        (
            {"attempt": 0, "failure": FailureKind.NOT_SENT, "replay_safe": False, "jitter": 0.0},
            0.125,
        ),
        ({"attempt": 1, "failure": FailureKind.NOT_SENT, "replay_safe": True, "jitter": 1.0}, 0.5),
        ({"attempt": 0, "failure": FailureKind.SENT_NO_ANSWER, "replay_safe": False}, None),
        (
            {
                "attempt": 0,
                "failure": FailureKind.SENT_NO_ANSWER,
                "replay_safe": True,
                "jitter": 0.0,
            },
            0.125,
        ),
    ],
)
def test_retry_delay(kwargs: dict[str, Any], expected: float | None) -> None:
    assert retry_delay(policy=POLICY, **kwargs) == expected


def test_backoff_is_capped() -> None:
    policy = HttpPolicy(max_retries=50, backoff_base=0.25, backoff_cap=4.0)
    delay = retry_delay(attempt=30, policy=policy, replay_safe=True, status=500, jitter=1.0)
    assert delay == 4.0


@given(
    attempt=st.integers(min_value=0, max_value=40),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_jitter_stays_between_half_and_full_backoff(attempt: int, jitter: float) -> None:
    policy = HttpPolicy(max_retries=100, backoff_base=0.25, backoff_cap=4.0)
    delay = retry_delay(attempt=attempt, policy=policy, replay_safe=True, status=502, jitter=jitter)
    backoff = min(policy.backoff_cap, policy.backoff_base * 2**attempt)
    assert delay is not None
    assert backoff / 2 <= delay <= backoff


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-1", None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


# --- ProviderHttp over MockTransport ------------------------------------------------------------


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def make_http() -> AsyncIterator[Callable[..., ProviderHttp]]:
    made: list[ProviderHttp] = []

    def make(handler: Callable[[httpx.Request], Any], **policy: Any) -> ProviderHttp:
        http = ProviderHttp(
            PROVIDER,
            "https://provider.test/api",
            HttpPolicy(**policy),
            transport=httpx.MockTransport(handler),
            sleep=Sleeps(),
            jitter=lambda: 0.0,
        )
        made.append(http)
        return http

    yield make
    for http in made:
        await http.aclose()


async def test_a_plain_answer_is_read_with_its_request_id(
    make_http: Callable[..., ProviderHttp],
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"ok": True}, headers={"x-request-id": "req_1"})

    http = make_http(handler)
    raw = await http.request(
        "POST", "/v0/things", json={"a": 1}, params={"q": 1}, headers={"h": "v"}, replay_safe=False
    )
    assert (raw.status_code, raw.body, raw.request_id, raw.attempts) == (
        201,
        b'{"ok":true}',
        "req_1",
        1,
    )
    assert str(seen[0].url) == "https://provider.test/api/v0/things?q=1"
    assert seen[0].headers["h"] == "v"


async def test_a_body_over_the_cap_is_refused(make_http: Callable[..., ProviderHttp]) -> None:
    http = make_http(lambda _: httpx.Response(200, content=b"x" * 101), max_response_bytes=100)
    with pytest.raises(ProviderBadResponseError) as caught:
        await http.request("GET", "/big", replay_safe=True)
    assert caught.value.http_status == 200


async def _drip(chunks: int, size: int) -> AsyncIterator[bytes]:
    for _ in range(chunks):
        yield b"x" * size


async def test_a_streamed_body_without_length_is_cut_at_the_cap(
    make_http: Callable[..., ProviderHttp],
) -> None:
    reads = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal reads
        while True:
            reads += 1
            yield b"x" * 64

    http = make_http(lambda _: httpx.Response(200, content=endless()), max_response_bytes=1000)
    with pytest.raises(ProviderBadResponseError):
        await http.request("GET", "/stream", replay_safe=True)
    assert reads == 16


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_a_compressed_body_is_read_decoded(
    make_http: Callable[..., ProviderHttp], coding: str
) -> None:
    body = b'{"data": "' + b"z" * 5000 + b'"}'
    packed = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    http = make_http(
        lambda _: httpx.Response(200, headers={"content-encoding": coding}, content=packed)
    )
    raw = await http.request("GET", "/packed", replay_safe=True)
    assert raw.body == body


async def test_the_cap_counts_decoded_bytes(make_http: Callable[..., ProviderHttp]) -> None:
    # 1 MB of zeros packs into ~1 KB: a cap on the bytes received would let it through.
    packed = gzip.compress(b"0" * 1_000_000)
    assert len(packed) < 5000
    http = make_http(
        lambda _: httpx.Response(200, headers={"content-encoding": "gzip"}, content=packed),
        max_response_bytes=100_000,
    )
    with pytest.raises(ProviderBadResponseError):
        await http.request("GET", "/bomb", replay_safe=True)


async def test_a_lying_content_length_does_not_lift_the_cap(
    make_http: Callable[..., ProviderHttp],
) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "10"}, content=_drip(50, 100))

    http = make_http(handler, max_response_bytes=1000)
    with pytest.raises(ProviderBadResponseError):
        await http.request("GET", "/liar", replay_safe=True)


async def test_a_non_ascii_content_length_is_not_trusted(
    make_http: Callable[..., ProviderHttp],
) -> None:
    # "²".isdigit() is true but int("²") raises: the header must not crash the read.
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=[(b"content-length", "²".encode())], content=b"{}")

    raw = await make_http(handler).request("GET", "/odd", replay_safe=True)
    assert raw.body == b"{}"


async def test_redirects_are_not_followed(make_http: Callable[..., ProviderHttp]) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data"})

    with pytest.raises(ProviderBadResponseError):
        await make_http(handler).request("POST", "/start", replay_safe=False)
    assert seen == ["https://provider.test/api/start"]
    seen.clear()
    # A replay-safe request is not retried either: the same request gets the same redirect.
    with pytest.raises(ProviderBadResponseError):
        await make_http(handler).request("GET", "/start", replay_safe=True)
    assert seen == ["https://provider.test/api/start"]


async def test_the_total_deadline_cuts_a_hanging_provider(
    make_http: Callable[..., ProviderHttp],
) -> None:
    async def hang(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)  # pragma: no cover

    http = make_http(hang, total_deadline=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeoutError) as caught:
        await http.request("POST", "/slow", replay_safe=False)
    assert loop.time() - started < 1
    # The request was in flight when the deadline struck: it may have been applied.
    assert caught.value.outcome_unknown is True


async def test_the_deadline_during_back_off_after_a_refused_connection_is_not_applied(
    make_http: Callable[..., ProviderHttp],
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    http = make_http(refuse, total_deadline=0.05, backoff_base=10.0, backoff_cap=10.0)
    http.sleep = asyncio.sleep
    with pytest.raises(ProviderTimeoutError) as caught:
        await http.request("POST", "/x", replay_safe=False)
    assert caught.value.outcome_unknown is False


async def test_a_refused_connection_is_retried_then_reported_as_not_applied(
    make_http: Callable[..., ProviderHttp],
) -> None:
    calls = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=request)

    http = make_http(refuse, max_retries=2)
    with pytest.raises(ProviderUnavailableError) as caught:
        await http.request("POST", "/x", replay_safe=False)
    assert calls == 3
    assert caught.value.outcome_unknown is False
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert isinstance(http.sleep, Sleeps)
    assert http.sleep.delays == [0.125, 0.25]


async def test_a_read_timeout_on_a_write_is_not_retried_and_outcome_unknown(
    make_http: Callable[..., ProviderHttp],
) -> None:
    calls = 0

    def time_out(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(ProviderTimeoutError) as caught:
        await make_http(time_out).request("POST", "/x", replay_safe=False)
    assert calls == 1
    assert caught.value.outcome_unknown is True


async def test_a_read_timeout_on_a_replay_safe_request_is_retried(
    make_http: Callable[..., ProviderHttp],
) -> None:
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, content=b"{}")

    raw = await make_http(flaky).request("GET", "/x", replay_safe=True)
    assert (calls, raw.attempts) == (2, 2)


async def test_a_failure_after_an_earlier_answer_keeps_the_outcome_unknown(
    make_http: Callable[..., ProviderHttp],
) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(500)
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ProviderUnavailableError) as caught:
        await make_http(handler, max_retries=1).request("POST", "/x", replay_safe=True)
    # The 500 may have applied the write before the retry could not connect.
    assert caught.value.outcome_unknown is True


async def test_a_retryable_status_is_returned_once_retries_are_spent(
    make_http: Callable[..., ProviderHttp],
) -> None:
    raw = await make_http(lambda _: httpx.Response(503), max_retries=2).request(
        "GET", "/x", replay_safe=True
    )
    assert (raw.status_code, raw.attempts) == (503, 3)


@pytest.mark.parametrize(
    ("first", "may_have_applied"),
    [("timeout", True), (500, True), (429, False)],
)
async def test_an_answer_to_a_resend_says_whether_an_earlier_attempt_may_have_applied(
    make_http: Callable[..., ProviderHttp], first: str | int, may_have_applied: bool
) -> None:
    # The resend's 429 asks for more than the cap allows: the call ends with it.
    answers = iter([(first, "1"), (429, "120")])

    def answer(request: httpx.Request) -> httpx.Response:
        status, retry_after = next(answers)
        if status == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(int(status), headers={"retry-after": retry_after})

    raw = await make_http(answer).request("POST", "/x", replay_safe=True)
    assert (raw.status_code, raw.attempts) == (429, 2)
    assert raw.earlier_may_have_applied is may_have_applied
    rate_limited = ProviderRateLimitedError("slow down", provider=PROVIDER, retry_after=120)
    assert with_earlier_attempts(rate_limited, raw) is rate_limited
    assert rate_limited.outcome_unknown is may_have_applied


async def test_429_is_retried_after_the_advertised_delay_even_for_writes(
    make_http: Callable[..., ProviderHttp],
) -> None:
    answers = iter([httpx.Response(429, headers={"retry-after": "2"}), httpx.Response(200)])
    http = make_http(lambda _: next(answers))
    raw = await http.request("POST", "/x", replay_safe=False)
    assert raw.status_code == 200
    assert isinstance(http.sleep, Sleeps)
    assert http.sleep.delays == [2.0]


# --- the circuit breaker ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Upstream:
    """A provider that answers as told, counting what reaches it."""

    def __init__(self) -> None:
        self.calls = 0
        self.answer: Callable[[httpx.Request], httpx.Response] = lambda _: httpx.Response(200)
        self.held: asyncio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.held is not None:
            await self.held.wait()
        return self.answer(request)


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


@pytest.fixture
async def guarded() -> AsyncIterator[tuple[ProviderHttp, Upstream, Clock]]:
    upstream, clock = Upstream(), Clock()
    http = ProviderHttp(
        PROVIDER,
        "https://provider.test/api",
        HttpPolicy(max_retries=0),
        transport=httpx.MockTransport(upstream),
        sleep=Sleeps(),
        jitter=lambda: 0.0,
        circuit=CircuitBreaker(PROVIDER.value, failures=5, reset_seconds=30.0, clock=clock),
    )
    yield http, upstream, clock
    await http.aclose()


async def fail_five_times(http: ProviderHttp, upstream: Upstream) -> None:
    upstream.answer = refuse
    for _ in range(5):
        with pytest.raises(ProviderUnavailableError):
            await http.request("POST", "/x", replay_safe=False)


async def probe_in_flight(
    http: ProviderHttp, upstream: Upstream, clock: Clock
) -> asyncio.Task[RawResponse]:
    """The circuit opened and its period over: the probe, held at a provider working again."""
    await fail_five_times(http, upstream)
    clock.now += 30
    upstream.answer = lambda _: httpx.Response(200)
    upstream.held = asyncio.Event()
    probe = asyncio.create_task(http.request("GET", "/x", replay_safe=True))
    while upstream.calls < 6:
        await asyncio.sleep(0)
    return probe


async def test_five_failed_calls_in_a_row_make_the_next_fail_at_once_sending_nothing(
    guarded: tuple[ProviderHttp, Upstream, Clock],
) -> None:
    http, upstream, clock = guarded
    await fail_five_times(http, upstream)
    assert upstream.calls == 5
    upstream.answer = lambda _: httpx.Response(200)
    clock.now += 12.5
    with pytest.raises(ProviderUnavailableError) as caught:
        await http.request("POST", "/x", replay_safe=False)
    assert upstream.calls == 5
    error = caught.value
    assert isinstance(error, ProviderCircuitOpenError)
    assert (error.retryable, error.outcome_unknown, error.provider) == (True, False, PROVIDER)
    assert (error.code, error.retry_after) == ("PROVIDER_CIRCUIT_OPEN", 18)
    assert str(error) == (
        "PAYGENTIC is failing: its last 5 requests got no usable answer, so the gateway is not "
        "calling it for now. Nothing was sent; retry in 18 s."
    )


@pytest.mark.parametrize(
    "status", [500, 502, 503, 504], ids=lambda status: f"{status} once retries are spent"
)
async def test_a_server_error_answer_counts_as_a_failure(
    guarded: tuple[ProviderHttp, Upstream, Clock], status: int
) -> None:
    http, upstream, _ = guarded
    upstream.answer = lambda _: httpx.Response(status)
    for _ in range(5):
        assert (await http.request("GET", "/x", replay_safe=True)).status_code == status
    with pytest.raises(ProviderUnavailableError):
        await http.request("GET", "/x", replay_safe=True)
    assert upstream.calls == 5


@pytest.mark.parametrize(
    "answer",
    [
        lambda _: httpx.Response(400, json={"error": "invalid"}),
        lambda _: httpx.Response(404),
        lambda _: httpx.Response(429),
        lambda _: httpx.Response(302, headers={"location": "http://169.254.169.254/"}),
    ],
    ids=["400", "404", "429 once retries are spent", "a redirect"],
)
async def test_answers_that_show_the_provider_up_do_not_open_it(
    guarded: tuple[ProviderHttp, Upstream, Clock], answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    http, upstream, _ = guarded
    upstream.answer = answer
    for _ in range(10):
        with contextlib.suppress(ProviderBadResponseError):  # the redirect
            await http.request("GET", "/x", replay_safe=True)
    assert upstream.calls == 10
    assert http.circuit.state is CircuitState.CLOSED


async def test_an_answer_between_failures_starts_the_count_again(
    guarded: tuple[ProviderHttp, Upstream, Clock],
) -> None:
    http, upstream, _ = guarded
    for _ in range(2):
        upstream.answer = refuse
        for _ in range(4):
            with pytest.raises(ProviderUnavailableError):
                await http.request("GET", "/x", replay_safe=True)
        upstream.answer = lambda _: httpx.Response(200)
        await http.request("GET", "/x", replay_safe=True)
    assert upstream.calls == 10
    assert http.circuit.state is CircuitState.CLOSED


async def test_once_the_period_is_over_one_probe_goes_through_and_its_answer_closes_it(
    guarded: tuple[ProviderHttp, Upstream, Clock],
) -> None:
    http, upstream, clock = guarded
    probe = await probe_in_flight(http, upstream, clock)
    # While the probe is out, the others fail at once.
    for _ in range(3):
        with pytest.raises(ProviderUnavailableError, match="retry in 1 s"):
            await http.request("GET", "/x", replay_safe=True)
    assert upstream.calls == 6
    upstream.held.set()
    assert (await probe).status_code == 200
    assert http.circuit.state is CircuitState.CLOSED
    upstream.held = None
    for _ in range(3):
        await http.request("GET", "/x", replay_safe=True)
    assert upstream.calls == 9


async def test_a_failed_probe_keeps_it_open_for_another_period(
    guarded: tuple[ProviderHttp, Upstream, Clock],
) -> None:
    http, upstream, clock = guarded
    await fail_five_times(http, upstream)
    clock.now += 30
    with pytest.raises(ProviderUnavailableError):
        await http.request("GET", "/x", replay_safe=True)
    assert upstream.calls == 6
    clock.now += 29
    upstream.answer = lambda _: httpx.Response(200)
    with pytest.raises(ProviderUnavailableError, match="retry in 1 s"):
        await http.request("GET", "/x", replay_safe=True)
    assert upstream.calls == 6


async def test_a_cancelled_probe_decides_nothing_and_the_next_call_probes(
    guarded: tuple[ProviderHttp, Upstream, Clock],
) -> None:
    http, upstream, clock = guarded
    probe = await probe_in_flight(http, upstream, clock)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert http.circuit.state is CircuitState.HALF_OPEN
    upstream.held = None
    assert (await http.request("GET", "/x", replay_safe=True)).status_code == 200
    assert upstream.calls == 7
    assert http.circuit.state is CircuitState.CLOSED


async def test_calls_make_no_more_attempts_once_the_circuit_opens() -> None:
    upstream = Upstream()
    http = ProviderHttp(
        PROVIDER,
        "https://provider.test/api",
        HttpPolicy(max_retries=2),
        transport=httpx.MockTransport(upstream),
        sleep=Sleeps(),
        jitter=lambda: 0.0,
    )
    upstream.answer = refuse
    upstream.held = gate = asyncio.Event()
    early = asyncio.create_task(http.request("GET", "/x", replay_safe=True))
    while upstream.calls < 1:
        await asyncio.sleep(0)
    upstream.held = None
    # Three attempts fail, then two: the fifth failure in a row opens the circuit, and that
    # call makes no third attempt.
    for _ in range(2):
        with pytest.raises(ProviderUnavailableError) as failed:
            await http.request("GET", "/x", replay_safe=True)
        assert isinstance(failed.value.__cause__, httpx.ConnectError)
    assert (http.circuit.state, upstream.calls) == (CircuitState.OPEN, 6)
    gate.set()
    with pytest.raises(ProviderUnavailableError) as caught:
        await early
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert upstream.calls == 6  # its failed attempt was its last
    assert isinstance(http.sleep, Sleeps)
    assert len(http.sleep.delays) == 3  # and no call backed off once the circuit was open
    await http.aclose()


async def test_a_call_whose_back_off_outlasts_the_closed_circuit_ends_as_its_last_attempt() -> None:
    upstream, backing_off, resume = Upstream(), asyncio.Event(), asyncio.Event()

    async def sleep(_: float) -> None:
        if not backing_off.is_set():  # the first call to back off waits there
            backing_off.set()
            await resume.wait()

    http = ProviderHttp(
        PROVIDER,
        "https://provider.test/api",
        HttpPolicy(max_retries=2),
        transport=httpx.MockTransport(upstream),
        sleep=sleep,
        jitter=lambda: 0.0,
    )
    upstream.answer = refuse
    waiting = asyncio.create_task(http.request("POST", "/x", replay_safe=True))
    await backing_off.wait()
    for _ in range(2):  # three failed attempts, then one: five in a row with the first
        with pytest.raises(ProviderUnavailableError):
            await http.request("POST", "/x", replay_safe=True)
    assert (http.circuit.state, upstream.calls) == (CircuitState.OPEN, 5)
    resume.set()
    with pytest.raises(ProviderUnavailableError) as caught:
        await waiting
    assert not isinstance(caught.value, ProviderCircuitOpenError)  # it did send a request
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert upstream.calls == 5
    await http.aclose()


async def test_attempts_cut_by_the_deadline_count_as_failures(
    make_http: Callable[..., ProviderHttp],
) -> None:
    never = asyncio.Event()

    async def hang(_: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    http = make_http(hang, total_deadline=0.01)
    for _ in range(5):
        with pytest.raises(ProviderTimeoutError):
            await http.request("GET", "/x", replay_safe=True)
    assert http.circuit.state is CircuitState.OPEN


async def test_the_circuit_s_settings_come_from_the_policy() -> None:
    http = ProviderHttp(
        PROVIDER,
        "https://provider.test",
        HttpPolicy(circuit_failures=2, circuit_reset_seconds=7.5),
        transport=httpx.MockTransport(lambda _: httpx.Response(200)),
    )
    assert (http.circuit.name, http.circuit.failures, http.circuit.reset_seconds) == (
        "PAYGENTIC",
        2,
        7.5,
    )
    await http.aclose()


# --- URLs merged once per path; no cookies kept -------------------------------------------------


class Recorder:
    """A provider answering 200 to everything, remembering what it was sent."""

    def __init__(self, *answer_headers: tuple[str, str]) -> None:
        self.requests: list[httpx.Request] = []
        self.answer_headers = list(answer_headers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, headers=self.answer_headers, content=b"{}")

    @property
    def urls(self) -> list[str]:
        return [str(request.url) for request in self.requests]


def http_for(base_url: str, recorder: Recorder) -> ProviderHttp:
    return ProviderHttp(PROVIDER, base_url, transport=httpx.MockTransport(recorder))


BASE_URLS = ["https://provider.test", "https://provider.test/api/v1", "https://provider.test/api/"]
PATHS = [
    "/v0/things",
    "v0/things",
    "/v0/things?limit=5&after=a%2Fb",
    "/v0/things/ac%C3%A7ount one",
    "/",
    "",
]


@pytest.mark.parametrize("base_url", BASE_URLS)
async def test_urls_are_merged_as_httpx_merges_them_every_time(base_url: str) -> None:
    recorder = Recorder()
    http = http_for(base_url, recorder)
    reference = httpx.AsyncClient(base_url=base_url.rstrip("/"))
    expected: list[str] = []
    for _ in range(2):  # merged, then cached
        for path in PATHS:
            for params in (None, {"offset": 10}):
                await http.request("GET", path, params=params, replay_safe=True)
                expected.append(str(reference.build_request("GET", path, params=params).url))
    assert recorder.urls == expected
    await http.aclose()
    await reference.aclose()


async def test_the_same_path_goes_to_each_client_s_own_base_url() -> None:
    recorder = Recorder()
    first = http_for("https://one.test/api", recorder)
    second = http_for("https://two.test/v2", recorder)
    for http in (first, second, first):
        await http.request("GET", "/things?a=1", replay_safe=True)
    assert recorder.urls == [
        "https://one.test/api/things?a=1",
        "https://two.test/v2/things?a=1",
        "https://one.test/api/things?a=1",
    ]
    await first.aclose()
    await second.aclose()


@pytest.mark.parametrize(
    "url",
    ["https://elsewhere.test/v0/things", "//elsewhere.test/v0/things", "http://provider.test/x"],
)
async def test_a_full_url_is_refused_before_anything_is_sent(url: str) -> None:
    # The call carries an organization's credentials: they go to the provider's base URL only.
    recorder = Recorder()
    http = http_for("https://provider.test/api", recorder)
    with pytest.raises(ValueError, match="path under the base URL"):
        await http.request("GET", url, replay_safe=True)
    assert recorder.requests == []
    await http.aclose()


async def test_the_url_cache_keeps_the_recently_used_paths_up_to_its_size() -> None:
    http = http_for("https://provider.test", Recorder())
    for n in range(URL_CACHE_SIZE + 10):
        await http.request("GET", f"/v0/payouts/po_{n}", replay_safe=True)
        await http.request("POST", "/v0/payouts", replay_safe=False)
    assert len(http._urls) == URL_CACHE_SIZE
    assert "/v0/payouts" in http._urls
    assert "/v0/payouts/po_0" not in http._urls
    await http.aclose()


async def test_cookies_set_by_an_answer_are_never_kept_or_sent() -> None:
    # One client serves every organization: a kept cookie would cross from one to the others.
    recorder = Recorder(("Set-Cookie", "session=s1; Path=/"))
    http = http_for("https://provider.test", recorder)
    await http.request("GET", "/a", replay_safe=True)
    await http.request("GET", "/b", replay_safe=True)
    assert [request.headers.get("cookie") for request in recorder.requests] == [None, None]
    await http.aclose()


async def test_requests_carry_the_base_headers_the_adapter_s_and_the_call_s() -> None:
    recorder = Recorder()
    http = ProviderHttp(
        PROVIDER,
        "https://provider.test",
        transport=httpx.MockTransport(recorder),
        headers={"Accept": "application/json", "Provider-Version": "2026-01-01"},
    )
    await http.request("POST", "/a", headers={"X-Api-Key": "k1"}, json={"a": 1}, replay_safe=False)
    await http.request("GET", "/b", headers={"PROVIDER-VERSION": "2026-02-02"}, replay_safe=True)
    first, second = (dict(request.headers) for request in recorder.requests)
    assert first == {
        "host": "provider.test",
        "accept": "application/json",  # the adapter's, over the base header
        "accept-encoding": "gzip, deflate",
        "connection": "keep-alive",
        "user-agent": f"payout-gateway/{__version__}",
        "provider-version": "2026-01-01",
        "x-api-key": "k1",
        "content-length": "7",
        "content-type": "application/json",
    }
    assert recorder.requests[0].content == b'{"a":1}'
    # A call's header wins over the adapter's whatever its case, and sets nothing for later calls.
    assert second["provider-version"] == "2026-02-02"
    assert "x-api-key" not in second and "content-length" not in second
    await http.aclose()


@pytest.mark.parametrize(
    ("method", "path", "params", "body"),
    [
        ("POST", "/a", None, {"a": 1}),
        ("POST", "/a", None, None),
        ("PUT", "/a/b", None, None),
        ("PATCH", "/a", None, {"b": [1, 2]}),
        ("GET", "/a", None, None),
        ("GET", "/a?x=1", {"limit": 5, "after": "a/b"}, None),
        ("DELETE", "/a/%C3%A7", None, None),
    ],
)
async def test_a_request_is_what_httpx_builds_from_the_same_call(
    method: str, path: str, params: dict[str, str | int] | None, body: Any
) -> None:
    # ProviderHttp sets Host and Content-Length itself (to build the request from its stream):
    # names, case, order, URL and body must be those of httpx's own ``content=`` request.
    recorder = Recorder()
    http = ProviderHttp(
        PROVIDER,
        "https://provider.test:8443/api",
        transport=httpx.MockTransport(recorder),
        headers={"X-Api-Key": "k1"},
    )
    await http.request(method, path, json=body, params=params, replay_safe=False)
    sent = recorder.requests[0]
    headers = {**BASE_HEADERS, "x-api-key": "k1"}
    if body is not None:
        headers["content-type"] = "application/json"
    reference = httpx.Request(
        method,
        "https://provider.test:8443/api/" + path.lstrip("/"),
        params=params,
        headers=headers,
        content=None if body is None else orjson.dumps(body),
    )
    assert sent.headers.raw == reference.headers.raw
    assert sent.url == reference.url
    assert sent.content == reference.content
    await http.aclose()


async def test_headers_derived_from_the_request_cannot_be_set_by_adapters_or_calls() -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match="set"):
        ProviderHttp(PROVIDER, "https://provider.test", headers={"Host": "elsewhere.test"})
    http = http_for("https://provider.test", recorder)
    for name in ("host", "Content-Length", "transfer-encoding"):
        with pytest.raises(ValueError, match="set"):
            await http.request("GET", "/a", headers={name: "1"}, replay_safe=True)
    assert recorder.requests == []
    await http.aclose()


async def test_a_json_body_is_sent_as_httpx_would_send_it() -> None:
    recorder = Recorder()
    http = http_for("https://provider.test", recorder)
    body = {
        "holder": "Zoë Ñandú 山田 \u2028",
        "nested": {"list": [1, -2, 2**62, True, None, 'x\ty"z\\'], "empty": {}},
        "amount": 125000,
    }
    await http.request("POST", "/a", json=body, replay_safe=False)
    reference = httpx.Request("POST", "https://provider.test/a", json=body)
    sent = recorder.requests[0]
    assert sent.content == reference.content
    assert sent.headers["content-type"] == reference.headers["content-type"]
    assert sent.headers["content-length"] == reference.headers["content-length"]
    await http.aclose()


async def test_each_attempt_carries_the_policy_s_timeouts() -> None:
    recorder = Recorder()
    policy = HttpPolicy(connect_timeout=1.5, read_timeout=2.5, write_timeout=3.5, pool_timeout=4.5)
    http = ProviderHttp(
        PROVIDER, "https://provider.test", policy, transport=httpx.MockTransport(recorder)
    )
    await http.request("GET", "/a", replay_safe=True)
    assert recorder.requests[0].extensions["timeout"] == {
        "connect": 1.5,
        "read": 2.5,
        "write": 3.5,
        "pool": 4.5,
    }
    await http.aclose()


async def test_a_closed_client_sends_nothing() -> None:
    recorder = Recorder()
    http = http_for("https://provider.test", recorder)
    await http.aclose()
    await http.aclose()  # closing twice is harmless
    assert http.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        await http.request("GET", "/a", replay_safe=True)
    assert recorder.requests == []


async def test_an_answer_leaves_no_reference_cycle(
    make_http: Callable[..., ProviderHttp],
) -> None:
    # httpx's response and its stream point at each other; left so, every provider call's
    # response, headers and transport objects would wait for the cycle collector.
    http = make_http(lambda request: httpx.Response(200, json={"ok": True}))
    await http.request("GET", "/v0/things", replay_safe=True)  # the client's one-off set-up
    with cyclic_garbage() as garbage:
        for _ in range(3):
            raw = await http.request("GET", "/v0/things", replay_safe=True)
            assert raw.body == b'{"ok":true}'
    assert [type(item) for item in garbage if isinstance(item, httpx.Response)] == []
