"""The dispatcher: sends changes to their systems concurrently, safely, and reports each one.

This is the only module that does network I/O. It drives the sans-I/O adapters
(:mod:`patchassign.systems`) over one aiohttp ``ClientSession``::

    async with Dispatcher([KintoneAdapter(url, api_token=t), ...]) as d:
        async for result in d.run(changes):      # results as they complete
            print(result.id, result.status)

What it does for every change:

* **Limits**: at most ``concurrency`` requests in flight overall, and per system its
  :class:`Limits` (concurrency, requests per second with a burst). Defaults respect the
  systems' documented limits (each adapter's ``limits``).
* **Retries** on connection errors, timeouts, 429 and 5xx, with exponential backoff and
  full jitter, never sooner than the server's ``Retry-After``; bounded by
  :attr:`RetryPolicy.attempts` and a total :attr:`RetryPolicy.deadline` per change.
  When a system answers many 429s, all of its traffic slows down (its concurrency window
  halves and it pauses for the Retry-After), then recovers gradually.
* **Conflicts** (a stale version token): re-read the record, prepare the change again on
  the fresh state (re-diff), resend; bounded by :attr:`RetryPolicy.conflicts`. A change
  that no longer applies (someone else moved the assignment, a guarded ``test`` fails) is
  reported as a ``conflict`` result, never forced.
* **Ambiguous failures** (a timeout or dropped connection after the write went out, a
  5xx that may have applied): the record is read again before any resend, so a change is
  not applied twice even where the system is not idempotent (Findable's delegate); a
  change found already in place then is reported ``applied``.
* Changes to the same record are sent one after the other, in input order.

Nothing raises out of :meth:`Dispatcher.run` for one bad change: it becomes a ``failed``
result. A programming error (an exception that is not an HTTP or input problem) still
surfaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import aiohttp
import msgspec
import yarl

from .errors import ConfigError, InvalidChange, PatchError
from .systems import (
    Adapter,
    Applied,
    Conflict,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    Limits,
    Retry,
    Unchanged,
    parse_retry_after,
)

if TYPE_CHECKING:
    from .changes import Change

__all__ = [
    "Dispatcher",
    "Limits",
    "Result",
    "RetryPolicy",
    "Run",
    "Status",
    "backoff_delay",
]

log = logging.getLogger("patchassign.dispatch")

Status = Literal["applied", "unchanged", "conflict", "failed", "cancelled", "planned"]
_Positive = Annotated[float, msgspec.Meta(gt=0)]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retries, backoff and time bounds, per change.

    Attributes:
        attempts: Tries of one request (connection error, timeout, 429, 5xx count as
            failed tries) before the change is reported ``failed``. Any answer that is
            not a transient failure starts the count again; the deadline bounds the total.
        conflicts: Re-read-and-resend rounds after version conflicts.
        base: First backoff ceiling in seconds; it doubles per failure (full jitter:
            the wait is drawn uniformly below the ceiling).
        cap: Largest backoff ceiling in seconds.
        timeout: Seconds one request may take (connecting, sending, reading).
        deadline: Seconds one change may take in all, retries and waits included.
        slowdown: Share of recent answers that are 429 above which the whole system is
            slowed down (its concurrency halves and it pauses for the Retry-After). It is
            a moving average over about the last 20 answers: a background of occasional
            429s does not trigger it, a server refusing most requests does.
    """

    attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 6
    conflicts: Annotated[int, msgspec.Meta(ge=0, le=100)] = 5
    base: _Positive = 0.2
    cap: _Positive = 30.0
    timeout: _Positive = 30.0
    deadline: _Positive = 300.0
    slowdown: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.3


class Result(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What happened to one change.

    Attributes:
        index: The change's position in the input of :meth:`Dispatcher.run` (0-based).
        id: The change's id (plans default it to ``line-<n>``).
        system: The target system.
        record: The record the change is about.
        status: ``applied`` (the system took it, or a read-back after an ambiguous
            failure found it in place), ``unchanged`` (already as wanted; nothing
            sent), ``conflict`` (the record no longer fits the change; not forced),
            ``failed`` (permanent error, or retries exhausted), ``cancelled`` (the run
            stopped first), ``planned`` (a dry run: the write was prepared, not sent).
        attempts: Requests sent for this change (reads and writes).
        writes: Write requests among them.
        http_status: The status of the last answer, if any.
        version: The record's version token after the change, where the system has one.
        error: Why it is not applied, in the server's words where it gave some.
        unconfirmed: A write went out and its effect is unknown (a dropped connection or
            a timeout, then no confirmation): read the record before trusting either way.
        started: When work on the change began (Unix time, seconds).
        elapsed: Seconds from start to result, waits included.
        record_after: What the system returned for an applied change (for a Findable
            delegation: the successor assignment).
        planned: In a dry run, the write that would be sent: ``method``, ``url`` and the
            JSON ``body`` (headers, and so credentials, are left out).
    """

    index: int
    id: str | None
    system: str
    record: str | int
    status: Status
    attempts: int = 0
    writes: int = 0
    http_status: int | None = None
    version: str | None = None
    error: str | None = None
    unconfirmed: bool = False
    started: float = 0.0
    elapsed: float = 0.0
    record_after: Any = None
    planned: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Applied or already in place."""
        return self.status in ("applied", "unchanged")


def backoff_delay(
    failures: int, after: float | None, policy: RetryPolicy, rng: random.Random
) -> float:
    """Seconds to wait after the ``failures``-th transient failure of a change.

    Full jitter: uniform in ``[0, min(cap, base * 2**(failures-1))]``. A server's
    ``Retry-After`` is a floor: the wait is at least ``after``, plus up to 10% of it so
    that the clients it throttled do not all come back in the same instant.
    """
    ceiling = min(policy.cap, policy.base * 2 ** max(0, failures - 1))
    delay = rng.uniform(0.0, ceiling)
    if after is not None and after > 0:
        delay = max(delay, after + rng.uniform(0.0, after * 0.1))
    return delay


class _Gate:
    """One system's limits: an adaptive concurrency window, a rate (GCRA) and pauses."""

    __slots__ = (
        "_cut_until",
        "_interval",
        "_tat",
        "_tolerance",
        "_waiters",
        "down",
        "in_flight",
        "max",
        "paused_until",
        "pressure",
        "slowdowns",
        "threshold",
        "window",
    )

    def __init__(self, limits: Limits, threshold: float) -> None:
        self.max = limits.concurrency
        self.window = float(limits.concurrency)
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._interval = 1.0 / limits.rate if limits.rate else 0.0
        self._tolerance = (limits.burst - 1) * self._interval
        self._tat = 0.0
        self.paused_until = 0.0
        self.pressure = 0.0
        self.threshold = threshold
        self._cut_until = 0.0
        self.slowdowns = 0
        self.down = 0  # connection failures in a row

    @property
    def limit(self) -> int:
        return max(1, int(self.window))

    def try_acquire(self, now: float) -> bool:
        """Take a slot if one is free and nothing makes the request wait."""
        if (
            self.in_flight < self.window
            and not self._waiters
            and not self._interval
            and self.paused_until <= now
        ):
            self.in_flight += 1
            return True
        return False

    async def acquire(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
        else:
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append(fut)
            try:
                await fut  # release() hands its slot over (in_flight already counted)
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self.release()
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(fut)
                raise
        try:
            await self._pace(loop)
        except BaseException:
            self.release()
            raise

    async def _pace(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            now = loop.time()
            start = max(now, self.paused_until)
            if self._interval:
                tat = max(self._tat, start)
                start = max(start, tat - self._tolerance)
                self._tat = tat + self._interval
            if start <= now:
                return
            await asyncio.sleep(start - now)
            if self.paused_until <= loop.time():
                return

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    def unreachable(self, now: float, rng: random.Random) -> float:
        """No connection could be made: pause the whole system, longer each time in a
        row (0.5 s doubling up to 30 s, jittered); returns the pause."""
        self.down += 1
        pause: float = min(30.0, 0.5 * 2.0 ** min(self.down - 1, 10)) * rng.uniform(0.5, 1.0)
        self.paused_until = max(self.paused_until, now + pause)
        return pause

    def feedback(self, throttled: bool, after: float | None, now: float) -> bool:
        """Learn from an answer; ``True`` when it made the system slow down."""
        if not throttled:
            self.pressure = self.pressure * 0.95 if self.pressure > 1e-3 else 0.0
            if self.window < self.max:
                self.window = min(float(self.max), self.window + 1.0 / self.window)
                self._wake()
            return False
        self.pressure = self.pressure * 0.95 + 0.05
        if self.pressure < self.threshold or now < self._cut_until:
            return False
        pause = after if after is not None else 1.0
        self.window = max(1.0, self.window / 2)
        self.paused_until = max(self.paused_until, now + pause)
        self._cut_until = now + max(pause, 1.0)
        self.slowdowns += 1
        return True


class _Broken(msgspec.Struct, frozen=True):
    """A request that got no answer. ``sent``: it may have reached the server.

    ``unreachable``: no connection could be made (the system is down): the system's
    gate pauses all of its traffic, and the change's attempts are not spent on it.
    """

    reason: str
    sent: bool
    unreachable: bool = False


_DEADLINE = _Broken("the deadline came before the request could be sent", False)


class _Track:
    """What one change's processing has done so far (for its result, and for a stop)."""

    __slots__ = (
        "attempts",
        "change",
        "in_request",
        "index",
        "last_status",
        "pool",
        "started",
        "t0",
        "unconfirmed",
        "writes",
    )

    def __init__(self, index: int = 0, change: Change | None = None) -> None:
        self.pool: _Pool | None = None
        self.reset(index, change)

    def reset(self, index: int, change: Change | None) -> None:
        """Start tracking another change."""
        self.index = index
        self.change = change
        self.started = time.time()
        self.t0 = time.monotonic()
        self.attempts = 0
        self.writes = 0
        self.last_status: int | None = None
        self.unconfirmed = False
        self.in_request = False

    def result(self, status: Status, **kw: Any) -> Result:
        change = self.change
        assert change is not None
        return Result(
            index=self.index,
            id=change.id,
            system=change.system,
            record=change.record,
            status=status,
            attempts=self.attempts,
            writes=self.writes,
            http_status=self.last_status,
            unconfirmed=self.unconfirmed and status not in ("applied", "unchanged"),
            started=self.started,
            elapsed=time.monotonic() - self.t0,
            **kw,
        )

    def cancelled(self) -> Result:
        return self.result("cancelled", error="the run stopped before this change finished")


class _KeyLocks:
    """Changes to the same record wait for each other, in arrival order.

    A key is present while a change to its record is in progress; its value holds the
    changes waiting for it (``None``: nobody waits), so a free key costs nothing.
    """

    __slots__ = ("_busy",)

    def __init__(self) -> None:
        self._busy: dict[str, deque[asyncio.Future[None]] | None] = {}

    def try_acquire(self, key: str) -> bool:
        if key in self._busy:
            return False
        self._busy[key] = None
        return True

    async def acquire(self, key: str) -> None:
        if self.try_acquire(key):
            return
        waiters = self._busy[key]
        if waiters is None:
            waiters = self._busy[key] = deque()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(key)  # it was handed to us: hand it on
            else:
                with contextlib.suppress(ValueError):
                    waiters.remove(fut)
            raise

    def release(self, key: str) -> None:
        waiters = self._busy.get(key)
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        del self._busy[key]

    def __len__(self) -> int:
        return len(self._busy)


class _Stop(Exception):
    """The run is stopping: do not start anything new."""


class Dispatcher:
    """Sends changes to their systems. Use as ``async with Dispatcher(...) as d:``.

    Args:
        adapters: One adapter per system (a list, or a mapping of system name to adapter).
        session: An aiohttp session to use (the caller keeps it open and closes it); by
            default the dispatcher owns one with a connection pool of ``concurrency``.
            A session of your own should allow ``concurrency`` connections, and cannot
            have aiohttp's silent resend of idempotent requests turned off, which the
            dispatcher's own session has (see ``docs/reliability.md``).
        concurrency: Requests in flight at once, over all systems.
        limits: Per-system :class:`Limits`, over each adapter's own ``limits`` (its
            system's documented limits).
        retry: The :class:`RetryPolicy`.
        verify_tls: Verify servers' TLS certificates. Turning it off is logged as a
            warning every time a dispatcher starts.
        dry_run: Read records (GET) but never write: each change that would write ends
            ``planned``, with the request in :attr:`Result.planned`.
        seed: Seed for the backoff jitter (tests).
    """

    def __init__(
        self,
        adapters: Iterable[Adapter] | Mapping[str, Adapter],
        *,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = 64,
        limits: Mapping[str, Limits] | None = None,
        retry: RetryPolicy | None = None,
        verify_tls: bool = True,
        dry_run: bool = False,
        seed: int | None = None,
    ) -> None:
        if isinstance(adapters, Mapping):
            self.adapters: dict[str, Adapter] = dict(adapters)
        else:
            self.adapters = {a.system: a for a in adapters}
        if not 1 <= concurrency <= 10_000:
            raise ConfigError(f"concurrency must be between 1 and 10000, got {concurrency}")
        self.concurrency = concurrency
        self.limits = {name: a.limits for name, a in self.adapters.items()}
        self.limits.update(limits or {})
        for name, lim in self.limits.items():
            if not isinstance(lim, Limits):
                raise ConfigError(f"limits[{name!r}] must be a Limits, got {type(lim).__name__}")
        self.retry = retry or RetryPolicy()
        self.verify_tls = verify_tls
        self.dry_run = dry_run
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not secrets
        self._session = session
        self._own_session = session is None
        self._gates: dict[str, _Gate] = {}
        self._slots: _Gate | None = None
        # Per request: in flight never exceeds the pool, so ``total`` does not count a
        # wait for a connection (aiohttp#10313).
        self._timeout = aiohttp.ClientTimeout(
            total=self.retry.timeout, sock_connect=min(10.0, self.retry.timeout)
        )
        self._busy = _KeyLocks()
        #: Requests answered, per ``(system, status)``; ``status`` 0: no answer.
        self.counts: Counter[tuple[str, int]] = Counter()

    def __repr__(self) -> str:
        return f"<Dispatcher systems={sorted(self.adapters)} concurrency={self.concurrency}>"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the session (when the dispatcher owns it). ``async with`` calls this."""
        if not self.verify_tls:
            log.warning(
                "TLS certificate verification is OFF: any server can impersonate the "
                "target systems and read the credentials sent to them"
            )
        self._slots = _Gate(Limits(concurrency=self.concurrency), 1.0)
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.concurrency,
                limit_per_host=0,
                ttl_dns_cache=300,
                ssl=self.verify_tls,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            # aiohttp resends an idempotent request (PUT) once, silently, when the
            # connection drops: a second write we did not decide on. We decide.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False

    async def close(self) -> None:
        """Close the session if the dispatcher owns it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -- public API ----------------------------------------------------------------------

    def run(
        self, changes: Iterable[Change] | AsyncIterable[Change], *, read_first: bool = False
    ) -> Run:
        """Send ``changes``; iterate the returned :class:`Run` for results as they complete.

        The input is read lazily, at most a few changes ahead of the sends, and results
        wait for the consumer (backpressure): memory does not grow with the input.
        ``read_first``: read every record before writing, even where the change does not
        need it, so a change already in place is not sent again (a resume after a crash).
        """
        return Run(self, changes, read_first)

    async def send(self, change: Change, *, read_first: bool = False) -> Result:
        """Send one change and return its result."""
        return await self._process(_Track(0, change), None, read_first)

    async def send_all(self, changes: Iterable[Change] | AsyncIterable[Change]) -> list[Result]:
        """Send ``changes`` concurrently; results in input order."""
        async with self.run(changes) as run:
            out = [r async for r in run]
        out.sort(key=lambda r: r.index)
        return out

    def slowdowns(self) -> dict[str, int]:
        """How many times each system was slowed down after many 429s."""
        return {name: g.slowdowns for name, g in self._gates.items()}

    # -- one change -----------------------------------------------------------------------

    def _gate(self, system: str) -> _Gate:
        gate = self._gates.get(system)
        if gate is None:
            gate = self._gates[system] = _Gate(
                self.limits.get(system, Limits()), self.retry.slowdown
            )
        return gate

    async def _process(
        self, track: _Track, stop: asyncio.Event | None, read_first: bool = False
    ) -> Result:
        change = track.change
        assert change is not None
        adapter = self.adapters.get(change.system)
        if adapter is None:
            return track.result(
                "failed", error=f"no adapter configured for system {change.system!r}"
            )
        try:
            adapter.check(change)
        except InvalidChange as e:
            return track.result("failed", error=str(e))
        key = f"{change.system}/{change.record}"
        busy = self._busy
        if not busy.try_acquire(key):
            await busy.acquire(key)
        try:
            status, kw = await self._drive(adapter, change, track, stop, read_first)
        except _Stop:
            return track.cancelled()
        except (PatchError, InvalidChange, ConfigError) as e:
            # An adapter refusing with one of our typed errors instead of returning
            # Failed: still one change's problem, not the run's.
            return track.result("failed", error=f"{type(e).__name__}: {e}")
        finally:
            busy.release(key)
        return track.result(status, **kw)

    async def _drive(
        self,
        adapter: Adapter,
        change: Change,
        track: _Track,
        stop: asyncio.Event | None,
        read_first: bool,
    ) -> tuple[Status, dict[str, Any]]:
        policy = self.retry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.deadline
        gate = self._gate(adapter.system)
        failures = 0
        conflicts = 0
        must_read = read_first  # and after a conflict or an ambiguous failure
        last = "no answer yet"  # the last reason a request failed
        maybe_applied = False  # a write went out and may have been applied

        async def wait(after: float | None, why: str) -> str | None:
            """Back off before trying again; the reason to give up, if it is time to."""
            nonlocal failures, last
            failures += 1
            last = why
            if failures >= policy.attempts:
                return f"gave up after {failures} attempts: {why}"
            delay = backoff_delay(failures, after, policy, self._rng)
            if loop.time() + delay > deadline:
                return f"deadline of {policy.deadline:g}s reached: {why}"
            log.debug("retrying %s/%s in %.2fs: %s", change.system, change.record, delay, why)
            if stop is not None and stop.is_set():
                raise _Stop
            await _resting(track, asyncio.sleep(delay))
            return None

        async def recover(broken: _Broken) -> tuple[Status, dict[str, Any]] | None:
            """After a request without an answer: the final result, or None to go on."""
            nonlocal last
            if broken is _DEADLINE:
                return "failed", {"error": f"deadline of {policy.deadline:g}s reached: {last}"}
            if broken.unreachable:
                last = broken.reason
                if loop.time() >= deadline:
                    return "failed", {"error": f"deadline reached: {broken.reason}"}
                return None  # the system's gate waits for it to come back
            give_up = await wait(None, broken.reason)
            return ("failed", {"error": give_up}) if give_up else None

        while True:
            if stop is not None and stop.is_set():
                raise _Stop
            current: Current | None = None
            if must_read or adapter.needs_read(change):
                got = await self._request(
                    adapter.system, gate, adapter.read(change), track, deadline, False
                )
                if isinstance(got, _Broken):
                    final = await recover(got)
                    if final is not None:
                        return final
                    continue
                read = adapter.current(change, got)
                if isinstance(read, Retry):
                    give_up = await wait(read.after, read.reason)
                    if give_up:
                        return "failed", {"error": give_up}
                    continue
                if isinstance(read, Failed):
                    return "failed", {"error": f"reading the record: {read.reason}"}
                current = read
                must_read = False
                failures = 0
            step = adapter.prepare(change, current)
            if isinstance(step, Unchanged):
                if maybe_applied:
                    track.unconfirmed = False
                    return "applied", {"version": step.version}
                return "unchanged", {"version": step.version}
            if isinstance(step, Conflict):
                return "conflict", {"error": step.reason}
            if isinstance(step, Failed):
                return "failed", {"error": step.reason}
            if self.dry_run:
                return "planned", {"planned": _planned(step)}
            if stop is not None and stop.is_set():
                raise _Stop
            sent = await self._request(adapter.system, gate, step, track, deadline, True)
            if isinstance(sent, _Broken):
                if sent.sent:
                    maybe_applied = track.unconfirmed = True
                    must_read = True
                final = await recover(sent)
                if final is not None:
                    return final
                continue
            outcome = adapter.outcome(change, sent)
            if not isinstance(outcome, Retry):
                failures = 0
            if isinstance(outcome, Applied):
                track.unconfirmed = False
                return "applied", {"version": outcome.version, "record_after": outcome.record}
            if isinstance(outcome, Retry):
                if outcome.ambiguous:
                    maybe_applied = track.unconfirmed = True
                    must_read = True
                give_up = await wait(outcome.after, outcome.reason)
                if give_up:
                    return "failed", {"error": give_up}
                continue
            if isinstance(outcome, Conflict):
                if not outcome.recoverable:
                    return "conflict", {"error": outcome.reason}
                conflicts += 1
                if conflicts > policy.conflicts:
                    return "conflict", {
                        "error": f"still conflicting after {conflicts} re-reads: {outcome.reason}"
                    }
                must_read = True
                continue
            return "failed", {"error": outcome.reason}

    def _down(self, system: str, gate: _Gate, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        if gate.paused_until > now:
            return  # already paused: one pause per outage step, not one per request
        pause = gate.unreachable(now, self._rng)
        if gate.down == 1 or gate.down % 5 == 0:
            log.warning("%s: cannot connect; pausing its requests for %.1fs", system, pause)

    async def _request(
        self,
        system: str,
        gate: _Gate,
        req: HttpRequest,
        track: _Track,
        deadline: float,
        write: bool,
    ) -> HttpResponse | _Broken:
        """One request under the limits; an answer, or why there is none."""
        session, slots = self._session, self._slots
        if write and self.dry_run:  # pragma: no cover - _drive stops before
            raise RuntimeError("a dry run never writes")
        if session is None or slots is None:
            raise RuntimeError("the dispatcher is not started: use 'async with Dispatcher(...)'")
        loop = asyncio.get_running_loop()
        # The system's gate first: waiting for a busy system must not hold a slot that
        # another system could use.
        if not gate.try_acquire(loop.time()):
            await _resting(track, gate.acquire(loop))
        try:
            if not slots.try_acquire(0.0):
                await slots.acquire(loop)
            try:
                limit = deadline - loop.time()
                timeout = self._timeout
                if limit >= self.retry.timeout:
                    limit = self.retry.timeout
                elif limit <= 0:
                    return _DEADLINE
                else:  # the change's deadline comes first
                    timeout = aiohttp.ClientTimeout(total=limit, sock_connect=timeout.sock_connect)
                track.attempts += 1
                track.writes += write
                track.in_request = True
                try:
                    async with session.request(
                        req.method,
                        yarl.URL(req.url, encoded=True),
                        headers=req.headers,
                        data=req.body,
                        allow_redirects=False,
                        timeout=timeout,
                    ) as r:
                        response = HttpResponse(r.status, r.headers, await r.read())
                except aiohttp.ConnectionTimeoutError:
                    self.counts[system, 0] += 1
                    self._down(system, gate, loop)
                    return _Broken(f"cannot connect within {timeout.sock_connect:g}s", False, True)
                except TimeoutError:
                    self.counts[system, 0] += 1
                    return _Broken(f"no answer within {limit:.3g}s", True)
                except aiohttp.ClientConnectorError as e:
                    self.counts[system, 0] += 1
                    self._down(system, gate, loop)
                    return _Broken(f"cannot connect: {e.os_error}", False, True)
                except aiohttp.ClientError as e:
                    self.counts[system, 0] += 1
                    return _Broken(f"connection failed: {type(e).__name__}: {e}", True)
                finally:
                    track.in_request = False
            finally:
                slots.release()
        finally:
            gate.release()
        status = response.status
        track.last_status = status
        self.counts[system, status] += 1
        gate.down = 0
        if status == 429:
            after = parse_retry_after(response.header("Retry-After"))
            if gate.feedback(True, after, loop.time()):
                log.warning(
                    "%s: many requests throttled (429); slowing down to %d in flight",
                    system,
                    gate.limit,
                )
        elif status < 300 and (gate.pressure or gate.window < gate.max):
            gate.feedback(False, None, 0.0)
        return response


async def _resting(track: _Track, waiting: Awaitable[None]) -> None:
    """Await ``waiting`` (a backoff, a busy system) while the run's worker pool counts
    this worker as resting, so that another may use the connections meanwhile."""
    pool = track.pool
    if pool is None:
        await waiting
        return
    pool.resting()
    try:
        await waiting
    finally:
        pool.back()


def _planned(req: HttpRequest) -> dict[str, Any]:
    body: Any = None
    if req.body is not None:
        try:
            body = msgspec.json.decode(req.body)
        except msgspec.DecodeError:
            body = req.body.decode("utf-8", "replace")
    return {"method": req.method, "url": req.url, "body": body}


class _RunState:
    """What a run shares with its workers (not the :class:`Run` itself: a run dropped by
    its consumer must be collectable, so that its generator is closed)."""

    __slots__ = ("stopped", "taken")

    def __init__(self) -> None:
        self.stopped: list[Result] = []
        self.taken = 0


class Run:
    """A run of :meth:`Dispatcher.run`: an async iterator of :class:`Result`.

    Use it as ``async with d.run(changes) as run: async for r in run: ...`` so that it is
    closed as soon as you stop iterating. Stopping early (``break``, an exception,
    cancellation) stops new sends, lets requests in flight finish or time out, and puts
    the results of the changes that were in progress in :attr:`stopped`: those with
    ``unconfirmed`` set had a write sent whose effect is unknown.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        changes: Iterable[Change] | AsyncIterable[Change],
        read_first: bool = False,
    ) -> None:
        self._state = _RunState()
        self._gen: AsyncGenerator[Result, None] = _results(
            dispatcher, changes, self._state, read_first
        )

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[Result]:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop: no new sends; wait for requests in flight (bounded by the timeout)."""
        await self._gen.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def stopped(self) -> list[Result]:
        """Results of the changes that were in progress when the run stopped early."""
        return self._state.stopped

    @property
    def taken(self) -> int:
        """Changes read from the input so far."""
        return self._state.taken

    @property
    def unconfirmed(self) -> list[Result]:
        """Changes whose write was sent but not confirmed when the run stopped."""
        return [r for r in self._state.stopped if r.unconfirmed]


class _Channel:
    """Results from the workers to the one consumer: bounded, in order, cheap."""

    __slots__ = ("_getter", "_putters", "cap", "items")

    def __init__(self, cap: int) -> None:
        self.items: deque[Result | BaseException | None] = deque()
        self.cap = cap
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()

    async def put(self, item: Result | BaseException | None) -> None:
        while len(self.items) >= self.cap:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                with contextlib.suppress(ValueError):
                    self._putters.remove(fut)
                raise
        self.items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    async def get(self) -> Result | BaseException | None:
        while not self.items:
            self._getter = asyncio.get_running_loop().create_future()
            await self._getter
        item = self.items.popleft()
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
                break
        return item


class _Pool:
    """The run's workers: ``target`` of them working, more while some wait.

    A worker that waits (a backoff, a busy or paused system) is *resting*; while fewer
    than ``target`` work, another is started (up to ``4 * target`` in all), so waiting
    changes do not idle the connections. Workers beyond the target retire when their
    change is done.
    """

    __slots__ = ("active", "exhausted", "live", "max", "spawn", "spawned", "target")

    def __init__(self, target: int, spawn: Callable[[], None]) -> None:
        self.target = target
        self.max = 4 * target
        self.spawn = spawn
        self.active = 0
        self.live = 0
        self.spawned = 0
        self.exhausted = False

    def resting(self) -> None:
        self.active -= 1
        if self.active < self.target and self.live < self.max and not self.exhausted:
            self.spawn()

    def back(self) -> None:
        self.active += 1


async def _results(
    d: Dispatcher,
    changes: Iterable[Change] | AsyncIterable[Change],
    state: _RunState,
    read_first: bool,
) -> AsyncGenerator[Result, None]:
    n = d.concurrency
    todo: asyncio.Queue[tuple[int, Change] | None] = asyncio.Queue(maxsize=n)
    source = None if isinstance(changes, AsyncIterable) else iter(changes)
    done = _Channel(n)
    stop = asyncio.Event()
    tracks: dict[asyncio.Task[None], _Track] = {}

    def take() -> tuple[int, Change] | None:
        """The next change of a plain iterable (no task, no queue in between)."""
        assert source is not None
        for change in source:
            index = state.taken
            state.taken += 1
            return index, change
        pool.exhausted = True
        return None

    async def feed() -> None:
        assert isinstance(changes, AsyncIterable)
        try:
            async for change in changes:
                await todo.put((state.taken, change))
                state.taken += 1
        except Exception as e:  # the input itself broke: the consumer hears of it
            await done.put(e)
        finally:
            await todo.put(None)  # each worker that sees it passes it on

    async def next_item() -> tuple[int, Change] | None:
        item = await todo.get()
        if item is None:
            pool.exhausted = True
            todo.put_nowait(None)
        return item

    async def work(track: _Track) -> None:
        res: Result | None = None
        try:
            while not stop.is_set():
                item = take() if source is not None else await next_item()
                if item is None:
                    break
                track.reset(*item)
                res = await d._process(track, stop, read_first)
                track.change = None
                if stop.is_set():
                    state.stopped.append(res)
                else:
                    await done.put(res)
                res = None
                if pool.active > pool.target:
                    break  # more are working than needed: retire
        except asyncio.CancelledError:
            if res is not None:
                state.stopped.append(res)  # finished, but nobody took it
            elif track.change is not None:
                state.stopped.append(track.cancelled())
            raise
        except Exception as e:  # a programming error: surface it
            await done.put(e)
        finally:
            pool.live -= 1
            pool.active -= 1
            task = asyncio.current_task()
            if task is not None:
                tracks.pop(task, None)
        if not stop.is_set():
            await done.put(None)

    def spawn() -> None:
        track = _Track()
        track.pool = pool
        pool.live += 1
        pool.active += 1
        pool.spawned += 1
        task = asyncio.create_task(work(track), name=f"patchassign-worker-{pool.spawned}")
        tracks[task] = track

    pool = _Pool(n, spawn)
    feeder = asyncio.create_task(
        feed() if source is None else asyncio.sleep(0), name="patchassign-feed"
    )
    for _ in range(n):
        spawn()
    finished = 0
    try:
        while finished < pool.spawned:
            got = await done.get()
            if got is None:
                finished += 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield got
    finally:
        stop.set()
        feeder.cancel()
        busy = []
        for task, track in list(tracks.items()):
            if task.done():
                continue
            if track.in_request:
                busy.append(task)  # let its request finish or time out
            else:
                task.cancel()
        if busy:
            await asyncio.wait(busy, timeout=d.retry.timeout + 1.0)
        left = list(tracks)
        for task in left:
            task.cancel()
        await asyncio.gather(feeder, *left, return_exceptions=True)
        if state.stopped:
            log.info(
                "run stopped early: %d change(s) were in progress, %d unconfirmed",
                len(state.stopped),
                sum(r.unconfirmed for r in state.stopped),
            )
