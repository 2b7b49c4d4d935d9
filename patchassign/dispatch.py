"""The dispatcher: one lane per system, so a slow, limited or broken system holds back no other.

It drives each change's :class:`~patchassign.flow.Flow` (the pure per-change state
machine) over a :class:`~patchassign.transports.Transport`::

    async with Dispatcher([KintoneAdapter(url, api_token=t), ...]) as d:
        async for result in d.run(changes):      # results as they complete
            print(result.id, result.status)

* **Lanes.** Each system has its own bounded buffer of waiting changes, its own workers
  and its own limits (:class:`Limits`: concurrency, rate, burst). Reading the input
  pauses only when the buffer of the system the next change belongs to is full. A change
  waiting for its system holds no slot of the overall ``concurrency``, which bounds the
  requests in flight over all systems. Changes to the same record go in input order.
* **Limits that adapt.** A lane starts with a few requests in flight and opens up as
  answers come back (so wrong credentials cost a handful of requests, not hundreds);
  when most answers are 429 it halves its window and pauses for the Retry-After.
* **Fail fast, say why.** Credentials refused on ``auth_stop`` records in a row, an
  unreachable system past the ``outage`` budget, or a DNS/TLS failure stop the lane: its
  remaining changes end at once (``failed``, or ``unsent`` so that a resume sends them),
  with one reason naming the system and its host.
* **Hard deadlines.** A change ends by its deadline plus at most one request timeout,
  also while it waits for its system.

Nothing raises out of :meth:`Dispatcher.run` for one bad change: it becomes a result. A
programming error (an exception that is not an HTTP or input problem) still surfaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import random
import time
import traceback
from collections import Counter, deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, cast
from urllib.parse import urlsplit

import msgspec

from ._scrub import Scrubber, header_secrets
from .changes import _Change
from .errors import ConfigError, ConnectError, InvalidChange, TransportError
from .flow import Done, Flow, Result, RetryPolicy, Send, Status, Wait, backoff_delay
from .hooks import Hooks, RetryEvent, SlowdownEvent, StopEvent
from .systems import Adapter, Current, Failed, HttpRequest, HttpResponse, Limits, Retry

if TYPE_CHECKING:
    import aiohttp

    from .changes import Change
    from .transports import Transport

    #: What :meth:`Dispatcher.run` reads: changes, sync or async.
    Source = Iterable[Change] | AsyncIterable[Change]
    #: Whether a change must be read before it is written: one answer for all, or asked
    #: per change with its system and index.
    ReadFirst = bool | Callable[[str, int], bool]

__all__ = [
    "Check",
    "Dispatcher",
    "Limits",
    "Result",
    "RetryPolicy",
    "Run",
    "Status",
    "backoff_delay",
]

log = logging.getLogger("patchassign.dispatch")
_new = object.__new__

#: A lane begins with this many requests in flight (at most its limit) and opens up by
#: one per answer that is not refused (slow start).
_FIRST_WINDOW = 4
#: Seconds between two steps of a learned rate's fast climb or trial of a slower pace
#: (see ``_Lane._climb`` and ``_Lane._trim_step``).
_CLIMB_STEP = 0.25
#: A fast climb stopped by a 429 goes on after this many seconds without one, unless the
#: 429 came at a pace an earlier 429 of the climb came at (see ``_Lane.throttled``).
_CLIMB_QUIET = 2.0
#: The fast climb takes a step only while the answers since its last step showed come
#: at this share of the pace or more (over a tenth above the pace before the step).
_CLIMB_SHOWN = 0.95
#: A learned rate measured over less than this many seconds climbs fast.
_SHORT_MEASURE = 0.5
#: A paced lane with more than this share of 429s (over 2 s) tries the pace that got
#: through, and keeps it when the share falls (see ``_Lane._trim_step``).
_TRIM_ABOVE = 0.05
#: The share of 429s that slows a lane down is of the last ``_FEW`` answers, or of those
#: of the last ``_RECENT`` seconds when more came in them (see ``_Lane._heard_of``).
_FEW = 20.0
_RECENT = 0.25
#: Answers through since the first 429 that make a measure of a server's rate (fewer:
#: the lane measures all it noted; see ``_Lane._through``).
_THROUGH = 10
#: Seconds past its turn at which a paced request that woke late takes a new turn
#: instead of going out with the others woken with it (see ``_Lane._pace``).
_LATE = 0.005
#: Seconds at most that a batch not full waits for more while its lane is busy.
_BUSY_LINGER = 1.0
#: Workers of one lane at most where its changes go in batches.
_BATCH_WORKERS = 2000
#: Records in a row whose adapter raised (a bug in it) after which its system is stopped.
_BROKEN_STOP = 3


class _Expired(Exception):
    """The change's deadline came while it waited for its system."""


class _Halted(Exception):
    """The change's system was stopped while it waited."""


class _AdapterRaised(Exception):
    """The adapter raised ``error`` where a batch was combined (not a change's own step)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


class _Stop(Exception):
    """The run is stopping: do not start anything new."""


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(_Expired())


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Slots:
    """The overall concurrency: a FIFO semaphore with a lock-free fast path."""

    __slots__ = ("_waiters", "free")

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # release() hands its slot over
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


def _whole(n: object) -> bool:
    """An ``int`` and not a ``bool`` (``True`` would pass as 1)."""
    return isinstance(n, int) and not isinstance(n, bool)


def _number(x: object) -> bool:
    """An ``int`` or ``float`` and not a ``bool`` (NaN fails the bounds checked after)."""
    return isinstance(x, int | float) and not isinstance(x, bool)


class _Flag:
    """A run's stop switch: set once, read for every change (an attribute read where
    ``asyncio.Event.is_set`` is a call; nothing waits on it)."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False

    def set(self) -> None:
        self.on = True


class _KeyLocks:
    """Changes to the same record wait for each other, in arrival order.

    A key is present while a change to its record is in progress; its value holds the
    changes waiting for it (``None``: nobody waits), so a free key costs one dict entry.
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


class _Pool:
    """A lane's workers: ``target`` of them working, more while some wait.

    A worker that waits for something that does not use the lane's capacity (a backoff,
    a predecessor on the same record, its batch to fill and come back) is *resting*;
    while fewer than ``target`` work, another is started (up to ``most``, default
    ``4 * target``), so waiting changes do not idle the lane. Waiting at the lane's own
    limits is not resting: another worker would only queue behind it. Workers beyond the
    target retire when their change is done, except where a lane batches (``most``
    given): there a worker back from its batch goes on to the next change, which will
    likely wait in a batch again (retired and started anew, the workers of a Kintone
    run filled smaller read batches: 589 requests for 10,000 changes against 545).
    """

    __slots__ = ("active", "keep", "live", "max", "spawn", "target")

    def __init__(self, target: int, spawn: Any, most: int | None = None) -> None:
        self.target = target
        self.max = 4 * target if most is None else max(most, target)
        #: Workers working above which one retires when its change is done.
        self.keep = target if most is None else self.max
        self.spawn = spawn
        self.active = 0
        self.live = 0

    def resting(self) -> None:
        self.active -= 1
        if self.active < self.target and self.live < self.max:
            self.spawn()

    def back(self) -> None:
        self.active += 1


class _Item:
    """One change's request waiting in a batch."""

    __slots__ = ("cut", "deadline", "flow", "fut", "request", "sent", "timeout")

    def __init__(
        self,
        request: HttpRequest,
        fut: asyncio.Future[Any],
        timeout: float,
        deadline: float,
        flow: Flow | None,
    ) -> None:
        self.request = request
        self.fut = fut
        self.timeout = timeout
        self.deadline = deadline
        self.flow = flow  # told when the batch goes out (``Flow.sending``)
        self.sent = False  # its batch went out (a cancel then leaves its write in doubt)
        self.cut = False  # its caller stopped waiting after that: the answer is nobody's


def _answer(item: _Item, value: Any) -> None:
    if not item.fut.done():
        item.fut.set_result(value)


def _refuse(item: _Item, error: BaseException) -> None:
    if not item.fut.done():
        item.fut.set_exception(error)


#: 4xx answers that say nothing about one request of a batch: every request gets them.
_WHOLE_4XX = frozenset({401, 403, 407, 408, 429})


class _Batcher:
    """One lane's reads or writes that its adapter can combine: collected per group up to
    ``size`` or for ``linger`` seconds, sent as one request under the lane's limits and
    the overall concurrency, and answered per change (``adapter.split``).

    A request the adapter says was not carried out (an all-or-nothing batch that failed
    because of another) goes again in the next batch; a 4xx that names no request splits
    the batch in halves until the one at fault goes alone; no answer at all (a timeout, a
    dropped connection) is every change's own, so each reads its record back as usual.
    """

    __slots__ = ("d", "groups", "lane", "linger", "number", "size", "tasks", "write")

    def __init__(self, d: Dispatcher, lane: _Lane, write: bool, size: int, linger: float) -> None:
        self.d = d
        self.lane = lane
        self.write = write
        self.size = size
        self.linger = linger
        self.groups: dict[Any, list[_Item]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.number = 0

    def group(self, request: HttpRequest) -> Any:
        try:
            return self.lane.adapter.batch_group(request, self.write)  # type: ignore[attr-defined]
        except Exception:  # an adapter that cannot tell: the request goes alone
            return None

    async def send(
        self,
        group: Any,
        request: HttpRequest,
        timeout: float,
        deadline: float,
        flow: Flow | None = None,
    ) -> tuple[HttpResponse, tuple[str, int] | None, bool]:
        """The request's answer, the batch it went in and its place there (``None``: it
        went alone), and whether the answer is the whole batch's (a 429 or a 5xx every
        change got), which tells the lane about the system once, not once per change."""
        loop = asyncio.get_running_loop()
        item = _Item(request, loop.create_future(), timeout, deadline, flow)
        items = self.groups.setdefault(group, [])
        items.append(item)
        if len(items) >= self.size:
            self._flush(group)
        elif len(items) == 1:
            loop.call_later(self.linger, self._flush_if, group, items, loop.time())
        try:
            return cast("tuple[HttpResponse, tuple[str, int] | None, bool]", await item.fut)
        except asyncio.CancelledError:
            waiting = self.groups.get(group)
            if waiting is not None and item in waiting:
                waiting.remove(item)  # not sent yet: it leaves the batch
            if item.sent and flow is not None:
                # Its batch is in flight: the write may land. A batch that has not gone
                # out yet leaves it behind (``_send`` drops the items no one awaits).
                flow.cut_off()
                item.cut = True
            raise

    def _flush_if(self, group: Any, items: list[_Item], opened: float) -> None:
        """The batch's linger is over: it goes, unless it is not full and the lane is
        busy (every slot taken, or requests waiting for one: it would only take a turn
        from them, and a fuller batch spends the lane's rate better). Then it waits for
        more, a linger at a time, until the lane is free or it is full, for at most
        ``_BUSY_LINGER`` seconds and never into the last quarter of a deadline. Going at
        every linger, one PERSCOM write went per request while reads held the lane: at
        8 requests/s, 300 changes took 75 s instead of 38."""
        if self.groups.get(group) is not items:
            return
        lane = self.lane
        if items and len(items) < self.size and (lane._waiters or lane.in_flight >= lane.limit):
            loop = asyncio.get_running_loop()
            now = loop.time()
            policy = self.d.retry
            margin = min(policy.timeout, 0.25 * policy.deadline)
            if now - opened < _BUSY_LINGER and min(i.deadline for i in items) - now > margin:
                loop.call_later(self.linger, self._flush_if, group, items, opened)
                return
        self._flush(group)

    def _flush(self, group: Any) -> None:
        items = self.groups.pop(group, None)
        if items:
            self._spawn(items)

    def _spawn(self, items: list[_Item]) -> None:
        task = asyncio.get_running_loop().create_task(self._run(items))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, items: list[_Item]) -> None:
        items = [i for i in items if not i.fut.done()]
        if not items:
            return
        try:
            await self._send(items, asyncio.get_running_loop())
        except asyncio.CancelledError:
            # Stopped with the batch in flight: each change's write is in doubt, as a
            # request of its own cut off would be.
            for item in items:
                _refuse(item, asyncio.CancelledError())
            raise
        except Exception as e:  # a programming error: surface it in every change
            for item in items:
                _refuse(item, e)

    async def _send(self, items: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        d, lane = self.d, self.lane
        until = min(i.deadline for i in items)
        try:
            await lane.acquire(loop, until, self.write)
        except (_Expired, _Halted) as e:
            for item in items:
                _refuse(item, type(e)())
            return
        transport = d.transport
        response: HttpResponse | None = None
        try:
            await d._slots.acquire()
            try:
                left = until - loop.time()
                timeout = min(i.timeout for i in items)
                if not self.write:  # a write keeps its whole timeout (see _drive)
                    timeout = min(timeout, left)
                if left <= 0:
                    for item in items:
                        _refuse(item, _Expired())
                    return
                if transport is None:
                    raise RuntimeError(
                        "the dispatcher is not started: use 'async with Dispatcher(...)'"
                    )
                # Changes whose callers stopped waiting (cancelled while the batch waited
                # for the lane) are not sent: nobody would hear what became of them.
                items = [i for i in items if not i.fut.done()]
                if not items:
                    return
                try:
                    request = (
                        items[0].request
                        if len(items) == 1
                        else lane.adapter.combine([i.request for i in items], self.write)  # type: ignore[attr-defined]
                    )
                except Exception as e:  # a bug in the adapter: each change fails, unsent
                    for item in items:
                        _refuse(item, _AdapterRaised(e))
                    return
                sent = loop.time()
                for item in items:
                    item.sent = True
                    if item.flow is not None:
                        item.flow.sending(sent, timeout)
                try:
                    response = await transport.send(request, timeout=timeout)
                except TransportError as e:
                    lane.answers[0] += 1
                    for item in items:
                        _refuse(item, e)
                    return
            finally:
                d._slots.release()
        finally:
            lane.release()
        lane.answers[response.status] += 1
        if len(items) == 1:
            _answer(items[0], (response, None, False))
            self._heard(items[0], response)
            return
        self.number += 1
        name = f"{lane.system}-{'w' if self.write else 'r'}{self.number}"
        try:
            parts = lane.adapter.split(  # type: ignore[attr-defined]
                [i.request for i in items], self.write, response
            )
        except Exception:
            parts = None
        if parts is not None and (len(parts) != len(items) or all(part is None for part in parts)):
            parts = None  # nothing attributable: as if the adapter could not say
        if parts is None:
            for item in items:
                self._heard(item, response)
            if 400 <= response.status < 500 and response.status not in _WHOLE_4XX:
                half = len(items) // 2  # which one is at fault? halves until it is alone
                self._spawn(items[:half])
                self._spawn(items[half:])
                return
            for pos, item in enumerate(items):
                _answer(item, (response, (name, pos), True))
            return
        again = []
        for pos, (item, part) in enumerate(zip(items, parts, strict=True)):
            if part is None:
                again.append(item)  # not carried out because of another: goes again
            else:
                _answer(item, (part, (name, pos), False))
            self._heard(item, part)
        if again:
            self._spawn(again)

    def _heard(self, item: _Item, answer: HttpResponse | None) -> None:
        """For a change whose caller stopped waiting while its batch was in flight: its
        record waits for the settle time (the write may land), unless ``answer`` (its
        part of the batch's; ``None``: not carried out) says what became of the write."""
        if not item.cut or item.flow is None:
            return
        if answer is not None:
            try:
                outcome = self.lane.adapter.outcome(item.flow.change, answer)
            except Exception:
                return
            if isinstance(outcome, Retry) and outcome.ambiguous:
                return
        self.lane.settled(item.flow)


class _Lane:
    """One system: its adapter, buffer, limits, pauses, and whether it was stopped."""

    __slots__ = (
        "_burst_tolerance",
        "_ceiling",
        "_climbed_from",
        "_climbing",
        "_cut_until",
        "_heard",
        "_interval",
        "_noted_from",
        "_ok",
        "_passed",
        "_paused_at",
        "_rate_interval",
        "_refused",
        "_relieved",
        "_resumed",
        "_seen",
        "_shown_from",
        "_sleepers",
        "_step_at",
        "_tat",
        "_tolerance",
        "_trim",
        "_trim_at",
        "_trim_from",
        "_untracked",
        "_urgent",
        "_waiters",
        "adapter",
        "answers",
        "batchers",
        "broken",
        "calm",
        "configured",
        "down",
        "host",
        "in_flight",
        "key_of",
        "keys",
        "learned",
        "max",
        "outage_since",
        "paused_until",
        "pressure",
        "refusals",
        "refused_for",
        "settling",
        "slow_start",
        "slowdowns",
        "stop_cause",
        "stop_reason",
        "stop_status",
        "stop_until",
        "stopped",
        "system",
        "threshold",
        "where",
        "window",
    )

    def __init__(self, adapter: Adapter, limits: Limits, threshold: float) -> None:
        self.adapter = adapter
        self.system = adapter.system
        self.host = _host_of(adapter)
        self.where = f"{self.system} ({self.host})"
        self.keys = _KeyLocks()
        #: Records held until a change's writes have surely landed or died (no version
        #: token to stop a late one): the timer that frees each, and its key.
        self.settling: dict[Flow, tuple[asyncio.TimerHandle, str]] = {}
        #: Requests answered, per status (0: no answer).
        self.answers: Counter[int] = Counter()
        #: The record's canonical key (the adapter's, where it has one): one record
        #: written two ways ("7:5" and 5) is still one record for the order of changes.
        self.key_of: Any = getattr(adapter, "key", None) or _record_text
        self.max = limits.concurrency
        #: The lane's own limit (``max`` may be a share of it, see :meth:`resize`).
        self.configured = limits.concurrency
        self.window = float(min(limits.concurrency, _FIRST_WINDOW))
        self.slow_start = self.window < self.max
        self.in_flight = 0
        #: Waiting for a slot: changes' first requests, and before them (``_urgent``)
        #: those of changes under way and writes (see :meth:`acquire`).
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._interval = 1.0 / limits.rate if limits.rate else 0.0
        self._tolerance = (limits.burst - 1) * self._interval
        self._burst_tolerance = self._tolerance
        #: The configured pace (``_interval`` may be slower: a learned rate).
        self._rate_interval = self._interval
        #: Requests/s the system takes, learned from its 429s (0: nothing learned).
        self.learned = 0.0
        #: When the recent unthrottled answers came (while the lane is not calm).
        self._ok: deque[float] = deque(maxlen=4096)
        #: Answers are noted from this time on without a gap (a calm lane notes none).
        self._noted_from = math.inf
        #: When the recent 429s came.
        self._refused: deque[float] = deque(maxlen=4096)
        #: The share of answers that were not 429 when the rate was last learned.
        self._passed = 0.0
        #: The 429s stopped for a while since the rate was last learned (the pace helped).
        self._relieved = False
        #: The 429s did not follow our rate (fewer requests, same share refused): learn
        #: nothing from them until the pressure is gone.
        self._untracked = False
        #: When the last pause for a slowdown began, and when it ended.
        self._paused_at = 0.0
        self._resumed = 0.0
        #: No 429 since the rate was last learned: the pace climbs by a tenth every
        #: quarter second (a measure can be far under what the server takes).
        self._climbing = False
        self._step_at = 0.0  # the next step of the climb, or of a trial (answered())
        self._climbed_from = 0.0  # the pace before the climb's last step
        #: The pace at the 429 that stopped the climb (0: it goes on no more).
        self._ceiling = 0.0
        self._shown_from = 0.0  # when requests at the last step's pace began to go
        #: A trial of a slower pace: (when, the share of 429s before, the pace before).
        self._trim: tuple[float, float, float] | None = None
        self._trim_at = 0.0  # no trial before this
        self._trim_from = 0.0  # a trial counts the answers from this on
        self._tat = 0.0
        self._sleepers: set[asyncio.Future[None]] = set()
        self.paused_until = 0.0
        #: The share of recent answers that were 429s: of the last 20 or so, or of those
        #: of the last ``_RECENT`` seconds when more came (see :meth:`_heard_of`).
        self.pressure = 0.0
        self._seen = _FEW  # how many answers ``pressure`` is a share of (weighted)
        self._heard = 0.0  # when the last answer came (while the lane is not calm)
        self.threshold = threshold
        self._cut_until = 0.0
        self.slowdowns = 0
        self.down = 0  # connection failures in a row
        self.outage_since: float | None = None
        #: Records in a row refused for ``refused_for`` (credentials, or a redirect: the
        #: system's configuration, not the change): a few stop the system.
        self.refusals: set[str] = set()
        self.refused_for = ""
        #: Records in a row whose adapter raised (a bug in it): see ``_BROKEN_STOP``.
        #: A change that ends any other way ends the streak (a read's answer does not).
        self.broken: set[str] = set()
        self.stopped = False
        self.stop_status: Status = "failed"
        self.stop_reason = ""
        self.stop_cause = ""
        self.stop_until: float | None = None
        #: Nothing to learn from a plain answer: full window, no pressure, no outage, no
        #: refusals. While calm, an answer costs no bookkeeping.
        self.calm = not self.slow_start
        #: Reads and writes that go in batches (``None``: that kind goes one by one); set
        #: by the dispatcher, which knows the limits.
        self.batchers: tuple[_Batcher | None, _Batcher | None] = (None, None)

    # -- limits ---------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return max(1, int(self.window)) if self.max else 0

    @property
    def pace(self) -> float | None:
        """Requests/s the lane sends at while it paces itself under a learned rate."""
        return 1.0 / self._interval if self.learned and self._interval else None

    def resize(self, concurrency: int, rate: float | None, burst: int) -> None:
        """New limits (a share of limits held with other processes): requests in flight
        above a lower limit finish; nothing new starts until they are under it."""
        self.max = concurrency
        if self.window > concurrency:
            self.window = float(concurrency)
        elif self.window < 1.0 < concurrency + 1:  # from nothing: start as a new lane
            self.window = float(min(concurrency, _FIRST_WINDOW))
        self.slow_start = self.window < concurrency and (self.slow_start or not self.pressure)
        self._calm_if_idle()
        self._rate_interval = 1.0 / rate if rate else 0.0
        self._burst_tolerance = (burst - 1) * self._rate_interval
        self._set_pace()
        self._wake()

    def try_acquire(self, now: float) -> bool:
        """Take a slot if one is free and nothing makes the request wait."""
        if (
            self.in_flight < self.window
            and not self._waiters
            and not self._urgent
            and not self._interval
            and self.paused_until <= now
            and not self.stopped
        ):
            self.in_flight += 1
            return True
        return False

    async def acquire(self, loop: asyncio.AbstractEventLoop, until: float, urgent: bool) -> None:
        """A slot under the lane's limits by ``until``, or :class:`_Expired` /
        :class:`_Halted`.

        ``urgent``: a request of a change under way (it sent one already) or a write,
        which goes before the changes' first requests. In input order alone, a lane
        whose workers outnumber its slots (batching: enough workers to fill the
        batches) sent every change's read before any write: each change took as long
        as all of them together, the reads went stale meanwhile, and changes waited out
        their deadlines (one slot, 60 PERSCOM changes, a 3 s deadline: 11 to 13 unsent).
        """
        if self.stopped:
            raise _Halted
        if self.in_flight < self.limit and not self._waiters and not self._urgent:
            self.in_flight += 1
        else:
            fut: asyncio.Future[None] = loop.create_future()
            waiters = self._urgent if urgent else self._waiters
            waiters.append(fut)
            timer = loop.call_at(until, _expire, fut)
            try:
                await fut  # release() hands its slot over (in_flight already counted)
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self.release()
                else:
                    with contextlib.suppress(ValueError):
                        waiters.remove(fut)
                raise
            finally:
                timer.cancel()
        try:
            await self._pace(loop, until)
        except BaseException:
            self.release()
            raise

    async def _pace(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        late = False
        while True:
            now = loop.time()
            start = max(now, self.paused_until)
            tat = 0.0
            if self._interval:
                tat = max(self._tat, start)
                start = max(start, tat - self._tolerance)
            if start > until:
                raise _Expired
            if self._interval:
                self._tat = tat + self._interval
            if start <= now:
                return
            await self.sleep(loop, start - now)
            if self.stopped:
                raise _Halted
            woke = loop.time()
            if self.paused_until > woke:
                continue
            if not late and self.learned and woke - start > max(_LATE, 2.0 * self._interval):
                # Woken late (this process held up: a stall of the event loop), with
                # every request whose turn came meanwhile: together they would reach
                # the server as a burst, and a small bucket refuses most of it (a
                # stall of 30 ms every second kept a climb at half a server's 1,000/s).
                # Once, a turn at the pace again, behind those already given.
                late = True
                continue
            return

    def release(self) -> None:
        self.in_flight -= 1
        if self._urgent or self._waiters:
            self._wake()

    def _wake(self) -> None:
        while self.in_flight < self.limit:
            if self._urgent:
                fut = self._urgent.popleft()
            elif self._waiters:
                fut = self._waiters.popleft()
            else:
                return
            if not fut.done():
                self.in_flight += 1
                fut.set_result(None)

    async def sleep(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """Sleep, cut short when the lane is stopped."""
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(seconds, _wake, fut)
        self._sleepers.add(fut)
        try:
            await fut
        finally:
            handle.cancel()
            self._sleepers.discard(fut)

    def held(self, now: float) -> float | None:
        """The pace, or where 429s came over the last 2 s (the pace was past the
        server's limit), the rate answered over the 2 s before the last of them (since
        the last pause) where that is lower and was measured over half a second or more.
        A lane with little or no work left, its answers a trickle, keeps its pace; so
        does one whose last changes wait out a 429's ``Retry-After`` (what came after the
        last 429 is not its rate)."""
        pace = self.pace
        if pace is None:
            return None
        if self._refused and now - (last := self._refused[-1]) < 2.0:
            since = max(last - 2.0, self._resumed)
            if last - since >= 0.5:
                got = _since(self._ok, since) - _since(self._ok, last)
                pace = min(pace, got / (last - since))
        return pace if pace >= 1e-3 else None

    def seed(self, rate: float) -> None:
        """Start paced at ``rate`` requests/s, as if learned (an earlier run's pace): it
        climbs fast from there until the first 429, as from a measure taken in a hurry
        (the server may take more by now)."""
        self.learned = rate
        self._climbing = True
        self._climbed_from = rate
        self._relieved = True  # nothing says yet that pacing does not help
        self._set_pace()
        self.calm = False

    def answered(self, now: float) -> None:
        """An answer that is not a refusal: the system is up and takes our credentials."""
        self._ok.append(now)
        if self._noted_from > now:
            self._noted_from = now
        if self.learned:
            # Probe upwards: about two requests/s more for each second of answers, and
            # faster while no 429 has come since a rate measured in a hurry.
            self.learned += 2.0 / self.learned
            if now >= self._step_at:
                if self._climbing:
                    self._climb(now)
                elif self._ceiling and now - self._refused[-1] >= _CLIMB_QUIET:
                    self._climbing = True  # (the 429 that stopped it came alone)
                    self._climbed_from = self.learned
                    self._shown_from = now
                else:
                    self._trim_step(now)
            self._set_pace()
        elif self.pressure and now >= self._step_at and not self._untracked:
            self._trim_step(now)  # 429s under the slowdown's threshold, for long
            self._set_pace()
        self.down = 0
        self.outage_since = None
        if self.refusals:
            self.refusals.clear()
        if self.window < self.max:
            if self.slow_start:
                self.window += 1.0
                self.slow_start = self.window < self.max
            else:
                self.window = min(float(self.max), self.window + 1.0 / self.window)
            self.window = min(self.window, float(self.max))
            self._wake()
        if self.pressure:
            self._heard_of(0.0, now)
            if self.pressure <= 1e-3:
                self.pressure = 0.0
                self._seen = _FEW
                self._untracked = False
            elif self.pressure < self.threshold / 3:
                self._relieved = True
        self._calm_if_idle()

    def _calm_if_idle(self) -> None:
        """Calm when there is nothing to learn from plain answers (full window, no
        pressure, no learned rate): a calm lane notes none, and what it noted goes
        stale."""
        if self.window >= self.max and not self.pressure and not self.learned:
            self.calm = True
            self._noted_from = math.inf
            self._ok.clear()
            self._refused.clear()
        else:
            self.calm = False

    def _climb(self, now: float) -> None:
        """A step of the climb: a tenth more, while the pace is what holds the lane back:
        the answers since the last step showed (over the last second at most) came at
        the pace. Requests already waiting their turn when a step is taken keep the pace
        they got, so the step shows only after them: climbing while the answers came at
        half the pace ran it far past what was sent, and the first 429 then came with a
        pace well over the server's limit."""
        self._step_at = now + _CLIMB_STEP
        since = max(now - 1.0, self._resumed, self._shown_from)
        if now - since < _CLIMB_STEP:
            return  # just resumed, or the last step has not shown: nothing to go by yet
        answered = _since(self._ok, since) / (now - since)
        if answered >= _CLIMB_SHOWN * self.learned:
            self._climbed_from = self.learned
            self.learned *= 1.1
            self._shown_from = max(now, self._tat)  # (the turns already given, at the old pace)
            self._step_at = self._shown_from + _CLIMB_STEP

    def _set_pace(self) -> None:
        """The gap between requests from the configured rate and the learned one: evenly
        while a rate is learned (a burst is what the server refused), else as configured."""
        if self.learned:
            self._interval = max(self._rate_interval, 1.0 / self.learned)
            self._tolerance = 0.0
        else:
            self._interval = self._rate_interval
            self._tolerance = self._burst_tolerance

    def _trim_step(self, now: float) -> None:
        """(Called from :meth:`answered`, which sets the pace after.) Past the limit,
        the slow climb would go on until a third of the answers are 429s. While more
        than ``_TRIM_ABOVE`` of them are (over 2 s), try a pace under what got through
        (slower by that share and 5%, at most by half) and keep it if the share falls by
        half or more within a second or so: the 429s follow the pace (a rate limit). If
        it does not (429s at random), the pace goes back and no trial is made for 30 s.

        So too for a lane not paced at all whose 429s stay under the slowdown's
        threshold (a tenth or a fifth of its answers, for seconds: a server's limit a
        little under what the lane sends): it tries the pace that got through over the
        last second or two; if the share does not fall, it goes back to no pace."""
        self._step_at = now + _CLIMB_STEP
        trial = self._trim
        if trial is None:
            if now < self._trim_at:
                return
            # (Not the 429s a kept trial was made for: they would make the next one.)
            since = max(now - 2.0, self._trim_from)
            if not self.learned:
                since = max(since, self._resumed, self._noted_from)
                if now - since < 1.0:
                    return
            taken, refused = _since(self._ok, since), _since(self._refused, since)
            if taken + refused < 40 or refused <= _TRIM_ABOVE * (taken + refused):
                return
            share = refused / (taken + refused)
            self._trim = (now, share, self.learned)
            if self.learned:
                # What got through, and a little less: a server's bucket empty at the
                # limit refills only under it. (At most half: the share over 2 s can be
                # far above the recent one that makes slowdowns, as the 429s end.)
                pace = self.learned * max(0.5, 0.95 - share)
                through = self._through(since, now)
                # (Over half a second or more at about the pace: not a lane whose work
                # ran out, or waiting out a Retry-After.)
                if (
                    through is not None
                    and through[1] >= _SHORT_MEASURE
                    and through[2] >= 0.8 * self.learned
                ):
                    pace = max(0.5 * self.learned, min(self.learned, 0.95 * through[0]))
                self.learned = max(1.0, pace)
            else:
                # Not paced, the lane sent at no rate of its own: what got through in
                # its best quarter second (changes waiting out a Retry-After leave it
                # idle for a while), a little less. As a rate learned at a slowdown: the
                # next one drops it if it let no larger share through (429s at random).
                self.learned = max(1.0, 0.95 * _peak(self._ok, since, now))
                self._passed = 1.0 - share
                self._relieved = False
            return
        started, before, pace = trial
        since = started + _CLIMB_STEP  # (answers to requests sent before it: not counted)
        taken, refused = _since(self._ok, since), _since(self._refused, since)
        if now - started < 1.0 or (taken + refused < 40 and now - started < 5.0):
            return
        self._trim = None
        if refused < 0.5 * before * (taken + refused):
            self._trim_at = now  # the 429s followed: slower it stays (and may go on)
            self._trim_from = since
        elif pace:
            self.learned = max(self.learned, pace)
            self._trim_at = now + 30.0
        else:
            # A lane that was not paced: its 429s do not follow its rate, and the next
            # slowdown learns no pace from them either (until they are gone).
            self.learned = 0.0
            self._untracked = True
            self._trim_at = now + 30.0

    def throttled(self, after: float | None, now: float) -> float | None:
        """A 429: the pause when it made the system slow down, else ``None``."""
        self.calm = False
        if self._noted_from > now:
            self._noted_from = now
        if self._climbing and now >= self._cut_until:  # (not a request from before the pause)
            # Past the limit: back to the last step's pace, then only the slow climb. Or
            # a burst of requests reached the server together (it, or this process, held
            # up for some milliseconds), and a small bucket refused some far under its
            # rate: the climb goes on after a while without 429s, until a 429 comes
            # again at a pace it came at before.
            self._climbing = False
            self._ceiling = 0.0 if self.learned <= 1.05 * self._ceiling else self.learned
            self.learned = self._climbed_from
            self._set_pace()
        self.down = 0
        self.outage_since = None
        self._refused.append(now)
        self._heard_of(1.0, now)
        if self.pressure < self.threshold or now < self._cut_until:
            return None
        pause = after if after is not None else 1.0
        self.window = max(min(1.0, float(self.max)), self.window / 2)
        self.slow_start = False
        self.paused_until = max(self.paused_until, now + pause)
        self._learn(now)
        self._paused_at = now
        self._resumed = self.paused_until
        self._cut_until = now + max(pause, 1.0)
        # Another slowdown takes 429s after this one: the few answers after a pause do
        # not bring the share down from over the threshold, and one chance 429 among
        # them would pause the lane again, and again.
        self.pressure = self.threshold / 2
        self.slowdowns += 1
        return pause

    def _heard_of(self, refused: float, now: float) -> None:
        """One more answer in the share of 429s, ``refused`` 1 for a 429. Each answer
        weighs a twentieth of the recent ones, or less when more than 20 came in the last
        ``_RECENT`` seconds: with 10% of 429s at random at 2,000 answers/s, more than 30%
        of some twenty answers in a row are 429s every few seconds, and each slowdown
        paused the lane and paced it slower for nothing; of a quarter of a second's 500
        answers, never.

        Without pressure, plain answers are not weighed one by one: the first 429 after
        them, on a lane paced evenly, weighs against those of the last ``_RECENT``
        seconds. A burst of 429s to paced requests that reached the server together (the
        server, or this process, held up for some milliseconds, and a small bucket
        refused what came in them) is then a share of that quarter second, not of twenty
        answers (traced against the sandbox's 1,000/s: a slowdown, a pause and the pace
        cut from 686 to 475; an even pace past the limit is met by the trial of a slower
        pace instead). On a lane not paced, 429s after a calm spell mean it sends too
        fast: twenty answers are enough."""
        if not self.pressure and self.learned:
            self._seen = max(_FEW, float(_since(self._ok, now - _RECENT)))
            self._heard = now
        keep = max(1.0 - 1.0 / _FEW, 1.0 - (now - self._heard) / _RECENT)
        self._heard = now
        seen = self._seen * keep
        self._seen = seen + 1.0
        self.pressure = (self.pressure * seen + refused) / self._seen

    def _learn(self, now: float) -> None:
        """Too many 429s: pace the lane under the rate the system let through once its
        429s came (see :meth:`_through`), or with too few answers for that, under the
        rate of all answers since the last pause began (at most the last 2 s; a bucket
        refilled during the pause), or halve the learned rate when neither can be
        measured. Fewer requests in flight alone cannot meet a rate limit: one request
        at a time to a fast server is still hundreds a second.

        Under a rate limit, the 429s stop for a while once the lane sends slower. When
        pacing slower brought no such relief and let no larger share through (429s at
        random, or for reasons of the server's own), the pace is dropped: lowering it
        again would only spiral down to a request a second."""
        if self._untracked:
            return
        ok, refused = self._ok, self._refused
        noted = max(now - 2.0, self._noted_from)
        active = max(noted, self._resumed)  # since the last pause ended
        # ... and since it began: a bucket refilled during the pause, as far as it holds,
        # and let that through right after it, far above its rate.
        since = max(noted, self._paused_at)
        taken = _since(ok, since)
        sent = taken + _since(refused, since)
        passed = taken / (sent or 1)
        if self.learned:
            if sent < 0.8 * self.learned * max(now - active, 0.1):
                return  # something else held the lane under its pace: nothing to learn
            if not self._relieved and taken >= 3 and passed < 0.75 and passed <= self._passed + 0.1:
                self._untracked = True
                self.learned = 0.0
                self._climbing = False
                self._set_pace()
                return
        # A measure over a short while can be far under what the server takes (a burst
        # refused within milliseconds): from such a measure the pace climbs fast.
        hurried = now - active < _SHORT_MEASURE
        through = self._through(active, now)
        if through is not None:
            rate = 0.95 * through[0]
            self.learned = max(1.0, min(rate, self.learned) if self.learned else rate)
            hurried = False
        elif taken >= 3:
            # (With the pause: at most the server's rate, its bucket may hold less than
            # the pause's worth.)
            rate = 0.9 * taken / max(now - since, 0.1)
            self.learned = max(1.0, min(rate, self.learned) if self.learned else rate)
        elif self.learned:
            self.learned = max(1.0, self.learned / 2)
        else:
            return
        # (A measure in a hurry can be far off: whether the next pace lets a larger
        # share through says nothing then.)
        self._passed = -1.0 if hurried else passed
        self._relieved = False
        self._climbing = hurried
        self._ceiling = 0.0
        self._trim = None
        self._climbed_from = self.learned
        self._step_at = max(now, self.paused_until) + _CLIMB_STEP
        ok.clear()
        refused.clear()
        self._set_pace()  # evenly from now on: a burst is what the server refused

    def _through(self, since: float, now: float) -> tuple[float, float, float] | None:
        """The rate of answers that got through from the first 429 at or after ``since``
        to ``now``, over how long, and the rate of all answers over it; ``None`` with
        fewer than ``_THROUGH`` that got through.

        Once 429s come, a server's bucket is dry: what it lets through then is its rate,
        whatever the lane sends and however large the bucket. Before the first 429 a full
        bucket lets a burst through far above the rate (a second's worth against 1,000/s
        measured 1,700), and a lane that was calm noted nothing of it."""
        dry = _first_since(self._refused, since)
        through = _since(self._ok, dry)
        if through < _THROUGH or now <= dry:
            return None
        span = now - dry
        return through / span, span, (through + _since(self._refused, dry)) / span

    # -- records whose writes may still land ------------------------------------------------

    def hold(self, flow: Flow, key: str, loop: asyncio.AbstractEventLoop) -> None:
        """Keep ``key`` (held by ``flow``'s change) until ``flow.settled_at``."""
        self.settling[flow] = (loop.call_at(flow.settled_at, self.settled, flow), key)

    def settled(self, flow: Flow) -> None:
        """``flow``'s writes have landed or died (the time passed, or an answer said):
        free its record."""
        entry = self.settling.pop(flow, None)
        if entry is not None:
            entry[0].cancel()
            self.keys.release(entry[1])

    # -- stopping -------------------------------------------------------------------------

    def stop(self, status: Status, cause: str, reason: str, until: float | None) -> None:
        """Stop the lane: waiting changes end with ``status`` and ``reason``."""
        self.stopped = True
        self.stop_status = status
        self.stop_cause = cause
        self.stop_reason = reason
        self.stop_until = until
        for waiters in (self._urgent, self._waiters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_exception(_Halted())
        for fut in list(self._sleepers):
            _wake(fut)

    def is_stopped(self, now: float) -> bool:
        if self.stopped and self.stop_until is not None and now >= self.stop_until:
            self.reopen()
        return self.stopped

    def reopen(self) -> None:
        self.stopped = False
        self.stop_until = None
        self.outage_since = None
        self.refusals.clear()
        self.broken.clear()
        self.down = 0
        self.calm = False


def _not_a_change(item: Any, index: int) -> InvalidChange:
    """An input item that is not a change at all (a dict, a plan line's text): the
    caller's mistake, said as such."""
    shown = repr(item)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidChange(
        f"item {index} of the input is not a change but a {type(item).__name__}: {shown} "
        "(build changes with Assign, Unassign, ... or decode_change)"
    )


def _refuse_non_changes(source: object, kinds: Any, wanted: str) -> None:
    """An input that is not changes at all (a number, a string: not its letters)."""
    if not isinstance(source, kinds) or isinstance(source, str | bytes):
        raise InvalidChange(
            f"the input is not changes (got {type(source).__name__}): give {wanted}"
        )


def _within_bounds(value: msgspec.Struct, what: str) -> None:
    """Check the bounds a struct's fields declare: msgspec checks them when it decodes
    (a TOML file), not when Python code builds the struct (``Limits(concurrency=0)``
    would stall its system until every deadline)."""
    try:
        msgspec.convert(msgspec.to_builtins(value), type(value))
    except msgspec.ValidationError as e:
        raise ConfigError(f"{what}: {e}") from None


def _since(times: deque[float], since: float) -> int:
    """How many of ``times`` (in order) are at or after ``since``."""
    n = 0
    for t in reversed(times):
        if t < since:
            break
        n += 1
    return n


def _first_since(times: deque[float], since: float) -> float:
    """The first of ``times`` (in order) at or after ``since`` (``since`` if none)."""
    first = since
    for t in reversed(times):
        if t < since:
            break
        first = t
    return first


def _peak(times: deque[float], since: float, now: float) -> float:
    """The most of ``times`` (in order) in any ``_RECENT`` seconds from ``since`` to
    ``now``, per second."""
    bins = [0] * (int((now - since) / _RECENT) + 1)
    for t in reversed(times):
        if t < since:
            break
        bins[int((now - t) / _RECENT)] += 1
    return max(bins) / _RECENT


def _record_text(change: Change) -> str:
    return str(change.record)


def _host_of(adapter: Adapter) -> str:
    base = getattr(adapter, "base", None)
    if not isinstance(base, str):
        return "?"
    parts = urlsplit(base)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = port or {"https": 443, "http": 80}.get(parts.scheme)
    return f"{host}:{port}" if port else host


class _Track:
    """What a worker is doing, for a run that stops early."""

    __slots__ = ("flow", "in_request", "pool")

    def __init__(self, pool: _Pool | None = None) -> None:
        self.pool = pool
        self.flow: Flow | None = None
        self.in_request = False


async def _resting(track: _Track, waiting: Awaitable[None]) -> None:
    """Await ``waiting`` while the lane's pool counts this worker as resting, so that
    another may take the lane's next change meanwhile."""
    pool = track.pool
    if pool is None:
        await waiting
        return
    pool.resting()
    try:
        await waiting
    finally:
        pool.back()


class _Feed(Protocol):
    """Where a worker (:meth:`Dispatcher._drive`) takes its changes and gives results."""

    def take(self) -> tuple[int, Change, bool] | None:
        """The next change (its index, itself, read it first), or ``None``: see ``more``."""

    async def more(self) -> bool:
        """After ``take`` gave nothing: wait for more (``True``), or end (``False``)."""

    def give(self, result: Result) -> bool:
        """Hand ``result`` on; ``False``: no room now, ``put`` it (nothing else done)."""

    async def put(self, result: Result) -> None:
        """Hand ``result`` on, waiting for room."""

    def cancelled(self, track: _Track) -> None:
        """The worker was cancelled (``track.flow``: the change it was on, if any)."""

    async def failed(self, error: Exception) -> None:
        """The worker's code raised ``error`` (a bug): surface it (or raise it again)."""

    def closed(self) -> None:
        """The worker is done taking changes, whichever way."""

    async def end(self) -> None:
        """The worker ended without an error."""


class _One:
    """The feed of :meth:`Dispatcher.send`: one change, and its result."""

    __slots__ = ("item", "result")

    def __init__(self, change: Change, read_first: bool) -> None:
        self.item: tuple[int, Change, bool] | None = (0, change, read_first)
        self.result: Result | None = None

    def take(self) -> tuple[int, Change, bool] | None:
        item, self.item = self.item, None
        return item

    async def more(self) -> bool:
        return False

    def give(self, result: Result) -> bool:
        self.result = result
        return True

    async def put(self, result: Result) -> None:  # pragma: no cover - give never refuses
        self.result = result

    def cancelled(self, track: _Track) -> None:
        pass

    async def failed(self, error: Exception) -> None:
        raise error  # to the caller of send()

    def closed(self) -> None:
        pass

    async def end(self) -> None:
        pass


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """A preflight check of one system (:meth:`Dispatcher.check`).

    Attributes:
        system: The system.
        host: ``host:port`` it was reached at.
        reachable: An answer came back.
        authenticated: The credentials were accepted (``None``: not known, e.g. the
            system answered only 429 or 503, or with a redirect elsewhere).
        latency: Seconds the answer took.
        status: The HTTP status of the answer.
        error: What is wrong, when something is.
        skipped: Why the system was not checked, when it was not: its limits allow no
            request from this process now (limits shared with other workers give it no
            slot: theirs are in use, and their requests are its check; or it is paused).
            Nothing is known to be wrong; :attr:`ok` is false, as nothing was proven.
    """

    system: str
    host: str
    reachable: bool
    authenticated: bool | None = None
    latency: float | None = None
    status: int | None = None
    error: str | None = None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        """Reachable and the credentials accepted."""
        return self.reachable and self.authenticated is True and self.error is None


class Dispatcher:
    """Sends changes to their systems. Use as ``async with Dispatcher(...) as d:``.

    Args:
        adapters: One adapter per system: a list, a mapping of system name to adapter, or
            one adapter by itself.
        transport: How requests are sent (a :class:`~patchassign.transports.Transport`):
            by default an owned :class:`~patchassign.transports.AiohttpTransport` with a
            pool of ``concurrency`` connections; :class:`~patchassign.MockTransport` in
            tests.
        session: An aiohttp session for the default transport (the caller keeps it open
            and closes it). It keeps aiohttp's silent resend of idempotent requests,
            which the owned session turns off (see ``docs/reliability.md``).
        concurrency: Requests in flight at once, over all systems.
        limits: Per-system :class:`Limits`, over each adapter's own ``limits`` (its
            system's documented limits).
        retry: The :class:`RetryPolicy` (retries, deadlines, fail-fast budgets).
        verify_tls: Verify servers' TLS certificates (default transport). Turning it off
            is logged as a warning.
        dry_run: Read records (GET) but never write: each change that would write ends
            ``planned``, with the request in :attr:`Result.planned`.
        buffer: Changes read ahead and waiting, per system, at most.
        hooks: :class:`~patchassign.hooks.Hooks` (one, or several) to tell of results,
            retries, slowdowns and stops.
        seed: Seed for the backoff jitter (tests).
        paces: Requests/s to start systems at, as if learned from their 429s: what
            :meth:`settled_paces` said at the end of an earlier run. The lane sends at
            that pace from its first request (no burst of 429s to learn it again) and
            climbs from there until its first 429, as from a rate measured in a hurry.
    """

    def __init__(
        self,
        adapters: Adapter | Iterable[Adapter] | Mapping[str, Adapter],
        *,
        transport: Transport | None = None,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = 64,
        limits: Mapping[str, Limits] | None = None,
        retry: RetryPolicy | None = None,
        verify_tls: bool = True,
        dry_run: bool = False,
        buffer: int = 10_000,
        hooks: Hooks | Iterable[Hooks] = (),
        seed: int | None = None,
        paces: Mapping[str, float] | None = None,
    ) -> None:
        self.adapters: dict[str, Adapter] = {}
        if isinstance(adapters, Mapping):
            for name, a in adapters.items():
                if getattr(a, "system", None) != name:
                    raise ConfigError(
                        f"adapters[{name!r}]: not an adapter for {name!r}: {a!r} (its system "
                        f"is {getattr(a, 'system', None)!r})"
                    )
                self.adapters[name] = a
        else:
            given: object = adapters  # untyped callers pass anything
            if isinstance(getattr(given, "system", None), str):
                given = [given]  # one adapter, given by itself
            elif not isinstance(given, Iterable) or isinstance(given, (str, bytes)):
                raise ConfigError(
                    f"adapters must be adapters (a list, or a mapping by system), got "
                    f"{type(given).__name__}"
                )
            for a in given:
                system = getattr(a, "system", None)
                if not isinstance(system, str):
                    raise ConfigError(f"not an adapter (it has no system name): {a!r}")
                if self.adapters.get(system, a) is not a:
                    raise ConfigError(f"two adapters for the system {system!r}: give one")
                self.adapters[system] = cast("Adapter", a)
        if not _whole(concurrency) or not 1 <= concurrency <= 10_000:
            raise ConfigError(f"concurrency must be between 1 and 10000, got {concurrency!r}")
        if not _whole(buffer) or not 1 <= buffer <= 10_000_000:
            raise ConfigError(f"buffer must be between 1 and 10000000, got {buffer!r}")
        if transport is not None and session is not None:
            raise ConfigError("give a transport or a session, not both")
        if transport is not None and not callable(getattr(transport, "send", None)):
            raise ConfigError(
                f"transport: not a Transport (it has no send method): {type(transport).__name__}"
            )
        for flag, value in (("verify_tls", verify_tls), ("dry_run", dry_run)):
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} must be True or False, got {value!r}")
        self.concurrency = concurrency
        self.buffer = buffer
        self.limits = {name: a.limits for name, a in self.adapters.items()}
        for name, lim in (limits or {}).items():
            if not isinstance(lim, Limits):
                raise ConfigError(f"limits[{name!r}] must be a Limits, got {type(lim).__name__}")
            if name not in self.adapters:
                # Not an error: one table of limits may serve dispatchers for a few of its
                # systems each. Said, because a misspelt name leaves its system unlimited.
                log.warning(
                    "limits for %r ignored: no adapter for that system here (systems: %s)",
                    name,
                    ", ".join(sorted(self.adapters)) or "none",
                )
        self.limits.update({k: v for k, v in (limits or {}).items() if k in self.adapters})
        for name, lim in self.limits.items():
            if not isinstance(lim, Limits):
                raise ConfigError(f"limits[{name!r}] must be a Limits, got {type(lim).__name__}")
            _within_bounds(lim, f"limits[{name!r}]")
        self.retry = retry or RetryPolicy()
        if not isinstance(self.retry, RetryPolicy):
            raise ConfigError(f"retry must be a RetryPolicy, got {type(self.retry).__name__}")
        _within_bounds(self.retry, "retry")
        self.verify_tls = verify_tls
        self.dry_run = dry_run
        self._rng = random.Random(seed)  # noqa: S311 - jitter, not secrets
        self.transport = transport
        self._session = session
        self._own_transport = transport is None
        self._slots = _Slots(concurrency)
        self._lanes = {
            name: _Lane(a, self.limits.get(name, Limits()), self.retry.slowdown)
            for name, a in self.adapters.items()
        }
        for name, lane in self._lanes.items():
            lim = self.limits.get(name, Limits())
            most = getattr(lane.adapter, "batch_max", (0, 0))
            sizes = [most[k] if lim.batch is None else min(lim.batch, most[k]) for k in (0, 1)]
            lane.batchers = cast(
                "tuple[_Batcher | None, _Batcher | None]",
                tuple(
                    _Batcher(self, lane, bool(k), sizes[k], lim.linger) if sizes[k] > 1 else None
                    for k in (0, 1)
                ),
            )
        for name, pace in (paces or {}).items():
            if not (_number(pace) and 0 < pace <= 1_000_000):
                raise ConfigError(
                    f"paces[{name!r}] must be requests/s above 0 (at most 1000000), got {pace!r}"
                )
            if name in self._lanes:
                self._lanes[name].seed(float(pace))
            else:
                log.warning("pace for %r ignored: no adapter for that system here", name)
        hooks = [hooks] if isinstance(hooks, Hooks) else list(hooks)
        for hook in hooks:
            if not isinstance(hook, Hooks):
                raise ConfigError(f"hooks: not a patchassign.Hooks: {hook!r}")
            for name in ("on_result", "on_retry", "on_slowdown", "on_stop"):
                if inspect.iscoroutinefunction(getattr(hook, name)):
                    # Called and never awaited, it would do nothing (and warn at exit).
                    raise ConfigError(
                        f"hooks: {type(hook).__name__}.{name} is async; hooks are called "
                        "synchronously from the event loop: make it a plain method (it may "
                        "start a task, or put the event on a queue)"
                    )
        self._on_result = [h.on_result for h in hooks if _overrides(h, "on_result")]
        self._on_retry = [h.on_retry for h in hooks if _overrides(h, "on_retry")]
        self._on_slowdown = [h.on_slowdown for h in hooks if _overrides(h, "on_slowdown")]
        self._on_stop = [h.on_stop for h in hooks if _overrides(h, "on_stop")]
        # A server may echo a credential in an error message: masked in every result,
        # event and check (every form the adapters send it in).
        secrets: list[str] = []
        for adapter in self.adapters.values():
            auth = getattr(adapter, "auth_headers", None)
            if auth is not None:
                secrets += header_secrets(auth())
        self._scrub: Scrubber | None = Scrubber(secrets) if secrets else None

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
        """Open the default transport (when the dispatcher owns one). ``async with`` calls
        this."""
        if self.transport is None:
            from .transports._aiohttp import AiohttpTransport

            aio = AiohttpTransport(
                session=self._session, limit=self.concurrency, verify_tls=self.verify_tls
            )
            aio.open()
            self.transport = aio

    async def close(self) -> None:
        """Close the transport if the dispatcher owns it."""
        if self._own_transport and self.transport is not None:
            closer = getattr(self.transport, "aclose", None)
            if closer is not None:
                await closer()
            self.transport = None

    # -- public API ----------------------------------------------------------------------

    def run(
        self,
        changes: Source | Mapping[str, Source],
        *,
        read_first: ReadFirst = False,
        checked: bool = False,
    ) -> Run:
        """Send ``changes``; iterate the returned :class:`Run` for results as they complete.

        The input is read ahead into each system's buffer (at most ``buffer`` changes
        per system) and results wait for the consumer (backpressure): memory does not
        grow with the input. A single input stops being read while the buffer of the
        system its next change is for is full; give a mapping of system name to that
        system's own input (a source per system, as a bulk run's journal does) and no
        system's backlog ever holds back another's. With a mapping, a result's ``index``
        is the change's position in its system's input.

        ``read_first``: read the record before writing, even where the change does not
        need it, so that a change already in place is not sent again (a resume after a
        crash): ``True`` for every change, or a function of ``(system, index)``. A run
        starts with every system open again, even one a previous run stopped.

        ``checked``: every change was checked by its system's adapter already (a bulk
        run's journal holds only checked changes): it is not checked again.
        """
        sources = changes.values() if isinstance(changes, Mapping) else (changes,)
        for source in sources:
            _refuse_non_changes(
                source,
                Iterable | AsyncIterable,
                "an iterable or async iterable of changes (or a mapping of system name to one)",
            )
        for lane in self._lanes.values():
            lane.reopen()
        return Run(self, changes, read_first, checked)

    async def send(self, change: Change, *, read_first: bool = False) -> Result:
        """Send one change and return its result.

        Raises:
            InvalidChange: ``change`` is not a change (a dict, a plan line's text).
        """
        if not isinstance(change, _Change):
            raise _not_a_change(change, 0)
        lane = self._lanes.get(change.system)
        if lane is None:
            return self._no_adapter(0, change)
        feed = _One(change, read_first)
        await self._drive(lane, _Track(), feed, None, False)
        assert feed.result is not None
        return feed.result

    async def send_all(self, changes: Iterable[Change] | AsyncIterable[Change]) -> list[Result]:
        """Send ``changes`` concurrently; results in input order."""
        async with self.run(changes) as run:
            out = [r async for r in run]
        out.sort(key=lambda r: r.index)
        return out

    async def check(
        self, changes: Iterable[Change] = (), *, systems: Iterable[str] | None = None
    ) -> dict[str, Check]:
        """Preflight: one authenticated read per system, before any write.

        For each system the first of ``changes`` that belongs to it is read (so a plan's
        own record proves access); a system without one is read with its adapter's
        ``probe()`` request. Nothing is written.

        Args:
            changes: Changes whose records to read (the first per system is used).
            systems: The systems to check (default: every configured one); one name may
                be given by itself.

        Returns:
            :class:`Check` per system name.

        Raises:
            InvalidChange: ``changes`` holds something that is not a change.
        """
        if isinstance(systems, str):
            systems = [systems]
        names = list(self.adapters) if systems is None else list(dict.fromkeys(systems))
        _refuse_non_changes(changes, Iterable, "an iterable of changes")
        samples: dict[str, Change] = {}
        for i, change in enumerate(changes):
            if not isinstance(change, _Change):
                raise _not_a_change(change, i)
            if change.system in names and change.system not in samples:
                samples[change.system] = change
                if len(samples) == len(names):
                    break
        results = await asyncio.gather(*(self._check(n, samples.get(n)) for n in names))
        return {
            name: c
            if c.error is None and c.skipped is None
            else msgspec.structs.replace(
                c,
                error=None if c.error is None else self._clean(c.error),
                skipped=None if c.skipped is None else self._clean(c.skipped),
            )
            for name, c in zip(names, results, strict=True)
        }

    def resize(self, system: str, concurrency: int, rate: float | None, burst: int = 1) -> None:
        """Set ``system``'s limits now, while running: ``concurrency`` requests in flight
        (0: send nothing until raised again), ``rate`` per second (``None``: no limit),
        ``burst``. Requests in flight above a lowered limit finish; nothing new starts
        until they are under it. For limits shared with other processes
        (:class:`patchassign.journal.SharedLimits`); a plain dispatcher's limits are
        its ``limits`` argument."""
        lane = self._lane(system)
        if not (
            _whole(concurrency)
            and 0 <= concurrency <= 10_000
            and _whole(burst)
            and burst >= 1
            and (rate is None or (_number(rate) and 0 < rate <= 1_000_000))
        ):
            raise ConfigError(
                f"limits of {system!r}: concurrency 0 to 10000, burst >= 1, rate > 0 (at "
                f"most 1000000) or None; got {concurrency!r}, {rate!r}, {burst!r}"
            )
        lane.resize(concurrency, rate, burst)

    def in_flight(self, system: str) -> int:
        """Requests (or waits for a send slot) of ``system`` in flight now."""
        lane = self._lane(system)
        return lane.in_flight

    def _lane(self, system: str) -> _Lane:
        lane = self._lanes.get(system)
        if lane is None:
            raise ConfigError(
                f"no system {system!r} here (systems: {', '.join(sorted(self._lanes))})"
            )
        return lane

    @property
    def counts(self) -> Counter[tuple[str, int]]:
        """Requests answered, per ``(system, status)``; ``status`` 0: no answer."""
        return Counter(
            {
                (name, status): n
                for name, lane in self._lanes.items()
                for status, n in lane.answers.items()
            }
        )

    def slowdowns(self) -> dict[str, int]:
        """How many times each system was slowed down after many 429s."""
        return {name: lane.slowdowns for name, lane in self._lanes.items()}

    def paces(self) -> dict[str, float]:
        """Requests/s each system is paced at now, learned from its 429s (the systems
        that are not pacing themselves are absent; a configured ``rate`` is a ceiling)."""
        return {name: pace for name, lane in self._lanes.items() if (pace := lane.pace)}

    def settled_paces(self) -> dict[str, float]:
        """What a later run should start each paced system at (``Dispatcher(paces=...)``):
        its pace, or where 429s came over the last two seconds, the rate its answers got
        through at over the two seconds before the last of them where that is lower. A
        pace climbing when the run stopped may be past the server's limit; a resume
        started there would meet a burst of 429s and a pause. Lower is cheap: the pace
        climbs from there. A system with no work left keeps its pace (its answers over
        the last seconds are a trickle, or none, or retries waiting out a 429)."""
        now = asyncio.get_running_loop().time() if _loop_running() else time.monotonic()
        return {name: pace for name, lane in self._lanes.items() if (pace := lane.held(now))}

    def states(self) -> dict[str, str]:
        """Each system's state now, for a progress display: ``stopped`` (fail-fast),
        ``paused`` (unreachable, or waiting out a server's Retry-After), ``throttled``
        (slowed down after many 429s), or ``running``."""
        now = asyncio.get_running_loop().time() if _loop_running() else 0.0
        out = {}
        for name, lane in self._lanes.items():
            if lane.stopped:
                out[name] = "stopped"
            elif lane.paused_until > now or lane.outage_since is not None:
                out[name] = "paused"
            elif lane._cut_until > now or lane.pressure >= lane.threshold:
                out[name] = "throttled"
            else:
                out[name] = "running"
        return out

    def stopped(self) -> dict[str, str]:
        """Systems stopped by fail-fast, with the reason."""
        return {name: lane.stop_reason for name, lane in self._lanes.items() if lane.stopped}

    # -- preflight ------------------------------------------------------------------------

    async def _check(self, system: str, sample: Change | None) -> Check:
        lane = self._lanes.get(system)
        if lane is None:
            return Check(system=system, host="?", reachable=False, error="no adapter configured")
        transport = self._transport()
        adapter = lane.adapter
        if sample is not None:
            request = adapter.read(sample)

            def judge(r: HttpResponse) -> Any:
                return adapter.current(sample, r)
        else:
            probe = getattr(adapter, "probe", None)
            probed = getattr(adapter, "probed", None)
            if probe is None or probed is None:
                return Check(
                    system=system,
                    host=lane.host,
                    reachable=False,
                    error=f"{lane.where}: the adapter has no probe(); give a plan to read one of its records",
                )
            try:
                request = probe()
            except NotImplementedError:
                return Check(
                    system=system,
                    host=lane.host,
                    reachable=False,
                    error=f"{lane.where}: no probe request; give a plan to read one of its records",
                )
            judge = probed
        loop = asyncio.get_running_loop()
        policy = self.retry
        for attempt in range(1, 4):
            if lane.limit == 0:
                return Check(
                    system=system,
                    host=lane.host,
                    reachable=False,
                    skipped=f"{lane.where}: its limits give this process no request now "
                    "(shared limits: the other workers hold every slot)",
                )
            try:  # under the system's limits (shared ones too), like every request
                await lane.acquire(loop, loop.time() + max(policy.timeout, 60.0), False)
            except (_Expired, _Halted):
                return Check(
                    system=system,
                    host=lane.host,
                    reachable=False,
                    skipped=f"{lane.where}: no room under its limits to send the check "
                    f"within {max(policy.timeout, 60.0):g}s",
                )
            t0 = loop.time()
            try:
                response = await transport.send(request, timeout=policy.timeout)
            except ConnectError as e:  # SetupError too: nothing was sent
                return Check(system=system, host=lane.host, reachable=False, error=f"{system}: {e}")
            except TransportError as e:
                if attempt == 3:
                    return Check(
                        system=system, host=lane.host, reachable=False, error=f"{system}: {e}"
                    )
                await asyncio.sleep(backoff_delay(attempt, None, policy, self._rng))
                continue
            finally:
                lane.release()
            latency = loop.time() - t0
            verdict = judge(response)
            base = Check(system=system, host=lane.host, reachable=True, latency=latency)
            replace = msgspec.structs.replace
            if isinstance(verdict, Current):
                return replace(base, authenticated=True, status=response.status)
            if isinstance(verdict, Failed):
                if verdict.auth:
                    return replace(
                        base,
                        authenticated=False,
                        status=response.status,
                        error=f"{lane.where}: credentials refused: {verdict.reason}",
                    )
                # The record could not be read, but not for the credentials (a redirect
                # elsewhere proves nothing of them: the API was not reached).
                return replace(
                    base,
                    authenticated=None if verdict.redirected else True,
                    status=response.status,
                    error=f"{lane.where}: reading a record: {verdict.reason}",
                )
            if attempt == 3 or (verdict.after or 0) > 10:
                return replace(
                    base,
                    authenticated=None,
                    status=response.status,
                    error=f"{lane.where}: {verdict.reason}",
                )
            await asyncio.sleep(backoff_delay(attempt, verdict.after, policy, self._rng))
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one change -----------------------------------------------------------------------

    def _transport(self) -> Transport:
        if self.transport is None:
            raise RuntimeError("the dispatcher is not started: use 'async with Dispatcher(...)'")
        return self.transport

    def _no_adapter(self, index: int, change: Change) -> Result:
        return Result(
            index=index,
            id=change.id,
            system=change.system,
            record=change.record,
            status="failed",
            error=f"no adapter configured for system {change.system!r}",
            started=time.time(),
        )

    async def _drive(
        self, lane: _Lane, track: _Track, feed: _Feed, stop: _Flag | None, checked: bool
    ) -> None:
        """Take ``feed``'s changes one after another, each to its end, in this coroutine.

        One coroutine for a worker's life, not one per change: every resume of a request
        passes through each coroutine level above it, and a level per change cost about
        3 µs of client CPU per change between requests (measured: a ``Flow`` per change
        driven inline against one level down, 101.0 against 103.8 µs per change on
        uvloop, 110.1 against 113.5 on the default loop)."""
        loop = asyncio.get_running_loop()
        slots = self._slots
        busy = lane.keys
        try:
            while True:
                item = feed.take()
                if item is None:
                    if await feed.more():
                        continue
                    break
                index, change, read_first = item
                now = loop.time()
                # ``Flow(...)`` less the class call: CPython 3.11 builds a mapping of a class
                # call's keywords (7.1k machine instructions per flow against 3.9k, counted).
                flow: Flow = _new(Flow)
                flow._setup(
                    lane.adapter,
                    change,
                    self.retry,
                    self._rng,
                    now,
                    index,
                    read_first,
                    self.dry_run,
                    checked,
                    None,
                )
                track.flow = flow
                result: Result
                if lane.stopped and lane.is_stopped(now):
                    result = flow.finish(lane.stop_status, lane.stop_reason, now).result
                    track.flow = None
                    if not feed.give(result):
                        await feed.put(result)
                    continue
                try:
                    key = lane.key_of(change)
                except (InvalidChange, ValueError):  # refused by start() just below
                    key = str(change.record)
                if not busy.try_acquire(key):
                    await _resting(track, busy.acquire(key))
                    now = loop.time()
                try:
                    # ``now`` is read again after every await (nothing else takes time here).
                    step = flow.start(now)
                    while True:
                        kind = type(step)
                        if kind is Send:
                            send: Send = step  # type: ignore[assignment]
                            # The common case inline, one coroutine level less on every resume
                            # of the request: a free lane, nothing batched, a free overall slot.
                            if (
                                slots.free > 0
                                and not slots._waiters
                                and lane.batchers[send.write] is None
                                and (stop is None or not stop.on)
                                and lane.try_acquire(now)
                            ):
                                slots.free -= 1
                                if send.write:
                                    flow.batch = None
                            else:
                                gated = await self._gate(lane, flow, send, track, stop, now)
                                now = loop.time()
                                if gated is not None:
                                    step = gated
                                    continue
                            # Holding a lane slot and an overall slot: send, then release both.
                            error: TransportError | None = None
                            response: HttpResponse | None = None
                            try:
                                transport = self.transport
                                if transport is None:
                                    raise RuntimeError(
                                        "the dispatcher is not started: use 'async with "
                                        "Dispatcher(...)'"
                                    )
                                timeout = send.timeout
                                left = flow.deadline - now
                                if left < timeout:
                                    if left <= 0:
                                        step = flow.expire(now)
                                        continue
                                    # A write keeps its whole timeout (a change ends by
                                    # its deadline plus one request timeout): cut to the
                                    # few ms left, it timed out by our own doing and its
                                    # change ended failed, the write unconfirmed. A read
                                    # changes nothing: cut.
                                    if not send.write:
                                        timeout = left
                                if send.write and not flow.versioned:
                                    flow.sending(now, timeout)  # after any wait at the gate
                                track.in_request = True
                                try:
                                    response = await transport.send(send.request, timeout=timeout)
                                except TransportError as e:
                                    error = e
                                except asyncio.CancelledError:
                                    flow.cut_off()
                                    raise
                                finally:
                                    track.in_request = False
                            finally:
                                slots.release()
                                lane.release()
                            now = loop.time()
                            step = self._after(lane, flow, response, error, now)
                        elif kind is Wait:
                            step = await self._wait(lane, flow, cast("Wait", step), track, stop)
                            now = loop.time()
                        else:
                            result = step.result  # type: ignore[union-attr]
                            break
                except _Stop:
                    result = flow.cancelled(loop.time()).result
                finally:
                    if (
                        flow.maybe_applied
                        and not lane.adapter.versioned
                        and flow.settled_at > loop.time()
                    ):
                        # A write of this change may still land (no version token to stop it):
                        # the next change to the record waits until it would have.
                        lane.hold(flow, key, loop)
                    else:
                        busy.release(key)
                if flow.signal == "adapter":
                    self._broken(lane, flow)
                elif lane.broken:  # the adapter took a change to its end: no streak
                    lane.broken.clear()
                if result.error is not None and self._scrub is not None:
                    result = msgspec.structs.replace(result, error=self._scrub(result.error))
                track.flow = None
                if not feed.give(result):
                    await feed.put(result)
        except asyncio.CancelledError:
            feed.cancelled(track)
            raise
        except Exception as e:  # a programming error: the feed surfaces it
            await feed.failed(e)
        finally:
            feed.closed()
        await feed.end()

    async def _wait(
        self, lane: _Lane, flow: Flow, step: Wait, track: _Track, stop: _Flag | None
    ) -> Send | Wait | Done:
        if self._on_retry:
            change = flow.change
            self._emit(
                self._on_retry,
                RetryEvent(
                    system=change.system,
                    record=change.record,
                    id=change.id,
                    failures=flow.failures,
                    wait=step.seconds,
                    reason=self._clean(step.reason),
                ),
            )
        if stop is not None and stop.on:
            raise _Stop
        loop = asyncio.get_running_loop()
        await _resting(track, lane.sleep(loop, step.seconds))
        now = loop.time()
        if lane.stopped and lane.is_stopped(now):
            return flow.finish(lane.stop_status, lane.stop_reason, now)
        return flow.on_timer(now)

    async def _gate(
        self,
        lane: _Lane,
        flow: Flow,
        step: Send,
        track: _Track,
        stop: _Flag | None,
        now: float,
    ) -> Send | Wait | Done | None:
        """Wait until ``step`` may be sent: ``None`` when it holds a slot of its lane and
        one of the overall concurrency (the caller sends it and releases both), or the
        change's next step when it went in a batch, its system stopped or its deadline
        came while it waited."""
        if stop is not None and stop.on:
            raise _Stop
        loop = asyncio.get_running_loop()
        if lane.stopped and lane.is_stopped(now):
            return flow.finish(lane.stop_status, lane.stop_reason, now)
        batcher = lane.batchers[step.write]
        if batcher is not None:
            group = batcher.group(step.request)
            if group is not None:
                return await self._send_batched(lane, flow, step, track, batcher, group, now)
        if step.write:
            flow.batch = None
        # The system's limits first: waiting for a busy system must not hold a slot of
        # the overall concurrency that another system could use.
        if not lane.try_acquire(now):
            # Not "resting": another worker could only queue at the same gate.
            try:
                await lane.acquire(loop, flow.deadline, step.write or flow.attempts > 0)
            except _Expired:
                return flow.expire(loop.time(), self._waiting_for(lane, flow, loop.time()))
            except _Halted:
                return flow.finish(lane.stop_status, lane.stop_reason, loop.time())
            if stop is not None and stop.on:
                lane.release()
                raise _Stop
        slots = self._slots
        if slots.free > 0 and not slots._waiters:
            slots.free -= 1
        else:
            try:
                await slots.acquire()
            except BaseException:
                lane.release()
                raise
        return None

    async def _send_batched(
        self,
        lane: _Lane,
        flow: Flow,
        step: Send,
        track: _Track,
        batcher: _Batcher,
        group: Any,
        now: float,
    ) -> Send | Wait | Done:
        """``_send`` for a request that goes in a batch: the batch holds the limits."""
        loop = asyncio.get_running_loop()
        timeout = step.timeout
        left = flow.deadline - now
        if left < timeout:
            if left <= 0:
                return flow.expire(now)
            if not step.write:  # a write keeps its whole timeout (see _drive)
                timeout = left
        response: HttpResponse | None = None
        error: TransportError | None = None
        where: tuple[str, int] | None = None
        shared = False
        track.in_request = True
        pool = track.pool
        if pool is not None:
            pool.resting()  # (see _Pool: it holds no slot; another takes a change)
        try:
            response, where, shared = await batcher.send(
                group, step.request, timeout, flow.deadline, flow
            )
        except _Expired:
            return flow.expire(loop.time(), self._waiting_for(lane, flow, loop.time()))
        except _Halted:
            return flow.finish(lane.stop_status, lane.stop_reason, loop.time())
        except _AdapterRaised as e:
            return flow.raised_in_adapter(e.error, loop.time())
        except TransportError as e:
            error = e
        except asyncio.CancelledError:
            raise  # counted by the batcher, which knows whether the batch went out
        finally:
            track.in_request = False
            if pool is not None:
                pool.back()
        if step.write:
            flow.batch = where
        # An answer the whole batch got tells about the system once (its first change).
        heard = not shared or where is None or where[1] == 0
        return self._after(lane, flow, response, error, loop.time(), counted=True, heard=heard)

    def _after(
        self,
        lane: _Lane,
        flow: Flow,
        response: HttpResponse | None,
        error: TransportError | None,
        now: float,
        counted: bool = False,
        heard: bool = True,
    ) -> Send | Wait | Done:
        """The change's next step from its answer (or its lack of one), and what the answer
        says about the system. ``counted``: the request was counted where it was sent;
        ``heard``: the lane learns from this answer (not from every copy of one answer
        a whole batch got)."""
        system = lane.system
        if error is not None:
            if not counted:
                lane.answers[0] += 1
            nxt = flow.on_error(error, now)
            signal = flow.signal
            if signal == "unreachable":
                self._unreachable(lane, error, now)
            elif signal == "setup":
                self._stop(
                    lane,
                    "failed",
                    "setup",
                    f"{lane.where}: stopped: {error.detail} (a configuration error, not an "
                    "outage: check the URL and TLS settings); its changes were not sent",
                    None,
                )
            return nxt
        assert response is not None
        if not counted:
            lane.answers[response.status] += 1
        nxt = flow.on_response(response, now)
        signal = flow.signal if heard else None
        if signal == "ok":
            if not lane.calm:
                lane.answered(now)
        elif signal == "throttled":
            before = lane.limit
            pause = lane.throttled(flow.after, now)
            if pause is not None:
                pace = lane.pace
                log.log(
                    logging.WARNING if lane.limit < before else logging.DEBUG,
                    "%s: many requests throttled (429); slowing down to %d in flight%s, "
                    "pausing %.1fs",
                    lane.where,
                    lane.limit,
                    f" and {pace:,.1f} requests/s" if pace else "",
                    pause,
                )
                if self._on_slowdown:
                    self._emit(
                        self._on_slowdown,
                        SlowdownEvent(
                            system=system,
                            host=lane.host,
                            concurrency=lane.limit,
                            pause=pause,
                            rate=pace,
                        ),
                    )
        elif signal in ("auth", "redirected"):
            lane.calm = False
            if lane.refused_for != signal:
                lane.refusals.clear()
                lane.refused_for = signal
            lane.refusals.add(str(flow.change.record))
            n = len(lane.refusals)
            if n >= self.retry.auth_stop and not lane.stopped:
                if signal == "auth":
                    why = f"the credentials were refused (HTTP {response.status})"
                else:  # the adapter's words: where the redirect points
                    said = nxt.result.error if isinstance(nxt, Done) else None
                    why = f"{said or f'HTTP {response.status}'},"
                self._stop(
                    lane,
                    "failed",
                    signal,
                    f"{lane.where}: stopped: {why} for {n} records in a row; its other "
                    "changes were not sent",
                    None,
                )
        return nxt

    def _broken(self, lane: _Lane, flow: Flow) -> None:
        """The lane's adapter raised (``flow.raised``): log it (the traceback once per
        streak), and stop the system after ``_BROKEN_STOP`` records in a row."""
        error = flow.raised
        change = flow.change
        lane.calm = False
        first = not lane.broken
        lane.broken.add(str(change.record))
        what = f"{lane.where}: the {type(lane.adapter).__name__} raised on record {change.record!r}"
        if first and error is not None:
            trace = "".join(traceback.format_exception(error)).rstrip()
            log.error("%s (a bug in the adapter):\n%s", what, self._clean(trace))
        else:
            log.warning("%s: %s", what, self._clean(f"{type(error).__name__}: {error}"))
        if len(lane.broken) >= _BROKEN_STOP and not lane.stopped:
            self._stop(
                lane,
                "unsent",
                "adapter",
                f"{lane.where}: stopped: its adapter ({type(lane.adapter).__name__}) raised "
                f"{type(error).__name__} on {len(lane.broken)} records in a row (a bug in the "
                "adapter: see the log); its other changes were not sent (a resume sends them)",
                None,
            )

    def _waiting_for(self, lane: _Lane, flow: Flow, now: float) -> str:
        if lane.paused_until > now:
            why = f"{lane.where} is paused for {lane.paused_until - now:.3g}s more"
        else:
            why = f"waiting for {lane.where}'s limits"
        return why if not flow.attempts else f"{why}; last: {flow.last}"

    def _unreachable(self, lane: _Lane, error: TransportError, now: float) -> None:
        """No connection could be made: pause the whole system, longer each time in a
        row (0.5 s doubling up to 30 s, jittered), and stop it past the outage budget."""
        if lane.paused_until > now or lane.stopped:
            return  # one pause per outage step, not one per request
        lane.calm = False
        if lane.outage_since is None:
            lane.outage_since = now
        budget = self.retry.outage
        down_for = now - lane.outage_since
        if budget and down_for >= budget:
            self._stop(
                lane,
                "unsent",
                "unreachable",
                f"{lane.where}: stopped: unreachable for {down_for:.0f}s (outage budget "
                f"{budget:g}s): {error.detail}; its changes were not sent (a resume sends them)",
                now + budget,
            )
            return
        lane.down += 1
        pause = min(30.0, 0.5 * 2.0 ** min(lane.down - 1, 10)) * self._rng.uniform(0.5, 1.0)
        if budget:
            pause = min(pause, lane.outage_since + budget - now)
        lane.paused_until = max(lane.paused_until, now + pause)
        if lane.down == 1 or lane.down % 5 == 0:
            detail = error.detail
            if not detail.startswith("cannot connect"):  # ours say it; a transport's may not
                detail = f"cannot connect: {detail}"
            log.warning("%s: %s; pausing its requests for %.1fs", lane.where, detail, pause)

    def _clean(self, text: str) -> str:
        return text if self._scrub is None else self._scrub(text)

    def _stop(
        self, lane: _Lane, status: Status, cause: str, reason: str, until: float | None
    ) -> None:
        reason = self._clean(reason)
        lane.stop(status, cause, reason, until)
        log.warning("%s", reason)
        if self._on_stop:
            self._emit(
                self._on_stop,
                StopEvent(
                    system=lane.system, host=lane.host, cause=cause, status=status, reason=reason
                ),
            )

    @staticmethod
    def _emit(hooks: list[Any], event: Any) -> None:
        for hook in hooks:
            try:
                hook(event)
            except Exception:
                log.exception("a hook raised; ignored")


def _overrides(hooks: Hooks, name: str) -> bool:
    return getattr(type(hooks), name, None) is not getattr(Hooks, name)


class _RunState:
    """What a run shares with its tasks (not the :class:`Run` itself: a run dropped by
    its consumer must be collectable, so that its generator is closed)."""

    __slots__ = ("channel", "exhausted", "stopped", "taken")

    def __init__(self) -> None:
        self.stopped: list[Result] = []
        self.taken = 0
        self.exhausted = False
        #: The run's results while it runs (``None`` before and after).
        self.channel: _Channel | None = None


class Run:
    """A run of :meth:`Dispatcher.run`: an async iterator of :class:`Result`.

    Use it as ``async with d.run(changes) as run: async for r in run: ...`` so that it is
    closed as soon as you stop iterating. Stopping early (``break``, an exception,
    cancellation) stops new sends, lets requests in flight finish or time out, and puts
    the results of the changes that were in progress, or had finished without being
    handed over yet, in :attr:`stopped`: those with ``unconfirmed`` set had a write sent
    whose effect is unknown.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        changes: Source | Mapping[str, Source],
        read_first: ReadFirst = False,
        checked: bool = False,
    ) -> None:
        self._state = _RunState()
        self._gen: AsyncGenerator[Result, None] = _results(
            dispatcher, changes, self._state, read_first, checked
        )

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[Result]:
        channel = self._state.channel
        if channel is not None and channel.items and type(channel.items[0]) is Result:
            # A result is waiting: hand it over without resuming the generator (the
            # generator only has to see the end markers and errors).
            return _Ready(channel.pop())  # type: ignore[arg-type]
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
        """Results of the changes that were in progress when the run stopped early, and
        of those that had finished but were not yet handed to the consumer."""
        return self._state.stopped

    @property
    def taken(self) -> int:
        """Changes read from the input so far."""
        return self._state.taken

    @property
    def unconfirmed(self) -> list[Result]:
        """Changes whose write was sent but not confirmed when the run stopped."""
        return [r for r in self._state.stopped if r.unconfirmed]


class _Ready(msgspec.Struct, gc=False):
    """An awaitable that is already done: ``await _Ready(x)`` is ``x``. (A struct: msgspec
    builds one in a quarter less work than a class with ``__init__``, counted.)"""

    value: Result

    def __await__(self) -> Generator[Any, None, Result]:
        yield from ()  # a generator that returns at once
        return self.value


class _Channel:
    """Results from the workers to the one consumer: bounded, in order, cheap."""

    __slots__ = ("_getter", "_putters", "cap", "items", "spill")

    def __init__(self, cap: int) -> None:
        self.items: deque[Result | BaseException | None] = deque()
        self.cap = cap
        self._getter: asyncio.Future[None] | None = None
        self._putters: deque[asyncio.Future[None]] = deque()
        #: Set by :meth:`close`: where results go once nobody takes them.
        self.spill: list[Result] | None = None

    def close(self, spill: list[Result]) -> None:
        """The consumer is gone: the results waiting, and any put from now on (or waiting
        for room), go to ``spill``; nothing waits for room any more."""
        spill.extend(item for item in self.items if isinstance(item, Result))
        self.items.clear()
        self.spill = spill
        self.cap = 0  # put_nowait refuses, so every put goes the way of put()
        while self._putters:
            _wake(self._putters.popleft())

    async def put(self, item: Result | BaseException | None) -> None:
        while len(self.items) >= self.cap and self.spill is None:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                with contextlib.suppress(ValueError):
                    self._putters.remove(fut)
                raise
        if self.spill is not None:  # closed: nobody takes it any more
            if isinstance(item, Result):
                self.spill.append(item)
            return
        self.items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)

    def put_nowait(self, item: Result) -> bool:
        """:meth:`put` without a coroutine when there is room (the common case)."""
        if len(self.items) >= self.cap or self._putters:
            return False
        self.items.append(item)
        getter = self._getter
        if getter is not None and not getter.done():
            getter.set_result(None)
        return True

    async def get(self) -> Result | BaseException | None:
        while not self.items:
            self._getter = asyncio.get_running_loop().create_future()
            await self._getter
        return self.pop()

    def pop(self) -> Result | BaseException | None:
        item = self.items.popleft()
        while self._putters:
            fut = self._putters.popleft()
            if not fut.done():
                fut.set_result(None)
                break
        return item


class _Buffer:
    """One run's waiting changes for one lane, and its idle workers."""

    __slots__ = ("cap", "exhausted", "idlers", "items", "lane", "low", "taken")

    def __init__(self, lane: _Lane, cap: int) -> None:
        self.lane = lane
        self.cap = cap
        self.exhausted = False  # its input has no more
        self.taken = 0  # changes read from its own input (a mapping's)
        self.low = cap - max(1, cap // 8)  # the reader goes on below this
        self.items: deque[tuple[int, Change]] = deque()
        self.idlers: deque[asyncio.Future[None]] = deque()

    def put(self, item: tuple[int, Change]) -> None:
        self.items.append(item)
        while self.idlers:
            fut = self.idlers.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def wake_all(self) -> None:
        while self.idlers:
            _wake(self.idlers.popleft())

    async def idle(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.idlers.append(fut)
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()


class _LaneFeed:
    """The feed of a run's worker: its lane's buffer in, the run's channel out."""

    __slots__ = (
        "ask",
        "blocked",
        "buffer",
        "d",
        "done",
        "every",
        "items",
        "on_result",
        "pool",
        "room",
        "state",
        "stop",
        "system",
        "task",
        "tracks",
    )

    def __init__(
        self,
        d: Dispatcher,
        buffer: _Buffer,
        pool: _Pool,
        stop: _Flag,
        state: _RunState,
        done: _Channel,
        read_first: ReadFirst,
        room: Callable[[_Buffer], None],
        blocked: list[tuple[_Buffer, asyncio.Future[None]]],
        tracks: dict[asyncio.Task[None], _Track],
    ) -> None:
        self.d = d
        self.tracks = tracks
        self.task: asyncio.Task[None] | None = None  # the worker's, once started
        self.buffer = buffer
        self.items = buffer.items
        self.system = buffer.lane.system
        self.pool = pool
        self.stop = stop
        self.state = state
        self.done = done
        self.on_result = d._on_result
        self.ask = None if isinstance(read_first, bool) else read_first
        self.every = read_first if isinstance(read_first, bool) else False
        self.room = room
        self.blocked = blocked

    def take(self) -> tuple[int, Change, bool] | None:
        pool = self.pool
        if self.stop.on or pool.active > pool.keep or not self.items:
            return None  # stopped, more are working than needed (retire), or none yet
        index, change = self.items.popleft()
        if self.blocked:
            self.room(self.buffer)
        first = self.every if self.ask is None else self.ask(self.system, index)
        return index, change, first

    async def more(self) -> bool:
        pool = self.pool
        if self.stop.on or pool.active > pool.keep:
            return False
        if self.items:
            return True
        if self.buffer.exhausted:
            return False
        await self.buffer.idle()
        return True

    def give(self, result: Result) -> bool:
        if self.stop.on:  # set while the change was worked on
            self.state.stopped.append(result)
            return True
        if self.on_result:
            self.d._emit(self.on_result, result)
        return self.done.put_nowait(result)

    async def put(self, result: Result) -> None:
        try:
            await self.done.put(result)
        except asyncio.CancelledError:
            self.state.stopped.append(result)  # finished, but nobody took it
            raise

    def cancelled(self, track: _Track) -> None:
        if track.flow is not None:
            now = asyncio.get_running_loop().time()
            self.state.stopped.append(track.flow.cancelled(now).result)

    async def failed(self, error: Exception) -> None:
        await self.done.put(error)  # the run's consumer hears of it

    def closed(self) -> None:
        self.pool.live -= 1
        self.pool.active -= 1
        if self.task is not None:
            self.tracks.pop(self.task, None)

    async def end(self) -> None:
        if not self.stop.on:
            await self.done.put(None)


async def _results(
    d: Dispatcher,
    changes: Source | Mapping[str, Source],
    state: _RunState,
    read_first: ReadFirst,
    checked: bool = False,
) -> AsyncGenerator[Result, None]:
    buffers = {name: _Buffer(lane, d.buffer) for name, lane in d._lanes.items()}
    # Room for a burst of results: with a small channel, 64 workers and one consumer take
    # turns on every result.
    done = _Channel(max(256, 4 * d.concurrency))
    state.channel = done
    stop = _Flag()
    tracks: dict[asyncio.Task[None], _Track] = {}
    spawned = 0
    # The reader, while it waits for room in one buffer: that buffer and a future.
    blocked: list[tuple[_Buffer, asyncio.Future[None]]] = []

    def room(buffer: _Buffer) -> None:
        """A change left ``buffer``: let the reader go on when it waits for room there."""
        if len(buffer.items) > buffer.low:
            return
        for i, (where, fut) in enumerate(blocked):
            if where is buffer:
                del blocked[i]
                _wake(fut)
                return

    async def read() -> None:
        """Hand the input's changes to their lanes; pause only at a full buffer."""
        n = 0
        change: Any = None
        try:
            source: Any = changes
            if isinstance(source, AsyncIterable):
                async for change in source:
                    await place(change)
            else:
                for change in source:
                    buffer = buffers.get(change.system)
                    if buffer is not None and len(buffer.items) < buffer.cap:
                        buffer.put((state.taken, change))  # the common case: no await
                        state.taken += 1
                    else:
                        await place(change)
                    n += 1
                    if n & 255 == 0:
                        await asyncio.sleep(0)
        except Exception as e:  # the input itself broke: the consumer hears of it
            if isinstance(e, AttributeError) and not isinstance(change, _Change | None):
                e = _not_a_change(change, state.taken)  # change.system failed on it
            await done.put(e)
        finally:
            state.exhausted = True
            for buffer in buffers.values():
                buffer.exhausted = True
                buffer.wake_all()
        await done.put(None)

    async def read_one(system: str, source: Source) -> None:
        """One system's own input into its own buffer (a mapping's): waits only for it."""
        buffer = buffers.get(system)
        n = 0
        try:
            if buffer is None:  # no adapter: every change fails, nothing is sent
                async for change in _aiter(source):
                    if not isinstance(change, _Change):
                        raise _not_a_change(change, n)
                    await done.put(
                        d._no_adapter(n, change)
                        if change.system == system
                        else _misrouted(n, change, system)
                    )
                    n += 1
            else:
                await fill(buffer, source)
        except Exception as e:
            await done.put(e)
        finally:
            if buffer is not None:
                buffer.exhausted = True
                buffer.wake_all()
        await done.put(None)

    async def fill(buffer: _Buffer, source: Source) -> None:
        system = buffer.lane.system
        n = 0
        async for change in _aiter(source):
            index = buffer.taken
            buffer.taken += 1
            state.taken += 1
            if not isinstance(change, _Change):
                raise _not_a_change(change, index)
            if change.system != system:
                await done.put(_misrouted(index, change, system))
                continue
            if len(buffer.items) >= buffer.cap:
                await room_in(buffer)
            buffer.put((index, change))
            n += 1
            if n & 255 == 0:
                await asyncio.sleep(0)

    async def place(change: Change) -> None:
        buffer = buffers.get(change.system)
        index = state.taken
        state.taken += 1
        if buffer is None:
            await done.put(d._no_adapter(index, change))
            return
        await room_in(buffer)
        buffer.put((index, change))

    async def room_in(buffer: _Buffer) -> None:
        """Wait while ``buffer`` is full (its workers' pops wake the reader)."""
        while len(buffer.items) >= buffer.cap:
            fut = asyncio.get_running_loop().create_future()
            blocked.append((buffer, fut))
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError):
                    blocked.remove((buffer, fut))

    def spawner(buffer: _Buffer) -> _Pool:
        def spawn() -> None:
            nonlocal spawned
            track = _Track(pool)
            pool.live += 1
            pool.active += 1
            spawned += 1
            feed = _LaneFeed(d, buffer, pool, stop, state, done, read_first, room, blocked, tracks)
            # The worker is the driver itself, no coroutine around it: one level less
            # that every resume of a request passes through.
            task = asyncio.create_task(
                d._drive(buffer.lane, track, feed, stop, checked),
                name=f"patchassign-{buffer.lane.system}-{spawned}",
            )
            feed.task = task
            tracks[task] = track

        # Workers for the lane's own limit: a share of it (shared limits) may grow. Where
        # changes go in batches, a request carries many: a worker waiting in a batch
        # rests (it holds no slot), and another takes the next change, up to enough to
        # fill the batches. Started all at once, the changes whose first request does
        # not batch (a PERSCOM read) all waited for it at the lane, their deadlines
        # running: at a share of PERSCOM's rate (2 in flight, 8/s), 192 of 300 ended
        # unsent at a 10 s deadline, 800 changes under way at the default limits.
        lane = buffer.lane
        target = max(1, min(lane.configured, d.concurrency))
        sizes = [b.size for b in lane.batchers if b is not None]
        most = min(lane.configured * max(sizes), d.buffer, _BATCH_WORKERS) if sizes else None
        pool = _Pool(target, spawn, most)  # (``spawn`` above counts its workers in it)
        return pool

    if isinstance(changes, Mapping):
        readers = [
            asyncio.create_task(read_one(system, source), name=f"patchassign-reader-{system}")
            for system, source in changes.items()
        ]
        for name, buffer in buffers.items():
            if name not in changes:
                buffer.exhausted = True
    else:
        readers = [asyncio.create_task(read(), name="patchassign-reader")]
    for buffer in buffers.values():
        pool = spawner(buffer)
        for _ in range(pool.target):
            pool.spawn()
    finished = 0
    try:
        while finished < spawned + len(readers):
            got = await done.get()
            if got is None:
                finished += 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield got
    finally:
        state.channel = None
        stop.set()
        # Finished but never handed over (the consumer stopped first): their changes were
        # sent, and may be applied; they belong with the others in progress. Workers that
        # wait for room in the channel (a result, or the end marker of a worker that has
        # already left ``tracks``) go on at once, or they would wait for ever.
        done.close(state.stopped)
        for reader in readers:
            reader.cancel()
        for buffer in buffers.values():
            buffer.wake_all()
        busy = []
        for task, track in list(tracks.items()):
            if task.done():
                continue
            if track.in_request:
                busy.append(task)  # let its request finish or time out
            else:
                task.cancel()
        again = False
        if busy:
            try:
                await asyncio.wait(busy, timeout=d.retry.timeout + 1.0)
            except asyncio.CancelledError:
                # Stopped again while requests were in flight: stop waiting, but still
                # account for every change in progress (writes as unconfirmed).
                again = True
        left = list(tracks)
        for task in left:
            task.cancel()
        await asyncio.shield(asyncio.gather(*readers, *left, return_exceptions=True))
        if state.stopped:
            log.info(
                "run stopped early: %d change(s) were in progress, %d unconfirmed",
                len(state.stopped),
                sum(r.unconfirmed for r in state.stopped),
            )
        if again:
            raise asyncio.CancelledError


async def _aiter(source: Source) -> AsyncGenerator[Change, None]:
    if isinstance(source, AsyncIterable):
        async for change in source:
            yield change
    else:
        for change in source:
            yield change


def _misrouted(index: int, change: Change, system: str) -> Result:
    return Result(
        index=index,
        id=change.id,
        system=change.system,
        record=change.record,
        status="failed",
        error=f"a change for {change.system!r} in the input of {system!r}: not sent",
        started=time.time(),
    )


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
