"""AiohttpTransport: each kind of network failure becomes the right typed error.

Against real sockets on 127.0.0.1 (a closed port, a plain server spoken to in TLS, a
server with a certificate nobody signed, a server that hangs up). Every test runs both
ways to the network: the lean send (aiohttp's own request path less what an owned
session never uses) and the public ``session.request`` (any other aiohttp version, or a
session patched over, as aioresponses does).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from patchassign import (
    ConnectError,
    ConnectionLost,
    Dispatcher,
    HttpRequest,
    HttpResponse,
    Merge,
    ResponseTimeout,
    SetupError,
    TransportError,
)
from patchassign.systems import PerscomAdapter
from patchassign.transports import AiohttpTransport, _aiohttp

from .http_mock import aioresponses

LIMIT = 64 * 1024


class Way:
    def __init__(self, name: str) -> None:
        self.name = name
        self.lean_sends = 0


@pytest.fixture(autouse=True, params=["lean", "public"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Way]:
    """Which way to the network the transport takes in this test (and a count of the
    lean sends, to show which it took)."""
    if request.param == "public":
        monkeypatch.setattr(_aiohttp, "_REQUEST", None)
    elif _aiohttp._REQUEST is None:
        pytest.skip(f"aiohttp {aiohttp.__version__} has no lean send (not in _LEAN_VERSIONS)")
    way = Way(request.param)
    lean = AiohttpTransport._lean

    async def counted(self: AiohttpTransport, *args: Any) -> aiohttp.ClientResponse:
        way.lean_sends += 1
        return await lean(self, *args)

    monkeypatch.setattr(AiohttpTransport, "_lean", counted)
    yield way
    if way.name == "public":
        assert way.lean_sends == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_asyncio.fixture
async def server() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    async def hang_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        return web.json_response({})

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (LIMIT + 1), content_type="application/json")

    async def endless(request: web.Request) -> web.StreamResponse:
        # No length, chunk after chunk until the client goes away (a runaway stream).
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(10_000):
            await response.write(b"y" * 4096)
        return response

    async def bomb(request: web.Request) -> web.Response:
        # A small compressed body that unpacks past the limit.
        packed = gzip.compress(b"{" + b" " * (LIMIT * 8) + b"}")
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=packed, headers=headers)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/big", big)
    app.router.add_get("/endless", endless)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/slow", slow)
    app.router.add_put("/hang-up", hang_up)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def send(url: str, method: str = "GET", timeout: float = 1.0) -> None:
    async with AiohttpTransport() as t:
        await t.send(HttpRequest(method, url, {}), timeout=timeout)


async def test_an_answer(server: str) -> None:
    async with AiohttpTransport() as t:
        r = await t.send(HttpRequest("GET", f"http://{server}/ok", {}), timeout=2)
    assert r.status == 200
    assert r.json() == {"ok": True}


async def test_a_closed_port_is_a_connect_error_nothing_sent() -> None:
    port = free_port()
    with pytest.raises(ConnectError) as e:
        await send(f"http://127.0.0.1:{port}/x")
    assert not isinstance(e.value, SetupError)
    assert not e.value.sent
    assert e.value.host == f"127.0.0.1:{port}"
    assert f"127.0.0.1:{port}" in str(e.value)


async def test_tls_to_a_plain_port_is_a_setup_error(server: str) -> None:
    with pytest.raises(SetupError) as e:
        await send(f"https://{server}/ok")
    assert not e.value.sent


async def test_an_unresolvable_host_is_a_setup_error() -> None:
    with pytest.raises(SetupError, match="does not resolve"):
        await send("http://no-such-host.invalid/x", timeout=30)


async def test_no_answer_in_time_is_a_response_timeout(server: str) -> None:
    with pytest.raises(ResponseTimeout) as e:
        await send(f"http://{server}/slow", timeout=0.2)
    assert e.value.sent


async def test_a_hang_up_after_the_request_is_connection_lost(server: str) -> None:
    with pytest.raises(ConnectionLost) as e:
        await send(f"http://{server}/hang-up", method="PUT")
    assert e.value.sent


async def test_every_failure_is_a_transport_error() -> None:
    for cls in (ConnectError, SetupError, ResponseTimeout, ConnectionLost):
        assert issubclass(cls, TransportError)


@pytest.mark.parametrize("path", ["/big", "/endless", "/bomb"])
async def test_an_answer_past_the_size_limit_is_connection_lost_not_read(
    server: str, path: str
) -> None:
    # A URL that serves a download, a runaway stream, a compressed bomb: refused at the
    # limit (decompressed bytes), so 64 such answers in flight cannot exhaust memory.
    async with AiohttpTransport(max_body=LIMIT) as t:
        with pytest.raises(ConnectionLost, match=r"larger than 65,536 bytes") as e:
            await t.send(HttpRequest("GET", f"http://{server}{path}", {}), timeout=5)
        assert e.value.sent
        assert e.value.host == server
        # The transport goes on: the next request gets its answer.
        r = await t.send(HttpRequest("GET", f"http://{server}/ok", {}), timeout=2)
        assert r.json() == {"ok": True}


async def test_an_answer_at_the_size_limit_is_read(server: str) -> None:
    async with AiohttpTransport(max_body=LIMIT + 1) as t:
        r = await t.send(HttpRequest("GET", f"http://{server}/big", {}), timeout=5)
    assert len(r.body) == LIMIT + 1


def test_the_size_limit_is_positive() -> None:
    with pytest.raises(ValueError, match="max_body"):
        AiohttpTransport(max_body=0)


#: Answers no HTTP server should give (a broken proxy, a hostile host, a port that
#: speaks another protocol): each is an answer or a TransportError, never another error.
MALFORMED = [
    b"garbage\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 5\r\n\r\nnotbr",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 5_000 + b"Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 \x1b[2J\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"\x16\x03\x01\x00\x05hello",
    b"",
]


@pytest.mark.parametrize("answer", MALFORMED, ids=lambda a: repr(a[:24]))
async def test_a_malformed_answer_is_an_answer_or_a_transport_error(answer: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        got: HttpResponse | TransportError
        async with AiohttpTransport(max_body=LIMIT) as t:
            try:
                got = await t.send(
                    HttpRequest("PUT", f"http://127.0.0.1:{port}/x", {}, b"{}"), timeout=2
                )
            except TransportError as e:
                got = e
        if isinstance(got, TransportError):
            assert got.host == f"127.0.0.1:{port}"
            assert str(got).isprintable(), str(got)  # one line, no escape sequences
        else:
            assert 100 <= got.status <= 999
    finally:
        srv.close()
        await srv.wait_closed()


async def test_a_redirect_is_not_followed_and_the_error_says_where_it_points() -> None:
    """An API URL that answers with a redirect (http:// for https://, a moved host, a
    sign-on page in the way): one request, no second to wherever the server says (a
    write's body and credentials would go with it), and every message names the target
    without what a redirect can carry (user info, a query with a sign-on token)."""
    hits: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        hits.append(request.method)
        raise web.HTTPMovedPermanently(
            "https://someone:pa55@sso.example.test:8443/login/?SAMLRequest=s3cret#frag"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", moved)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    adapter = PerscomAdapter(f"http://127.0.0.1:{runner.addresses[0][1]}", "t0ken")
    change = Merge(system="perscom", record=1, merge={"user_id": 7})
    try:
        async with Dispatcher([adapter]) as d:
            result = await d.send(change)
            check = (await d.check([change]))["perscom"]
    finally:
        await runner.cleanup()
    assert hits == ["PATCH", "GET"]  # the write, then the check's read: nothing followed
    says = "HTTP 301, redirected to https://sso.example.test:8443/login/?..."
    assert result.status == "failed"
    assert check.status == 301
    assert check.authenticated is None  # the API was not reached: nothing is known
    assert not check.ok
    for text in (result.error, check.error):
        assert text is not None
        assert says in text
        assert not {"s3cret", "pa55", "someone"} & set(re.split(r"\W+", text))


async def test_an_owned_session_takes_the_lean_send_on_this_aiohttp(server: str, way: Way) -> None:
    async with AiohttpTransport() as t:
        for _ in range(3):
            r = await t.send(HttpRequest("GET", f"http://{server}/ok", {}), timeout=2)
            assert r.json() == {"ok": True}
    assert way.lean_sends == (3 if way.name == "lean" else 0)


async def test_lean_false_takes_the_public_way(server: str, way: Way) -> None:
    async with AiohttpTransport(lean=False) as t:
        r = await t.send(HttpRequest("GET", f"http://{server}/ok", {}), timeout=2)
    assert r.json() == {"ok": True}
    assert way.lean_sends == 0


async def test_a_session_of_the_callers_takes_the_public_way(server: str, way: Way) -> None:
    """A caller's session may have what the lean send leaves out (default headers,
    cookies, a proxy, middlewares, trace configs): it is used as it is."""
    seen: list[str] = []

    async def middleware(req: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        seen.append(req.headers["X-Who"])
        return await handler(req)  # type: ignore[no-any-return]

    async with aiohttp.ClientSession(
        headers={"X-Who": "caller"}, middlewares=(middleware,)
    ) as session:
        t = AiohttpTransport(session=session)
        r = await t.send(HttpRequest("GET", f"http://{server}/ok", {}), timeout=2)
    assert r.status == 200
    assert seen == ["caller"]
    assert way.lean_sends == 0


async def test_a_session_patched_over_is_honoured(way: Way) -> None:
    """aioresponses (a user's tests of a service that embeds the dispatcher) patches
    ``ClientSession._request``: the transport goes through the patch, never around it
    to the network."""
    url = "http://127.0.0.1:9/mocked"  # the discard port: nothing answers there
    with aioresponses() as mocked:
        mocked.get(url, payload={"mocked": True})
        async with AiohttpTransport() as t:
            r = await t.send(HttpRequest("GET", url, {}), timeout=2)
    assert r.json() == {"mocked": True}
    assert way.lean_sends == 0


@pytest.mark.parametrize(
    "headers",
    [{"Accept": "text/plain", "accept": "application/json"}, [("Accept", "application/json")]],
    ids=["names-differing-in-case", "not-a-dict"],
)
async def test_headers_the_lean_send_would_pass_otherwise_take_the_public_way(
    way: Way, headers: Any
) -> None:
    """``session.request`` keeps the last of two names that differ only in case; sent
    as given, both would go. Such headers (and headers that are not a dict) go the
    public way, and the server sees one header, the last."""
    got: list[list[str]] = []

    async def echo(request: web.Request) -> web.Response:
        got.append(request.headers.getall("Accept"))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/echo", echo)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with AiohttpTransport() as t:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/echo"
            await t.send(HttpRequest("GET", url, headers), timeout=2)
    finally:
        await runner.cleanup()
    assert got == [["application/json"]]
    assert way.lean_sends == 0


async def test_a_url_with_user_info_takes_the_public_way(server: str, way: Way) -> None:
    async with AiohttpTransport() as t:
        r = await t.send(HttpRequest("GET", f"http://u:p@{server}/ok", {}), timeout=2)
    assert r.status == 200
    assert way.lean_sends == 0


@pytest_asyncio.fixture
async def tls_server() -> AsyncIterator[str]:
    """A server whose certificate a CA of its own signed (no system trusts it)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"tls": True})

    app = web.Application()
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    yield f"127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_certificate_nobody_trusts_is_a_setup_error(tls_server: str, way: Way) -> None:
    async with AiohttpTransport() as t:
        with pytest.raises(SetupError, match="TLS certificate refused") as e:
            await t.send(HttpRequest("GET", f"https://{tls_server}/ok", {}), timeout=5)
    assert not e.value.sent
    assert e.value.host == tls_server
    assert way.lean_sends == (1 if way.name == "lean" else 0)


async def test_tls_unverified_when_turned_off(tls_server: str, way: Way) -> None:
    async with AiohttpTransport(verify_tls=False) as t:
        r = await t.send(HttpRequest("GET", f"https://{tls_server}/ok", {}), timeout=5)
    assert r.json() == {"tls": True}


def test_the_lean_send_is_off_for_an_aiohttp_it_does_not_follow(
    monkeypatch: pytest.MonkeyPatch, way: Way
) -> None:
    """Another minor version, or a private call that lost a parameter the lean send
    passes (a patch release reshaping it): no lean send, from the import on."""
    if _aiohttp._lean_ready() is None:
        pytest.skip(f"aiohttp {aiohttp.__version__}: already off")
    version = aiohttp.__version__
    monkeypatch.setattr(aiohttp, "__version__", "3.99.0")
    assert _aiohttp._lean_ready() is None
    monkeypatch.setattr(aiohttp, "__version__", version)
    assert _aiohttp._lean_ready() is aiohttp.ClientSession._request

    def reshaped(self: object, method: str, url: object) -> None: ...

    monkeypatch.setattr(_aiohttp, "_TAKES", {**_aiohttp._TAKES, reshaped: {"method", "loop"}})
    assert _aiohttp._lean_ready() is None
