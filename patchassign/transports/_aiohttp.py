"""The network transport: aiohttp. The only client-side network I/O in patchassign."""

from __future__ import annotations

import logging
import ssl
from typing import Self

import aiohttp
import yarl

from ..errors import ConfigError, ConnectError, ConnectionLost, ResponseTimeout, SetupError
from ..systems import HttpRequest, HttpResponse
from ..systems._base import printable

__all__ = ["AiohttpTransport"]

log = logging.getLogger("patchassign.transports")


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
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        limit: int = 64,
        verify_tls: bool = True,
        connect_timeout: float = 10.0,
        max_body: int = 16 * 1024 * 1024,
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
            # Awaited rather than entered: the same release as ``async with`` (below), one
            # coroutine level less on every resume of the request.
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


def _line(e: BaseException) -> str:
    """An error's text on one line, what the server sent in it escaped (aiohttp quotes a
    malformed answer's bytes in its messages)."""
    return printable(" ".join(str(e).split()))


def _host(url: yarl.URL) -> str:
    host = url.host or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{url.port}" if url.port is not None else host
