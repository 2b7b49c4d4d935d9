"""What the fake servers share: lifecycle, fault injection, counters, JSON helpers."""

from __future__ import annotations

import abc
import asyncio
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from aiohttp import web

from ..errors import ConfigError
from .faults import Faults, FaultsSpec, parse_faults

if TYPE_CHECKING:
    from ..changes import Change
    from ..systems import BaseAdapter

__all__ = ["LOOPBACK", "Clock", "FakeServer", "Stats"]

LOOPBACK = frozenset({"127.0.0.1", "::1"})

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_MAX_BODY = 4 * 1024 * 1024


class Stats:
    """What a fake server received and did, for tests that assert exactly-once effects.

    Attributes:
        requests: ``(endpoint, status)`` -> count of answered requests.
        dropped: ``"before"`` / ``"after"`` -> connections closed without an answer,
            before or after the change was applied.
        writes: record key -> number of changes applied to it (a second application of
            the same change shows up here as 2).
        edits: record key -> number of changes made by the concurrent editor.
        late: writes held and applied late (the ``late`` fault).
        echoed: answers that echoed the request's credential (the ``echo`` fault).
        peak: the most requests the server was handling at once.
    """

    __slots__ = ("dropped", "echoed", "edits", "late", "peak", "requests", "writes")

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.dropped: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()
        self.edits: Counter[str] = Counter()
        self.late = 0
        self.echoed = 0
        self.peak = 0

    def count(self, endpoint: str | None = None, status: int | None = None) -> int:
        """Requests answered, optionally only those of one endpoint and/or status."""
        return sum(
            n
            for (e, s), n in self.requests.items()
            if (endpoint is None or e == endpoint) and (status is None or s == status)
        )

    def reset(self) -> None:
        """Forget everything counted so far."""
        for c in (self.requests, self.dropped, self.writes, self.edits):
            c.clear()
        self.late = self.echoed = 0

    def __repr__(self) -> str:
        return (
            f"Stats(requests={dict(self.requests)}, dropped={dict(self.dropped)}, "
            f"writes={sum(self.writes.values())}, edits={sum(self.edits.values())})"
        )


class Clock:
    """UTC timestamps that strictly increase, even for changes within one microsecond."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = datetime(2000, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        t = datetime.now(UTC)
        if t <= self._last:
            t = self._last + timedelta(microseconds=1)
        self._last = t
        return t


class FakeServer(abc.ABC):
    """One fake system on 127.0.0.1: records in memory, its API, faults and counters.

    Subclasses add the system's routes and error shapes. Use as ``async with`` or call
    :meth:`start` and :meth:`close`.
    """

    system: ClassVar[str]
    #: Endpoint (route) names that change records; ``Faults.writes_only`` uses them.
    write_endpoints: ClassVar[frozenset[str]]
    #: Requests in progress beyond which the server answers 429 (Kintone: 100).
    max_concurrent: ClassVar[int | None] = None
    #: A field the concurrent editor changes; never one an assignment change touches.
    editor_field: ClassVar[str]

    def __init__(
        self,
        *,
        faults: FaultsSpec = None,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in LOOPBACK:
            raise ConfigError(f"the sandbox binds loopback only, not {host!r}")
        self.faults: Faults = parse_faults(faults)
        self.token = token or secrets.token_urlsafe(18)
        self.records: dict[str, dict[str, Any]] = {}
        self.stats = Stats()
        self.clock = Clock()
        self._host = host
        self._port = port
        self._rng = random.Random(self.faults.seed)  # noqa: S311 (reproducible faults, not secrets)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._inflight = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.app = web.Application(middlewares=[self._middleware], client_max_size=_MAX_BODY)
        self.add_routes(self.app.router)

    def __repr__(self) -> str:
        # The token is a credential: never shown.
        return f"<{type(self).__name__} {self.url or 'stopped'} records={len(self.records)}>"

    # ---- what each system defines -------------------------------------------------

    @abc.abstractmethod
    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the system's endpoints, each with a route ``name``."""

    @abc.abstractmethod
    def credential(self, request: web.Request) -> str | None:
        """The request's credential if it is valid, else ``None`` (answered 401)."""

    @abc.abstractmethod
    def error(self, status: int, message: str, **extra: Any) -> web.Response:
        """An error answer in the system's own body shape."""

    @abc.abstractmethod
    def seed(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Store records (the system's read shape; server-managed fields are filled)."""

    @abc.abstractmethod
    def edit(self, key: str) -> None:
        """The concurrent editor: change ``editor_field`` of a record and its version."""

    @abc.abstractmethod
    def adapter(self) -> BaseAdapter:
        """The system's adapter, pointed at this server with its credentials."""

    # ---- its demo data: records held by team A, the plan that moves them to team B ----

    @classmethod
    @abc.abstractmethod
    def demo_record(cls, i: int) -> dict[str, Any]:
        """Demo record ``i`` (from 1) in the seed shape, held by team A (``_demo``)."""

    @classmethod
    @abc.abstractmethod
    def demo_change(cls, i: int) -> Change:
        """The change that moves demo record ``i`` to team B. It names who holds the
        record now (``expect``) where the system can tell, so a record moved by someone
        else ends as a conflict, not forced."""

    @abc.abstractmethod
    def demo_mismatches(self, ids: Iterable[int]) -> Iterator[tuple[int, str]]:
        """``(i, what is wrong)`` for each demo record in ``ids`` not as the plan wants."""

    @abc.abstractmethod
    def move_elsewhere(self, i: int) -> None:
        """Someone else reassigns demo record ``i`` to a person in neither team."""

    def settings(self) -> tuple[dict[str, Any], dict[str, str]]:
        """This server as a ``[systems.<name>]`` table, and the environment variables the
        table names (its credentials): what ``patchassign demo`` and ``sandbox
        --write-config`` write. The default: ``url`` and ``token_env``."""
        var = f"DEMO_{self.system.upper()}_TOKEN"
        return {"url": self.url, "token_env": var}, {var: self.token}

    def throttled(self, retry_after: float) -> web.Response:
        """A 429 answer with the system's retry headers (default: ``Retry-After``)."""
        resp = self.error(429, "Too many requests")
        resp.headers["Retry-After"] = _seconds(retry_after)
        return resp

    def unauthorized(self) -> web.Response:
        return self.error(401, "Unauthenticated")

    def decorate(self, response: web.StreamResponse) -> None:  # noqa: B027 (optional hook)
        """Add headers every answer of the system carries (Kintone: concurrency)."""

    # ---- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41235`` (empty before :meth:`start`)."""
        if self._runner is None or not self._runner.addresses:
            return ""
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    async def start(self) -> None:
        """Listen on the loopback address (a free port unless one was given)."""
        if self._runner is not None:
            raise RuntimeError(f"{self.system} sandbox server already started")
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await self._site.start()
        self._port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = self._site = None

    async def go_down(self) -> None:
        """Simulate an outage: stop listening and cut open connections (see :meth:`come_back`)."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        server = self._runner.server if self._runner is not None else None
        if server is not None:
            for conn in list(server.connections):
                conn.force_close()

    async def come_back(self) -> None:
        """End an outage: listen again on the same port."""
        if self._runner is not None and self._site is None:
            await self._listen()

    async def __aenter__(self) -> FakeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- request path ---------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route
        endpoint = route.name or "unknown"
        self._inflight += 1
        if self._inflight > self.stats.peak:
            self.stats.peak = self._inflight
        try:
            resp = await self._handle(request, handler, endpoint)
            if resp is None:  # connection closed: the client never sees this answer
                return web.Response(status=599)
            self.decorate(resp)  # while this request still counts as running
        finally:
            self._inflight -= 1
        self.stats.requests[endpoint, resp.status] += 1
        return resp

    async def _handle(
        self, request: web.Request, handler: Any, endpoint: str
    ) -> web.StreamResponse | None:
        limit = self.max_concurrent
        if limit is not None and self._inflight > limit:
            return self.too_busy()
        who = self.credential(request)
        if who is None:
            return self.unauthorized()
        f = self.faults
        if f.rate_limit is not None:
            wait = self._take(who, f.rate_limit, f.burst)
            if wait:
                return self.throttled(wait)
        drop_after = False
        if f.any_random and (not f.writes_only or endpoint in self.write_endpoints):
            draw = self._rng.random
            if f.throttle and draw() < f.throttle:
                return self.throttled(f.retry_after)
            if f.unavailable and draw() < f.unavailable:
                return self.error(503, "Service unavailable")
            if f.server_error and draw() < f.server_error:
                return self.error(500, "Internal server error")
            if f.echo and draw() < f.echo:
                self.stats.echoed += 1
                return self.error(500, f"Internal server error (request credential: {who})")
            if f.gateway and draw() < f.gateway:
                return web.Response(
                    status=200,
                    text="<html><body>Down for maintenance</body></html>",
                    content_type="text/html",
                )
            if f.drop and draw() < f.drop:
                if draw() < 0.5:
                    await request.read()
                    self.stats.dropped["before"] += 1
                    self._cut(request)
                    return None
                drop_after = True
            delay = f.latency
            if f.jitter:
                delay += draw() * f.jitter
            if f.spikes and draw() < f.spikes:
                delay += f.spike
            if f.late and endpoint in self.write_endpoints and draw() < f.late:
                # Held, then applied whether or not the client is still there.
                self.stats.late += 1
                return await asyncio.shield(self._late(request, handler, delay + f.hold))
        else:
            delay = f.latency
        if delay:
            await asyncio.sleep(delay)
        try:
            resp: web.StreamResponse = await handler(request)
        except web.HTTPException as e:  # unknown route, wrong method
            resp = self.error(e.status, e.reason)
        if drop_after:
            self.stats.dropped["after"] += 1
            self._cut(request)
            return None
        return resp

    async def _late(self, request: web.Request, handler: Any, hold: float) -> web.StreamResponse:
        await request.read()  # the write is in: it lands after the hold, answered or not
        await asyncio.sleep(hold)
        try:
            resp: web.StreamResponse = await handler(request)
        except web.HTTPException as e:
            resp = self.error(e.status, e.reason)
        return resp

    @staticmethod
    def _cut(request: web.Request) -> None:
        """Close the connection without an answer: the client sees a disconnect."""
        if request.transport is not None:
            request.transport.close()

    def too_busy(self) -> web.Response:
        return self.error(429, "Too many concurrent requests")

    def _take(self, who: str, rate: float, burst: int) -> float:
        """Token bucket per credential: 0 when allowed, else seconds until a token frees."""
        now = time.monotonic()
        tokens, last = self._buckets.get(who, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[who] = (tokens - 1.0, now)
            return 0.0
        self._buckets[who] = (tokens, now)
        return (1.0 - tokens) / rate

    def after_read(self, key: str) -> None:
        """Call after a read answer is encoded: maybe let the concurrent editor in."""
        if self.faults.editor and self._rng.random() < self.faults.editor:
            self.edit(key)
            self.stats.edits[key] += 1

    # ---- helpers for subclasses -----------------------------------------------------

    @staticmethod
    def json(data: Any, status: int = 200) -> web.Response:
        return web.Response(body=_encode(data), status=status, content_type="application/json")

    async def body(self, request: web.Request) -> Any:
        """The request's JSON body; raises :class:`BadBody` with a useful message."""
        try:
            raw = await request.read()
        except ConnectionResetError:
            # The client went away (or an outage cut it) mid-body: nobody to answer.
            raise web.HTTPServiceUnavailable() from None
        if not raw:
            raise BadBody("the request body is empty; a JSON body is required")
        try:
            return _decode(raw)
        except msgspec.DecodeError as e:
            raise BadBody(f"the request body is not valid JSON: {e}") from None
        except UnicodeDecodeError:
            raise BadBody("the request body is not valid UTF-8") from None
        except RecursionError:
            raise BadBody("the request body is nested too deeply") from None


class BadBody(Exception):
    """The request body is missing or not JSON (answered 400)."""


def _seconds(value: float) -> str:
    return str(max(0, round(value))) if value >= 1 or value == 0 else "1"


def rfc3339(t: datetime, *, digits: int = 6) -> str:
    """``2026-11-23T10:15:30.123456Z`` with ``digits`` fractional digits (0 for none)."""
    base = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        frac = f"{t.microsecond:06d}" + "0" * max(0, digits - 6)
        base += "." + frac[:digits]
    return base + "Z"
