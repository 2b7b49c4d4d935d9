"""AiohttpTransport: each kind of network failure becomes the right typed error.

Against real sockets on 127.0.0.1 (a closed port, a plain server spoken to in TLS, a
server that hangs up) and aioresponses for an unresolvable name.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from patchassign import (
    ConnectError,
    ConnectionLost,
    HttpRequest,
    ResponseTimeout,
    SetupError,
    TransportError,
)
from patchassign.transports import AiohttpTransport


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

    app = web.Application()
    app.router.add_get("/ok", ok)
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
