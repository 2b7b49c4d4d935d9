"""The network transport: aiohttp. The only client-side network I/O in patchassign."""

from __future__ import annotations

import inspect
import logging
import ssl
from collections.abc import Callable
from typing import Any, Self

import aiohttp
import yarl
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.helpers import TimeoutHandle

from ..errors import ConfigError, ConnectError, ConnectionLost, ResponseTimeout, SetupError
from ..systems import HttpRequest, HttpResponse
from ..systems._base import printable

__all__ = ["AiohttpTransport"]

log = logging.getLogger("patchassign.transports")

#: aiohttp minor versions whose private request path the lean send follows (see
#: :meth:`AiohttpTransport._lean`): checked line by line against ``ClientSession._request``
#: of each. Any other version, or a session method patched over (aioresponses, a
#: user's instrumentation), takes the public ``session.request``.
_LEAN_VERSIONS = frozenset({(3, 14)})


#: What the lean send passes to aiohttp's private calls: checked against their
#: signatures at import, so a changed shape turns the lean send off rather than failing.
_TAKES: dict[Callable[..., Any], set[str]] = {
    ClientRequest.__init__: {
        "method",
        "url",
        "headers",
        "data",
        "loop",
        "response_class",
        "timer",
        "session",
        "ssl",
        "traces",
    },
    ResponseHandler.set_response_params: {
        "timer",
        "skip_payload",
        "read_until_eof",
        "auto_decompress",
        "read_timeout",
        "read_bufsize",
        "timeout_ceil_threshold",
        "max_line_size",
        "max_field_size",
        "max_headers",
    },
    TimeoutHandle.__init__: {"loop", "timeout", "ceil_threshold"},
    aiohttp.BaseConnector.connect: {"req", "traces", "timeout"},
}


def _lean_ready() -> Any:
    """``ClientSession._request`` as imported, when this aiohttp is one the lean send
    follows; ``None`` otherwise."""
    try:
        version = tuple(int(x) for x in aiohttp.__version__.split(".")[:2])
        if version not in _LEAN_VERSIONS:
            return None
        for function, names in _TAKES.items():
            if not names <= set(inspect.signature(function).parameters):
                return None  # a patch release reshaped them
    except (ValueError, TypeError):  # pragma: no cover - an aiohttp we do not know
        return None
    return aiohttp.ClientSession._request


#: The session's and connector's settings the lean send reads (those ``_request``
#: reads): all present, or no lean send.
_SETTINGS = (
    "_loop",
    "_connector",
    "_response_class",
    "_auto_decompress",
    "_read_bufsize",
    "_max_line_size",
    "_max_field_size",
    "_max_headers",
)


_REQUEST = _lean_ready()


class AiohttpTransport:
    """Sends requests over one aiohttp ``ClientSession``.

    By default it owns its session: a connection pool of ``limit`` connections, no
    cookies, no proxy from the environment, TLS verified, and aiohttp's silent resend of
    an idempotent request after a dropped connection turned off (a second write nobody
    decided on). A caller-supplied ``session`` is used as it is and left open; it keeps
    aiohttp's own resend behaviour.

    Args:
        session: An aiohttp session to use instead of an owned one.
        limit: Connections in the owned pool (the dispatcher passes its ``concurrency``,
            so a request never waits for a connection inside its timeout: aiohttp#10313).
        verify_tls: Verify servers' certificates. Turning it off is logged as a warning.
        connect_timeout: Seconds a connection may take to open (within the request's
            timeout).
        max_body: Largest answer body read, in bytes after decompression (16 MiB): a
            larger one (a download, a stream that never ends, a compressed bomb) is
            refused as :class:`~patchassign.errors.ConnectionLost` at that size, so that
            the answers in flight cannot exhaust memory.
        lean: On an owned session, send through aiohttp's own request path less what
            that session never uses (cookies, proxies, redirects, middlewares, ...),
            about 6% less client CPU per request, where the installed aiohttp is a
            version this path follows (3.14); otherwise, or with ``lean=False``,
            through ``session.request``. A session patched over (aioresponses) is always
            sent through as patched.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        limit: int = 64,
        verify_tls: bool = True,
        connect_timeout: float = 10.0,
        max_body: int = 16 * 1024 * 1024,
        lean: bool = True,
    ) -> None:
        if max_body < 1:
            raise ConfigError(f"max_body must be at least 1 byte, got {max_body}")
        self._session = session
        self._own = session is None
        self.limit = limit
        self.verify_tls = verify_tls
        self.connect_timeout = connect_timeout
        self.max_body = max_body
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self.lean = lean
        self._lean_ok = False  # set when an owned session is opened

    def __repr__(self) -> str:
        return f"<AiohttpTransport limit={self.limit} verify_tls={self.verify_tls}>"

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def open(self) -> aiohttp.ClientSession:
        """The session, created on first use when the transport owns it."""
        if self._session is None:
            if not self.verify_tls:
                log.warning(
                    "TLS certificate verification is OFF: any server can impersonate the "
                    "target systems and read the credentials sent to them"
                )
            connector = aiohttp.TCPConnector(
                limit=self.limit, limit_per_host=0, ttl_dns_cache=300, ssl=self.verify_tls
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
            )
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
            session = self._session
            self._lean_ok = (
                self.lean
                and _REQUEST is not None
                and all(hasattr(session, name) for name in _SETTINGS)
                and hasattr(session.connector, "_timeout_ceil_threshold")
                and hasattr(session.connector, "allowed_protocol_schema_set")
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session if the transport owns it."""
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(
                total=seconds, sock_connect=min(self.connect_timeout, seconds)
            )
            if len(self._timeouts) < 64:  # the policy's timeout, reused; not every remainder
                self._timeouts[seconds] = timeout
        return timeout

    async def send(self, request: HttpRequest, *, timeout: float) -> HttpResponse:
        """Send ``request``; raise a :class:`~patchassign.errors.TransportError` subclass
        when there is no answer (see :class:`~patchassign.transports.Transport`)."""
        session = self._session or self.open()
        url = yarl.URL(request.url, encoded=True)
        limits = self._timeout(timeout)
        try:
            r: aiohttp.ClientResponse
            if (
                self._lean_ok
                and type(session)._request is _REQUEST
                and url.raw_user is None
                and url.raw_password is None
                and _distinct(request.headers)
            ):
                r = await self._lean(session, request, url, limits)
            else:
                # Awaited rather than entered: the same release as ``async with`` (below),
                # one coroutine level less on every resume of the request.
                r = await session.request(
                    request.method,
                    url,
                    headers=request.headers,
                    data=request.body,
                    allow_redirects=False,
                    timeout=limits,
                )
            try:
                # What ``r.read()`` does (a block at a time until the end), bounded.
                content = r.content
                blocks = []
                size = 0
                while block := await content.readany():
                    size += len(block)
                    if size > self.max_body:
                        raise ConnectionLost(
                            f"the answer (HTTP {r.status}) is larger than {self.max_body:,} "
                            "bytes: not read",
                            host=_host(url),
                        )
                    blocks.append(block)
            finally:
                r.release()  # a body not read to its end closes the connection
                await r.wait_for_close()
            return HttpResponse(r.status, r.headers, b"".join(blocks))
        except aiohttp.ConnectionTimeoutError:
            raise ConnectError(
                f"cannot connect within {limits.sock_connect:g}s", host=_host(url)
            ) from None
        except TimeoutError:
            raise ResponseTimeout(f"no answer within {timeout:.3g}s", host=_host(url)) from None
        except aiohttp.ClientConnectorDNSError as e:
            raise SetupError(
                f"the host name does not resolve: {e.os_error}", host=_host(url)
            ) from None
        except aiohttp.ClientConnectorCertificateError as e:
            raise SetupError(
                f"TLS certificate refused: {e.certificate_error}", host=_host(url)
            ) from None
        except aiohttp.ClientSSLError as e:
            raise SetupError(f"TLS failed: {e.os_error}", host=_host(url)) from None
        except aiohttp.ClientConnectorError as e:
            if isinstance(e.os_error, ssl.SSLError):
                raise SetupError(f"TLS failed: {e.os_error}", host=_host(url)) from None
            raise ConnectError(f"cannot connect: {e.os_error}", host=_host(url)) from None
        except aiohttp.ServerFingerprintMismatch:
            raise SetupError("TLS certificate fingerprint mismatch", host=_host(url)) from None
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as e:
            raise SetupError(f"not a usable URL: {e}", host=_host(url)) from None
        except aiohttp.ClientError as e:
            raise ConnectionLost(
                f"connection failed: {type(e).__name__}: {_line(e)}", host=_host(url)
            ) from None
        except ssl.SSLError as e:  # a TLS error after the handshake
            raise ConnectionLost(f"TLS error: {_line(e)}", host=_host(url)) from None

    async def _lean(
        self,
        session: aiohttp.ClientSession,
        request: HttpRequest,
        url: yarl.URL,
        limits: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        """What ``session.request`` does for a request of ours to the session we own,
        without what that session never uses: default headers, cookies, proxies, netrc,
        auth from the URL, redirects, retries, trace configs, middlewares, status checks.

        The same ``ClientRequest``, connection, timeouts, response and errors, from the
        same aiohttp code: this follows ``ClientSession._request`` of the versions in
        ``_LEAN_VERSIONS``, step for step, less the steps above. It saves about 6% of
        the client's CPU per request (``python -m benchmarks.dispatch --breakdown``:
        the loop over this transport, one way and the other)."""
        loop = session._loop
        connector = session._connector
        if session.closed or connector is None:
            raise RuntimeError("Session is closed")
        if not url.raw_host:
            raise aiohttp.InvalidUrlClientError(url)
        if url.scheme not in connector.allowed_protocol_schema_set:
            raise aiohttp.NonHttpUrlClientError(url)
        tm = TimeoutHandle(loop, limits.total, ceil_threshold=limits.ceil_threshold)
        handle = tm.start()
        req: ClientRequest | None = None
        resp: aiohttp.ClientResponse | None = None
        try:
            timer = tm.timer()
            with timer:
                req = ClientRequest(
                    request.method,
                    url,
                    headers=request.headers,
                    data=request.body,
                    loop=loop,
                    response_class=session._response_class,
                    timer=timer,
                    session=session,
                    ssl=True,  # the connector's: verified unless verify_tls=False
                    traces=[],
                )
                try:
                    try:
                        conn = await connector.connect(req, traces=[], timeout=limits)
                    except TimeoutError as e:
                        raise aiohttp.ConnectionTimeoutError(
                            f"Connection timeout to host {req.url}"
                        ) from e
                    assert conn.protocol is not None
                    conn.protocol.set_response_params(
                        timer=timer,
                        skip_payload=req.method == "HEAD",
                        read_until_eof=True,
                        auto_decompress=session._auto_decompress,
                        read_timeout=limits.sock_read,
                        read_bufsize=session._read_bufsize,
                        timeout_ceil_threshold=connector._timeout_ceil_threshold,
                        max_line_size=session._max_line_size,
                        max_field_size=session._max_field_size,
                        max_headers=session._max_headers,
                    )
                    try:
                        resp = await req.send(conn)
                        try:
                            await resp.start(conn)
                        except BaseException:
                            resp.close()
                            raise
                    except BaseException:
                        conn.close()
                        raise
                except aiohttp.ClientError:
                    raise
                except OSError as e:
                    if e.errno is None and isinstance(e, TimeoutError):
                        raise
                    raise aiohttp.ClientOSError(*e.args) from e
            if req._body is not None:
                await req._body.close()
            if handle is not None:  # the total timeout, until the answer is read
                if resp.connection is not None:
                    resp.connection.add_callback(handle.cancel)
                else:
                    handle.cancel()
            return resp
        except BaseException:
            tm.close()
            if handle is not None:
                handle.cancel()
            if resp is not None:
                resp.close()
            if req is not None and req._body is not None:
                await req._body.close()
            raise


def _distinct(headers: object) -> bool:
    """A dict of headers no two of whose names differ only in case: what the lean send
    passes on as it is (``session.request`` keeps the last of such names)."""
    return type(headers) is dict and len(headers) == len({k.lower() for k in headers})


def _line(e: BaseException) -> str:
    """An error's text on one line, what the server sent in it escaped (aiohttp quotes a
    malformed answer's bytes in its messages)."""
    return printable(" ".join(str(e).split()))


def _host(url: yarl.URL) -> str:
    host = url.host or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.port}" if url.port is not None else host
