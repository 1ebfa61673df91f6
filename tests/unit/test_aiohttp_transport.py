"""The aiohttp backend: every aiohttp error read as "not sent" only when it provably was not, and
ProviderHttp over real loopback sockets behaving the same on both backends, and on the aiohttp
backend's two paths (its exchange without httpx's models, and its httpx interface)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.client_exceptions import UnixClientConnectorError
from aiohttp.client_reqrep import ConnectionKey
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from payout_gateway.domain.enums import Provider
from payout_gateway.domain.errors import (
    ProviderBadResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from payout_gateway.providers.aiohttp_transport import (
    AiohttpProviderTransport,
    AiohttpResponseBody,
    translate,
)
from payout_gateway.providers.transport import (
    ExchangingTransport,
    FailureKind,
    HttpBackend,
    HttpPolicy,
    ProviderHttp,
    failure_kind,
    map_transport_error,
)
from payout_gateway.settings import ProviderSettings

PROVIDER = Provider.PAYGENTIC
NOT_SENT, MAYBE_SENT = FailureKind.NOT_SENT, FailureKind.SENT_NO_ANSWER

# --- every aiohttp error through the transport's mapping ----------------------------------------

# What the transport can raise: every aiohttp client error, plus the builtins aiohttp lets through.
EXPECTED: dict[type[BaseException], tuple[type[httpx.TransportError], FailureKind]] = {
    # raised only while waiting for or opening a connection
    aiohttp.ConnectionTimeoutError: (httpx.ConnectTimeout, NOT_SENT),
    aiohttp.ClientConnectorError: (httpx.ConnectError, NOT_SENT),
    aiohttp.ClientConnectorDNSError: (httpx.ConnectError, NOT_SENT),
    aiohttp.ClientConnectorSSLError: (httpx.ConnectError, NOT_SENT),
    aiohttp.ClientConnectorCertificateError: (httpx.ConnectError, NOT_SENT),
    aiohttp.ClientSSLError: (httpx.ConnectError, NOT_SENT),
    aiohttp.ClientProxyConnectionError: (httpx.ConnectError, NOT_SENT),
    UnixClientConnectorError: (httpx.ConnectError, NOT_SENT),
    # raised before connecting
    aiohttp.InvalidURL: (httpx.UnsupportedProtocol, NOT_SENT),
    aiohttp.InvalidUrlClientError: (httpx.UnsupportedProtocol, NOT_SENT),
    aiohttp.NonHttpUrlClientError: (httpx.UnsupportedProtocol, NOT_SENT),
    # everything else may follow a written request
    aiohttp.ServerDisconnectedError: (httpx.RemoteProtocolError, MAYBE_SENT),
    aiohttp.ServerTimeoutError: (httpx.ReadTimeout, MAYBE_SENT),
    aiohttp.SocketTimeoutError: (httpx.ReadTimeout, MAYBE_SENT),
    aiohttp.ServerConnectionError: (httpx.ReadError, MAYBE_SENT),
    aiohttp.ServerFingerprintMismatch: (httpx.ReadError, MAYBE_SENT),
    aiohttp.ClientConnectionResetError: (httpx.WriteError, MAYBE_SENT),
    aiohttp.ClientOSError: (httpx.ReadError, MAYBE_SENT),
    aiohttp.ClientConnectionError: (httpx.ReadError, MAYBE_SENT),
    aiohttp.ClientPayloadError: (httpx.ReadError, MAYBE_SENT),
    aiohttp.ClientResponseError: (httpx.RemoteProtocolError, MAYBE_SENT),
    aiohttp.ContentTypeError: (httpx.RemoteProtocolError, MAYBE_SENT),
    aiohttp.WSServerHandshakeError: (httpx.RemoteProtocolError, MAYBE_SENT),
    aiohttp.ClientHttpProxyError: (httpx.RemoteProtocolError, MAYBE_SENT),
    aiohttp.TooManyRedirects: (httpx.RemoteProtocolError, MAYBE_SENT),
    aiohttp.RedirectClientError: (httpx.RemoteProtocolError, MAYBE_SENT),
    aiohttp.InvalidUrlRedirectClientError: (httpx.RemoteProtocolError, MAYBE_SENT),
    aiohttp.NonHttpUrlRedirectClientError: (httpx.RemoteProtocolError, MAYBE_SENT),
    aiohttp.UploadAbortedError: (httpx.ReadError, MAYBE_SENT),
    aiohttp.ClientError: (httpx.ReadError, MAYBE_SENT),
    TimeoutError: (httpx.ReadTimeout, MAYBE_SENT),
    OSError: (httpx.ReadError, MAYBE_SENT),
    ConnectionResetError: (httpx.ReadError, MAYBE_SENT),
}

REQUEST = httpx.Request("POST", "https://provider.test/v0/things")
KEY = ConnectionKey("provider.test", 443, True, True, None, None, None)


def aiohttp_error_classes() -> list[type[BaseException]]:
    found: set[type[BaseException]] = {aiohttp.ClientError}

    def walk(cls: type[BaseException]) -> Iterator[type[BaseException]]:
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("aiohttp"):
                yield sub
                yield from walk(sub)

    found.update(walk(aiohttp.ClientError))
    return sorted(found, key=lambda c: c.__name__)


def instantiate(cls: type[BaseException]) -> BaseException:
    refused = OSError(111, "Connection refused")
    if issubclass(cls, aiohttp.ClientConnectorCertificateError):
        return cls(KEY, ssl.CertificateError("hostname mismatch"))
    if issubclass(cls, UnixClientConnectorError):
        return cls("/run/provider.sock", KEY, refused)
    if issubclass(cls, aiohttp.ClientConnectorError):
        return cls(KEY, refused)
    if issubclass(cls, aiohttp.ClientResponseError):
        url = URL("https://provider.test/v0/things")
        info = aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)
        return cls(info, (), status=502, message="bad")
    if issubclass(cls, aiohttp.ServerFingerprintMismatch):
        return cls(b"expected", b"got", "provider.test", 443)
    if issubclass(cls, aiohttp.InvalidURL):
        return cls("https://", "no host")
    return cls("boom")


def test_the_table_names_every_aiohttp_client_error() -> None:
    missing = set(aiohttp_error_classes()) - set(EXPECTED)
    assert not missing, sorted(c.__name__ for c in missing)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_every_aiohttp_error_becomes_an_httpx_error_the_seam_reads_conservatively(
    cls: type[BaseException],
) -> None:
    expected, kind = EXPECTED[cls]
    original = instantiate(cls)
    assert isinstance(original, Exception)
    error = translate(original, REQUEST)
    assert type(error) is expected
    assert error.__cause__ is original
    assert isinstance(error, httpx.RequestError)
    assert error.request is REQUEST
    assert failure_kind(error) is kind
    domain = map_transport_error(error, PROVIDER)
    assert getattr(domain, "outcome_unknown") is (kind is MAYBE_SENT)  # noqa: B009


@pytest.mark.parametrize("exc", [ValueError("x"), RuntimeError("Session is closed")])
def test_errors_that_are_not_network_failures_pass_through(exc: Exception) -> None:
    assert translate(exc, REQUEST) is None


class _FailingContent:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        yield b"{"
        raise self.exc


class _FailingAiohttpResponse:
    def __init__(self, exc: BaseException) -> None:
        self.content = _FailingContent(exc)

    def release(self) -> None:
        raise aiohttp.ClientConnectionResetError("Connection lost")

    async def wait_for_close(self) -> None:
        raise AssertionError("not reached")  # pragma: no cover


async def test_failures_while_reading_the_body_are_translated_too() -> None:
    failing: Any = _FailingAiohttpResponse(aiohttp.ServerDisconnectedError())
    body = AiohttpResponseBody(failing, REQUEST)
    response = httpx.Response(200, stream=body, request=REQUEST)
    with pytest.raises(httpx.RemoteProtocolError) as read:
        await response.aread()
    assert isinstance(read.value.__cause__, aiohttp.ServerDisconnectedError)
    with pytest.raises(httpx.WriteError):
        await response.aclose()


# --- choosing the backend -----------------------------------------------------------------------


async def test_the_policy_chooses_the_backend_and_a_given_transport_wins() -> None:
    clients = [
        ProviderHttp(PROVIDER, "http://p.test", HttpPolicy()),
        ProviderHttp(PROVIDER, "http://p.test", HttpPolicy(backend=HttpBackend.HTTPCORE)),
        ProviderHttp(
            PROVIDER,
            "http://p.test",
            HttpPolicy(),
            transport=httpx.MockTransport(lambda _: httpx.Response(200)),
        ),
    ]
    try:
        kinds = [type(client.transport) for client in clients]
        assert kinds == [AiohttpProviderTransport, httpx.AsyncHTTPTransport, httpx.MockTransport]
    finally:
        for client in clients:
            await client.aclose()


def test_the_backend_is_a_provider_setting() -> None:
    assert ProviderSettings().http_policy().backend is HttpBackend.AIOHTTP
    chosen = ProviderSettings.model_validate({"http_backend": "httpcore"})
    assert chosen.http_policy().backend is HttpBackend.HTTPCORE


# --- ProviderHttp over real sockets, on both backends -------------------------------------------

Respond = Callable[["RawServer", asyncio.StreamWriter], Awaitable[bool]]


class RawServer:
    """A loopback HTTP/1.1 server written in bytes, so a test decides exactly when it answers,
    stalls or hangs up. ``respond`` returns whether to keep the connection for another request."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.connections = 0
        self.sent_bytes = 0
        self.respond: Respond = answer
        self.tasks: set[asyncio.Task[Any]] = set()
        self.url = ""
        self.reader: asyncio.StreamReader | None = None  # the latest connection's
        self.peer_closed = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        self.reader = reader
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                self.requests.append(head + await reader.readexactly(length))
                if not await self.respond(self, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def answer(server: RawServer, writer: asyncio.StreamWriter) -> bool:
    body = b'{"ok":true}'
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nset-cookie: session=s1\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    return True


async def hang_up(server: RawServer, writer: asyncio.StreamWriter) -> bool:
    return False


async def stall(server: RawServer, writer: asyncio.StreamWriter) -> bool:
    await asyncio.sleep(3600)
    return False  # pragma: no cover


async def reset(server: RawServer, writer: asyncio.StreamWriter) -> bool:
    # An RST instead of an answer (a load balancer giving up): httpx-aiohttp, which this
    # transport replaced, read aiohttp's ClientOSError here as a connect timeout.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return False


async def cut_body(server: RawServer, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
    await writer.drain()
    return False


async def garbage(server: RawServer, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"SPLAT\r\n\r\n")
    await writer.drain()
    return False


async def endless(server: RawServer, writer: asyncio.StreamWriter) -> bool:
    # No length: the body ends when the connection does, 50 MiB later.
    writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(800):
        writer.write(chunk)
        await writer.drain()
        server.sent_bytes += len(chunk)
    return False


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    raw = RawServer()
    listener = await asyncio.start_server(raw.serve, "127.0.0.1", 0)
    raw.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    yield raw
    listener.close()
    for task in raw.tasks:
        task.cancel()
    await asyncio.gather(*raw.tasks, return_exceptions=True)
    await listener.wait_closed()


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


MakeHttp = Callable[..., ProviderHttp]


@pytest.fixture(params=list(HttpBackend), ids=lambda b: b.value)
async def make_http(request: pytest.FixtureRequest, server: RawServer) -> AsyncIterator[MakeHttp]:
    made: list[ProviderHttp] = []

    def make(url: str | None = None, **policy: Any) -> ProviderHttp:
        chosen = HttpPolicy(backend=request.param, **policy)
        http = ProviderHttp(PROVIDER, url or server.url, chosen, sleep=Sleeps(), jitter=lambda: 0.0)
        made.append(http)
        return http

    yield make
    for http in made:
        await http.aclose()


async def test_answers_reuse_one_kept_alive_connection(
    server: RawServer, make_http: MakeHttp
) -> None:
    http = make_http()
    for n in range(5):
        raw = await http.request("POST", "/v0/things", json={"n": n}, replay_safe=False)
        assert (raw.status_code, raw.body) == (200, b'{"ok":true}')
    assert server.connections == 1
    assert len(server.requests) == 5
    first = server.requests[0].lower()
    assert first.endswith(b'\r\n\r\n{"n":0}')
    assert first.count(b"content-length: 7\r\n") == 1
    # Neither httpx nor the aiohttp session keeps the cookie the answers set.
    assert b"session=s1" not in server.requests[1].lower()


async def test_a_post_cut_off_after_sending_is_maybe_sent_and_not_resent(
    server: RawServer, make_http: MakeHttp
) -> None:
    server.respond = hang_up
    http = make_http(max_retries=2)
    with pytest.raises(ProviderUnavailableError) as caught:
        await http.request("POST", "/v0/things", json={"a": 1}, replay_safe=False)
    assert caught.value.outcome_unknown is True
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert len(server.requests) == 1


async def test_a_read_cut_off_is_resent_only_by_our_retry_policy(
    server: RawServer, make_http: MakeHttp
) -> None:
    # aiohttp would resend a GET once on its own; the retry budget must be the policy's alone.
    server.respond = hang_up
    with pytest.raises(ProviderUnavailableError):
        await make_http(max_retries=0).request("GET", "/v0/things/1", replay_safe=True)
    assert len(server.requests) == 1
    with pytest.raises(ProviderUnavailableError):
        await make_http(max_retries=1).request("GET", "/v0/things/1", replay_safe=True)
    assert len(server.requests) == 3


async def test_a_refused_connection_is_not_sent_and_is_retried(make_http: MakeHttp) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    http = make_http(f"http://127.0.0.1:{closed_port}", max_retries=2)
    with pytest.raises(ProviderUnavailableError) as caught:
        await http.request("POST", "/v0/things", json={"a": 1}, replay_safe=False)
    assert caught.value.outcome_unknown is False
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert isinstance(http.sleep, Sleeps)
    assert http.sleep.delays == [0.125, 0.25]


async def test_a_read_timeout_is_maybe_sent_and_a_post_is_not_resent(
    server: RawServer, make_http: MakeHttp
) -> None:
    server.respond = stall
    http = make_http(read_timeout=0.2, max_retries=2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeoutError) as caught:
        await http.request("POST", "/v0/things", json={"a": 1}, replay_safe=False)
    assert loop.time() - started < 2
    assert caught.value.outcome_unknown is True
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout)
    assert len(server.requests) == 1


async def test_waiting_for_a_pooled_connection_times_out_as_not_sent(
    server: RawServer, make_http: MakeHttp
) -> None:
    server.respond = stall
    http = make_http(
        max_connections=1, max_keepalive_connections=1, pool_timeout=0.2, max_retries=0
    )
    first = asyncio.create_task(http.request("POST", "/a", json={}, replay_safe=False))
    while not server.requests:
        await asyncio.sleep(0.01)
    with pytest.raises(ProviderTimeoutError) as caught:
        await http.request("POST", "/b", json={}, replay_safe=False)
    assert caught.value.outcome_unknown is False
    assert len(server.requests) == 1
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first


@pytest.mark.parametrize("respond", [reset, cut_body, garbage], ids=lambda f: f.__name__)
async def test_a_broken_answer_is_maybe_sent_and_a_post_is_not_resent(
    server: RawServer, make_http: MakeHttp, respond: Respond
) -> None:
    server.respond = respond
    with pytest.raises(ProviderUnavailableError) as caught:
        await make_http(max_retries=2).request(
            "POST", "/v0/things", json={"a": 1}, replay_safe=False
        )
    assert caught.value.outcome_unknown is True
    assert failure_kind(caught.value.__cause__) is MAYBE_SENT  # type: ignore[arg-type]
    assert len(server.requests) == 1


async def test_an_endless_body_is_cut_at_the_cap_without_reading_it_all(
    server: RawServer, make_http: MakeHttp
) -> None:
    server.respond = endless
    http = make_http(max_response_bytes=1024 * 1024)
    with pytest.raises(ProviderBadResponseError):
        await http.request("GET", "/v0/things", replay_safe=True)
    # The cut connection is not pooled: the next call opens a fresh one and gets its answer.
    server.respond = answer
    raw = await http.request("GET", "/v0/things", replay_safe=True)
    assert raw.status_code == 200
    assert server.connections == 2
    assert server.sent_bytes < 16 * 1024 * 1024


async def test_a_header_that_would_inject_lines_is_refused_before_sending(
    server: RawServer, make_http: MakeHttp
) -> None:
    http = make_http(max_retries=0)
    with pytest.raises(ProviderUnavailableError) as caught:
        await http.request(
            "POST", "/v0/things", headers={"x-note": "a\r\nx-evil: 1"}, replay_safe=False
        )
    assert caught.value.outcome_unknown is False
    assert isinstance(caught.value.__cause__, httpx.LocalProtocolError)
    assert server.requests == []


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for scheme in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    return monkeypatch


async def test_calls_go_through_the_environment_s_proxy_on_both_backends(
    make_http: MakeHttp, server: RawServer, proxy_env: pytest.MonkeyPatch
) -> None:
    # The provider's own address resolves nowhere: only the proxy can answer.
    proxy_env.setenv("HTTP_PROXY", server.url)
    http = make_http("http://provider.invalid/api")
    raw = await http.request("GET", "/v0/things", replay_safe=True)
    assert raw.status_code == 200
    assert server.requests[0].startswith(b"GET http://provider.invalid/api/v0/things HTTP/1.1")


async def test_hosts_named_in_no_proxy_are_reached_directly(
    make_http: MakeHttp, server: RawServer, proxy_env: pytest.MonkeyPatch
) -> None:
    proxy_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: using it would fail
    proxy_env.setenv("NO_PROXY", "127.0.0.1")
    raw = await make_http().request("GET", "/v0/things", replay_safe=True)
    assert raw.status_code == 200
    assert server.requests[0].startswith(b"GET /v0/things HTTP/1.1")


# --- the aiohttp backend's exchange against its own httpx interface -----------------------------


class HttpxInterfaceOnly(httpx.AsyncBaseTransport):
    """The aiohttp transport seen through httpx's interface alone, as ProviderHttp used it
    before it could exchange without httpx's models."""

    def __init__(self, transport: AiohttpProviderTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.transport.aclose()


PATHS = ("exchange", "httpx interface", "httpcore")


@pytest.fixture
async def make_path(server: RawServer) -> AsyncIterator[Callable[..., ProviderHttp]]:
    """ProviderHttp over one of PATHS to ``server``, asserting that the path is the one named."""
    made: list[ProviderHttp] = []

    def make(path: str, **policy: Any) -> ProviderHttp:
        transport: httpx.AsyncBaseTransport | None = None
        backend = HttpBackend.HTTPCORE if path == "httpcore" else HttpBackend.AIOHTTP
        chosen = HttpPolicy(backend=backend, **policy)
        if path == "httpx interface":
            transport = HttpxInterfaceOnly(
                AiohttpProviderTransport(httpx.Limits(max_connections=10))
            )
        http = ProviderHttp(
            PROVIDER, server.url, chosen, transport=transport, sleep=Sleeps(), jitter=lambda: 0.0
        )
        assert isinstance(http.transport, ExchangingTransport) is (path == "exchange")
        made.append(http)
        return http

    yield make
    for http in made:
        await http.aclose()


CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v0/things", {"json": {"a": 1, "name": "Zoë"}, "headers": {"X-Key": "k1"}}),
    ("POST", "/v0/things/1/close", {}),
    ("GET", "/v0/things", {"params": {"limit": 5, "after": "a/b"}}),
    ("GET", "/v0/things?limit=5", {"headers": {"Idempotency-Key": "idem-1"}}),
    ("DELETE", "/v0/things/1", {}),
    ("PATCH", "/v0/things/1", {"json": [1, None, True]}),
]


async def test_every_path_sends_the_same_bytes(
    server: RawServer, make_path: Callable[..., ProviderHttp]
) -> None:
    sent: dict[str, list[bytes]] = {}
    for path in PATHS:
        http = make_path(path)
        server.requests.clear()
        for method, url, options in CALLS:
            await http.request(method, url, replay_safe=True, **options)
        sent[path] = list(server.requests)
    assert sent["exchange"] == sent["httpx interface"]
    # httpcore names the headers as given ("Host"); the rest is the same, but for the length
    # aiohttp gives a DELETE without a body (there is no switching it off; no provider call
    # sends one).
    aiohttp_lower = [r.lower() for r in sent["exchange"]]
    delete = [method for method, _, _ in CALLS].index("DELETE")
    assert aiohttp_lower[delete].endswith(b"\r\ncontent-length: 0\r\n\r\n")
    aiohttp_lower[delete] = aiohttp_lower[delete].replace(b"content-length: 0\r\n", b"")
    assert aiohttp_lower == [r.lower() for r in sent["httpcore"]]
    assert b'\r\n\r\n{"a":1,"name":"Zo\xc3\xab"}' in sent["exchange"][0]
    assert b"content-length: 0\r\n" in sent["exchange"][1]
    assert b"content-type" not in sent["exchange"][1].lower()


def respond_with(head: bytes, body: bytes) -> Respond:
    async def respond(server: RawServer, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 " + head + b"\r\n\r\n" + body)
        await writer.drain()
        return True

    return respond


def chunked(body: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:5], body[5:])) + (
        b"0\r\n\r\n"
    )


PAYLOAD = b'{"id":"ba_1","status":"pending"}'
ZIPPED = gzip.compress(PAYLOAD)
ANSWERS: dict[str, Respond] = {
    "with a length": respond_with(
        b"201 Created\r\nContent-Type: application/json\r\nX-Request-Id: req_1\r\n"
        b"Content-Length: %d" % len(PAYLOAD),
        PAYLOAD,
    ),
    "chunked": respond_with(
        b"200 OK\r\nx-request-id: req_2\r\nTransfer-Encoding: chunked", chunked(PAYLOAD)
    ),
    "gzip": respond_with(
        b"200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d" % len(ZIPPED), ZIPPED
    ),
    "gzip, chunked": respond_with(
        b"200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked", chunked(ZIPPED)
    ),
    "an error": respond_with(
        b"422 Unprocessable Entity\r\nX-REQUEST-ID: req_3\r\nContent-Length: 2", b"{}"
    ),
    "empty": respond_with(b"204 No Content", b""),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
async def test_every_path_reads_an_answer_alike(
    server: RawServer, make_path: Callable[..., ProviderHttp], answer: str
) -> None:
    server.respond = ANSWERS[answer]
    read = []
    for path in PATHS:
        raw = await make_path(path).request("POST", "/v0/things", json={}, replay_safe=False)
        read.append(
            (
                raw.status_code,
                raw.body,
                raw.request_id,
                raw.headers.get("CONTENT-type"),
                raw.headers.get("x-missing"),
            )
        )
    assert read[0] == read[1] == read[2]
    assert read[0][1] == (b"{}" if answer == "an error" else b"" if answer == "empty" else PAYLOAD)


BOMB = gzip.compress(b"0" * 4096)
TOO_LARGE: dict[str, Respond] = {
    "declared": respond_with(b"200 OK\r\nContent-Length: 1025", b"x" * 1025),
    "chunked": respond_with(b"200 OK\r\nTransfer-Encoding: chunked", chunked(b"x" * 1025)),
    "decoded": respond_with(
        b"200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d" % len(BOMB), BOMB
    ),
}


@pytest.mark.parametrize("answer", list(TOO_LARGE))
@pytest.mark.parametrize("path", PATHS)
async def test_every_path_refuses_a_body_past_the_cap(
    server: RawServer, make_path: Callable[..., ProviderHttp], answer: str, path: str
) -> None:
    assert len(BOMB) < 1024
    server.respond = TOO_LARGE[answer]
    http = make_path(path, max_response_bytes=1024)
    with pytest.raises(ProviderBadResponseError) as caught:
        await http.request("GET", "/v0/things", replay_safe=True)
    assert caught.value.http_status == 200
    # At the cap exactly, the same body is read.
    server.respond = respond_with(b"200 OK\r\nContent-Length: 1024", b"x" * 1024)
    assert (await http.request("GET", "/v0/things", replay_safe=True)).body == b"x" * 1024


async def stall_mid_body(server: RawServer, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
    await writer.drain()
    assert server.reader is not None
    await server.reader.read()  # until the client closes the connection
    server.peer_closed.set()
    return False


@pytest.mark.parametrize("path", PATHS)
async def test_a_call_cut_by_the_deadline_mid_body_leaves_no_connection_in_the_pool(
    server: RawServer, make_path: Callable[..., ProviderHttp], path: str
) -> None:
    server.respond = stall_mid_body
    http = make_path(path, total_deadline=0.3, max_retries=0)
    with pytest.raises(ProviderTimeoutError) as caught:
        await http.request("GET", "/v0/things", replay_safe=True)
    assert caught.value.outcome_unknown is True
    # Closed at once, not when the garbage collector gets to it (the caught error's traceback
    # still holds the call's frames here).
    await asyncio.wait_for(server.peer_closed.wait(), 5)
    server.respond = answer
    assert (await http.request("GET", "/v0/things", replay_safe=True)).status_code == 200
    assert server.connections == 2


@pytest.mark.parametrize("path", PATHS)
async def test_every_path_refuses_header_text_httpx_cannot_encode(
    server: RawServer, make_path: Callable[..., ProviderHttp], path: str
) -> None:
    with pytest.raises(UnicodeEncodeError):
        await make_path(path).request(
            "GET", "/v0/things", headers={"x-note": "Zoë"}, replay_safe=True
        )
    assert server.requests == []
