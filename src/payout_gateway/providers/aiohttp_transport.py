"""httpx's transport interface over one pooled aiohttp session, with aiohttp's errors translated by
what they prove about whether the request was sent.

Here only errors aiohttp raises before any byte of the request is written become connect errors;
every other one reads as "maybe sent". This replaces httpx-aiohttp's transport, which maps every
``aiohttp.ClientConnectionError`` it has no closer entry for, including ``ServerDisconnectedError``
after the request was written, to ``httpx.ConnectTimeout`` (our seam would read that as "never
sent" and might resend a POST): re-mapping its errors and wrapping its body stream again cost more
than the whole transport, which sends the same bytes.
"""

from __future__ import annotations

import itertools
import re
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import NoReturn

import aiohttp
import httpx
import yarl

from payout_gateway.providers.transport import (
    ProviderAnswer,
    environment_proxy,
    read_capped,
)

# aiohttp (or builtin) error -> the httpx error our seam reads. First isinstance match wins, so a
# subclass comes before its base.
ERROR_MAP: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    # Not sent. aiohttp raises these only while it waits for a pooled connection or opens one
    # (client.py around connector.connect; connector.py), and, with its own retry switched off
    # (see _open_session), only before the first and only write of the request.
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

_CONTENT_TYPE = ("Content-Type",)

# How much of the body one read hands to httpx at most: ProviderHttp checks its size cap per chunk.
_CHUNK_BYTES = 16 * 1024


def httpx_error_for(exc: BaseException) -> type[httpx.TransportError] | None:
    """The httpx error an aiohttp failure stands for; None for anything that is not one."""
    for source, target in ERROR_MAP:
        if isinstance(exc, source):
            return target
    return None


def translate(exc: Exception, request: httpx.Request) -> httpx.TransportError | None:
    """``exc`` as our seam must see it, or None to let it through."""
    target = httpx_error_for(exc)
    if target is None:
        return None
    error = target(f"{type(exc).__name__}: {exc}", request=request)
    error.__cause__ = exc
    return error


def _reraise(exc: Exception, request: httpx.Request) -> NoReturn:
    error = translate(exc, request)
    if error is None:
        raise exc
    raise error from exc


class AiohttpProviderTransport(httpx.AsyncBaseTransport):
    """aiohttp under httpx for provider calls: one pooled session, no redirects, no retries of its
    own, no cookie jar of its own, no decompression of its own (httpx decodes, so the size cap
    counts decoded bytes).

    Timeouts come per request from httpx: connect -> ``sock_connect``, read -> ``sock_read``,
    pool -> ``connect`` (pool wait and connecting together). aiohttp has no write timeout and no
    separate idle-connection cap: every pooled connection (up to ``max_connections``) stays for
    ``keepalive_expiry``; ProviderHttp's total deadline bounds a stuck write.
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        # httpx's default: certifi's roots, or SSL_CERT_FILE / SSL_CERT_DIR when set.
        self._ssl_context = httpx.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None
        # Also httpx's default, which a transport of our own would otherwise lose: proxies from
        # HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY (scheme -> URL, "no" -> hosts), read
        # once, so that a deployment whose egress goes through a proxy reaches the providers.
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_by_origin: dict[tuple[str, bytes], str | None] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        # Opened on the first request: aiohttp binds a session to the running event loop.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                keepalive_timeout=self._limits.keepalive_expiry,
                ssl=self._ssl_context,
            ),
            # Provider calls keep no cookies (see transport.ProviderHttp).
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # aiohttp resends GET/PUT/DELETE once on a dropped connection: the resend could then fail
        # to connect and look "never sent". ProviderHttp owns retries. (aiohttp's own TestClient
        # sets this attribute the same way.)
        session._retry_connection = False
        self._session = session
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if _FORBIDDEN_HEADER_BYTES.search(
            b"\t".join(itertools.chain.from_iterable(request.headers.raw))
        ):
            raise httpx.LocalProtocolError("Illegal header name or value", request=request)
        try:
            response = await self._send(
                request.method,
                request.url,
                request.headers,
                # ProviderHttp's bodies are built in memory, so already read.
                request.content,
                request.extensions.get("timeout", {}),
                request.extensions.get("sni_hostname"),
            )
        except Exception as exc:
            _reraise(exc, request)
        return _httpx_response(response, request)

    async def exchange(
        self,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        content: bytes,
        timeouts: Mapping[str, float | None],
        max_bytes: int,
    ) -> ProviderAnswer:
        """``handle_async_request`` and reading the body, without httpx's models: the same
        checks, bytes sent and errors (an httpx request is built only for an error to carry).
        The usual answer, with a Content-Length within the cap and no content coding, is
        read whole; any other is read as on the other path (``read_capped``)."""
        # httpx encodes header text as ASCII (UnicodeEncodeError otherwise): so does this.
        if _FORBIDDEN_HEADER_BYTES.search(
            "\t".join(itertools.chain.from_iterable(headers.items())).encode("ascii")
        ):
            raise httpx.LocalProtocolError(
                "Illegal header name or value", request=httpx.Request(method, url)
            )
        try:
            response = await self._send(method, url, headers, content, timeouts, None)
        except Exception as exc:
            _reraise(exc, httpx.Request(method, url))
        answer_headers = response.headers
        declared = response.content_length
        if declared is None or declared > max_bytes or "content-encoding" in answer_headers:
            # The cap and the decoding as on the httpx path, by the same function.
            answer = _httpx_response(response, httpx.Request(method, url))
            try:
                body = await read_capped(answer, max_bytes)
            finally:
                await answer.aclose()
            return ProviderAnswer(response.status, answer_headers, body)
        try:
            # On any failure, cancellation included, read() closes the connection itself.
            body = await response.read()
        except Exception as exc:
            _reraise(exc, httpx.Request(method, url))
        return ProviderAnswer(response.status, answer_headers, body)

    async def _send(
        self,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        content: bytes,
        timeouts: Mapping[str, float | None],
        sni_hostname: str | None,
    ) -> aiohttp.ClientResponse:
        session = self._session or self._open_session()
        return await session.request(
            method,
            # As httpx encoded it: yarl would otherwise quote it again its own way (a "%2F" in
            # the query sent as "/").
            yarl.URL(str(url), encoded=True),
            proxy=self._proxy_for(url),
            headers=headers,
            data=content or None,
            # aiohttp would label a POST without a body application/octet-stream; httpx sends
            # no Content-Type there, and neither does the gateway on either backend. Asked per
            # request, only when there is none: a session-wide setting costs every request.
            skip_auto_headers=None if "content-type" in headers else _CONTENT_TYPE,
            allow_redirects=False,
            auto_decompress=False,
            compress=False,
            timeout=aiohttp.ClientTimeout(
                sock_connect=timeouts.get("connect"),
                sock_read=timeouts.get("read"),
                connect=timeouts.get("pool"),
            ),
            server_hostname=sni_hostname,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _proxy_for(self, url: httpx.URL) -> str | None:
        """The proxy for ``url``'s origin, decided once per origin (a provider has one)."""
        origin = (url.scheme, url.netloc)
        if origin not in self._proxy_by_origin:
            self._proxy_by_origin[origin] = environment_proxy(url, self._proxies)
        return self._proxy_by_origin[origin]


def _httpx_response(response: aiohttp.ClientResponse, request: httpx.Request) -> httpx.Response:
    extensions = {"http_version": b"HTTP/1.1"}
    if response.reason:
        extensions["reason_phrase"] = response.reason.encode()
    return httpx.Response(
        status_code=response.status,
        headers=response.raw_headers,
        stream=AiohttpResponseBody(response, request),
        request=request,
        extensions=extensions,
    )


class AiohttpResponseBody(httpx.AsyncByteStream):
    """aiohttp's response body for httpx, read failures translated like send failures."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK_BYTES):
                yield chunk
        except Exception as exc:
            _reraise(exc, self._request)

    async def aclose(self) -> None:
        # A connection whose body was not read to the end is closed here, never pooled.
        try:
            self._response.release()
            await self._response.wait_for_close()
        except Exception as exc:
            _reraise(exc, self._request)
