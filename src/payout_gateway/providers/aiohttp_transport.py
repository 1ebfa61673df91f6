"""httpx-aiohttp's transport with aiohttp's errors translated by what they prove about sending.

httpx-aiohttp maps every ``aiohttp.ClientConnectionError`` it has no closer entry for, including
``ServerDisconnectedError`` after the request was written, to ``httpx.ConnectTimeout``; our seam
reads that as "never sent" and may resend a POST. Here only errors aiohttp raises before any byte
of the request is written become connect errors; every other one reads as "maybe sent".
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from typing import NoReturn

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

# aiohttp (or builtin) error -> the httpx error our seam reads. First isinstance match wins, so a
# subclass comes before its base.
ERROR_MAP: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    # Not sent. aiohttp raises these only while it waits for a pooled connection or opens one
    # (client.py around connector.connect; connector.py), and, with its own retry switched off
    # (see get_client), only before the first and only write of the request.
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),  # refused, DNS, TLS, proxy connect
    # URLs are checked before connecting, except a redirect's (after sending; redirects are off).
    (aiohttp.RedirectClientError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    # Maybe sent: the request may be at the provider.
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),  # SocketTimeoutError: sock_read expired
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientConnectionResetError, httpx.WriteError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # unparseable status or headers
    (aiohttp.ClientError, httpx.ReadError),  # ClientOSError mid-request, and anything new
    (TimeoutError, httpx.ReadTimeout),
    (OSError, httpx.ReadError),
)

# aiohttp refuses these in header names and values with a bare ValueError (http_writer.py); h11
# raises LocalProtocolError for them, which the seam reads as "not sent", as it is.
_FORBIDDEN_HEADER_BYTES = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def httpx_error_for(exc: BaseException) -> type[httpx.TransportError] | None:
    """The httpx error an aiohttp failure stands for; None for anything that is not one."""
    for source, target in ERROR_MAP:
        if isinstance(exc, source):
            return target
    return None


def translate(exc: Exception, request: httpx.Request) -> httpx.TransportError | None:
    """``exc`` as our seam must see it, or None to let it through. httpx-aiohttp raises its own
    choice ``from`` the aiohttp error, so that error is its cause; others arrive as they are."""
    origin: BaseException = exc
    if isinstance(exc, httpx.TransportError) and exc.__cause__ is not None:
        origin = exc.__cause__
    target = httpx_error_for(origin)
    if target is None:
        return None
    error = target(f"{type(origin).__name__}: {origin}", request=request)
    error.__cause__ = origin
    return error


def _reraise(exc: Exception, request: httpx.Request) -> NoReturn:
    error = translate(exc, request)
    if error is None:
        raise exc
    raise error from error.__cause__


class AiohttpProviderTransport(AiohttpTransport):
    """aiohttp under httpx for provider calls: one pooled session, no redirects (httpx-aiohttp
    passes ``allow_redirects=False``), no retries of its own, no cookie jar of its own.

    Timeouts come per request from httpx: connect -> ``sock_connect``, read -> ``sock_read``,
    pool -> ``connect`` (pool wait and connecting together). aiohttp has no write timeout and no
    separate idle-connection cap: every pooled connection (up to ``max_connections``) stays for
    ``keepalive_expiry``; ProviderHttp's total deadline bounds a stuck write.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        super().__init__(limits=limits)

    def get_client(self) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self.limits.max_connections or 0,
                keepalive_timeout=self.limits.keepalive_expiry,
                ssl=self.ssl_context,
            ),
            # httpx keeps the cookies; a second jar would send them twice.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # aiohttp resends GET/PUT/DELETE once on a dropped connection: the resend could then fail
        # to connect and look "never sent". ProviderHttp owns retries. (aiohttp's own TestClient
        # sets this attribute the same way.)
        session._retry_connection = False
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if _FORBIDDEN_HEADER_BYTES.search(
            b"\t".join(itertools.chain.from_iterable(request.headers.raw))
        ):
            raise httpx.LocalProtocolError("Illegal header name or value", request=request)
        try:
            response = await super().handle_async_request(request)
        except Exception as exc:
            _reraise(exc, request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _TranslatedStream(response.stream, request)
        return response


class _TranslatedStream(httpx.AsyncByteStream):
    """The response body, with read failures translated like send failures."""

    def __init__(self, stream: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            _reraise(exc, self._request)

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except Exception as exc:
            _reraise(exc, self._request)
