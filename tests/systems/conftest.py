from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio

from patchassign.sandbox import Sandbox


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(demo=6) as sb:
        yield sb
