"""A minimal driver of an adapter over plain aiohttp (the dispatcher's job, minus retries)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import yarl

from patchassign.systems import (
    Adapter,
    Conflict,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    Outcome,
    Retry,
    Unchanged,
)

if TYPE_CHECKING:
    import aiohttp

    from patchassign.changes import Change


async def send(session: aiohttp.ClientSession, req: HttpRequest) -> HttpResponse:
    url = yarl.URL(req.url, encoded=True)
    async with session.request(req.method, url, headers=req.headers, data=req.body) as r:
        return HttpResponse(r.status, r.headers, await r.read())


async def drive(
    adapter: Adapter,
    change: Change,
    session: aiohttp.ClientSession,
    *,
    between: Callable[[int], Awaitable[None] | None] | None = None,
    rounds: int = 4,
) -> tuple[Outcome | Unchanged, list[HttpRequest]]:
    """Read (if needed), prepare, send; on a recoverable conflict read again (bounded).

    ``between(round)`` runs after the read and before the write: tests use it to play
    a concurrent editor. Returns the final outcome and the write requests sent.
    """
    adapter.check(change)
    writes: list[HttpRequest] = []
    for n in range(rounds):
        current: Current | None = None
        if adapter.needs_read(change):
            got = adapter.current(change, await send(session, adapter.read(change)))
            if isinstance(got, Retry | Failed):
                return got, writes
            current = got
        step = adapter.prepare(change, current)
        if not isinstance(step, HttpRequest):
            return step, writes
        if between is not None:
            maybe = between(n)
            if maybe is not None:
                await maybe
        writes.append(step)
        outcome = adapter.outcome(change, await send(session, step))
        if not (isinstance(outcome, Conflict) and outcome.recoverable):
            return outcome, writes
    return outcome, writes
