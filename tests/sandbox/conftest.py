from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest_asyncio

from patchassign.sandbox import Sandbox


class Answer(msgspec.Struct):
    status: int
    headers: dict[str, str]
    body: Any


async def call(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Answer:
    """One request with plain aiohttp; the body decoded as JSON when there is one."""
    async with session.request(method, url, **kwargs) as r:
        raw = await r.read()
        return Answer(r.status, dict(r.headers), msgspec.json.decode(raw) if raw else None)


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(demo=5) as sb:
        yield sb
