"""Timeouts against a real loopback server (aioresponses does not apply aiohttp timeouts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from aiohttp import web

from patchassign.changes import Assign, Delegate
from patchassign.dispatch import Dispatcher, RetryPolicy
from patchassign.systems import FindableAdapter, PerscomAdapter


class Slow:
    """A Findable-like delegate that answers late but applies anyway, and a slow PATCH."""

    def __init__(self) -> None:
        self.record: dict[str, Any] = {
            "id": "a1",
            "status": "pending",
            "assigneeEmail": "ada@example.com",
            "allowDelegation": True,
        }
        self.posts = 0
        self.gets = 0
        self.patches = 0
        self.url = ""

    async def get(self, request: web.Request) -> web.Response:
        self.gets += 1
        return web.json_response(self.record)

    async def delegate(self, request: web.Request) -> web.Response:
        self.posts += 1
        body = await request.json()
        await asyncio.sleep(0.6)  # the client gave up by now; the work goes on
        self.record = {**self.record, "status": "delegated", "delegatedTo": body["toUpn"]}
        return web.json_response({"id": "a1~d1"}, status=201)

    async def read_p(self, request: web.Request) -> web.Response:
        return web.json_response({"data": {"id": 1, "user_id": 1}})

    async def patch(self, request: web.Request) -> web.Response:
        self.patches += 1
        await asyncio.sleep(1.5)
        return web.json_response({"data": {}})


@pytest_asyncio.fixture
async def slow() -> AsyncIterator[Slow]:
    s = Slow()
    app = web.Application()
    app.router.add_get("/assignments/a1", s.get)
    app.router.add_post("/assignments/a1/delegate", s.delegate)
    app.router.add_get("/v2/assignment-records/1", s.read_p)
    app.router.add_patch("/v2/assignment-records/1", s.patch)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    s.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield s
    await runner.cleanup()


async def test_a_timed_out_delegate_is_read_back_not_resent(slow: Slow) -> None:
    policy = RetryPolicy(timeout=0.2, base=0.5, cap=0.5)  # the read-back comes after it landed
    async with Dispatcher([FindableAdapter(slow.url, "t")], retry=policy, seed=2) as d:
        r = await d.send(Delegate(system="findable", record="a1", to="eve@example.com"))
        await asyncio.sleep(0.7)  # let the server finish what it was doing
    assert slow.posts == 1, "a delegate must never be sent twice"
    assert slow.record["delegatedTo"] == "eve@example.com"
    assert r.status == "applied"
    assert not r.unconfirmed
    assert slow.gets >= 2  # before the POST, and after the timeout


async def test_the_deadline_bounds_a_change_that_gets_no_answer(slow: Slow) -> None:
    policy = RetryPolicy(deadline=0.8, timeout=0.3, base=0.01, cap=0.01)
    adapter = PerscomAdapter(slow.url, "t", notifications=False)
    async with Dispatcher([adapter], retry=policy) as d:
        t = time.monotonic()
        r = await d.send(Assign(system="perscom", record=1, to="7"))
        took = time.monotonic() - t
    assert took < 2.5
    assert r.status == "failed"
    assert r.error is not None
    assert "deadline" in r.error or "no answer" in r.error
    assert r.unconfirmed  # a PATCH went out and nobody knows whether it landed
    assert slow.patches >= 2
