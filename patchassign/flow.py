"""The way of one change, as a pure state machine: an event in, the next step out.

A :class:`Flow` drives one change through its adapter. It does no I/O and reads no
clock: the caller passes the time with every event, and the flow answers with what to do
next::

    flow = Flow(adapter, change, policy=RetryPolicy(), rng=random.Random(1), now=0.0)
    step = flow.start(0.0)                     # Send | Wait | Done
    while not isinstance(step, Done):
        if isinstance(step, Send):
            try:
                step = flow.on_response(transport_send(step.request), now())
            except TransportError as e:
                step = flow.on_error(e, now())
        else:                                  # Wait: sleep step.seconds, then
            step = flow.on_timer(now())
    result = step.result

The adapter's classification (:class:`~patchassign.systems.Retry`,
:class:`~patchassign.systems.Failed` ...) is the only place that reads HTTP statuses and
``Retry-After``; the flow turns it into retries, re-reads, conflict recovery and a
:class:`Result`. After each event :attr:`Flow.signal` says what the answer showed about
the system as a whole (throttled, credentials refused, unreachable, misconfigured, an
adapter that raised), for the dispatcher's per-system decisions.

Rules it keeps:

* every try counts: the failure count never starts again, so the backoff grows with each
  failure and a change makes at most ``attempts`` failed requests (a 429 is the system
  pacing us: it grows the backoff but spends no attempt);
* after any ambiguous failure (no answer to a write, a 5xx that may have applied) the
  record is read before anything is resent; a write that is not idempotent
  (``adapter.idempotent``) is resent only when that read proves the record untouched
  since the read the write was prepared from (the same version token), and otherwise
  ends ``failed``, unconfirmed, "unknown, not resent" (at most once, never a blind
  resend);
* the deadline is hard: a wait that would end after it ends the change now, as
  ``unsent`` when no write can have taken effect (a resume sends it), else ``failed``
  with ``unconfirmed`` set.
* an adapter that raises (anything but patchassign's typed errors, which are the
  change's own) has a bug: the change ends ``failed`` naming what it raised,
  ``unconfirmed`` when the answer it could not read was a write's (:attr:`Flow.raised`
  holds the exception for the log).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from .errors import (
    ConfigError,
    ConnectError,
    InvalidChange,
    PatchError,
    SetupError,
)
from .systems import (
    Applied,
    Conflict,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    Retry,
    Unchanged,
)
from .systems._base import printable

if TYPE_CHECKING:
    from .changes import Change
    from .errors import TransportError
    from .systems import Adapter

__all__ = [
    "Done",
    "Flow",
    "Result",
    "RetryPolicy",
    "Send",
    "Signal",
    "Status",
    "Wait",
    "backoff_delay",
]

Status = Literal["applied", "unchanged", "conflict", "failed", "unsent", "cancelled", "planned"]
#: What the last answer showed about the system as a whole.
Signal = Literal["ok", "throttled", "auth", "redirected", "unreachable", "setup", "adapter"]
_Positive = Annotated[float, msgspec.Meta(gt=0, le=86_400 * 7)]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retries, backoff, time bounds, and when to give up on a whole system.

    Attributes:
        attempts: Failed tries (connection lost, timeout, 5xx: reads and writes alike)
            after which the change is reported ``failed``. The count never starts again
            within a change, so it bounds the requests that can fail. Throttled answers
            (429) and refused connections are the system pacing us or down, not failures
            of the change: they spend no attempt; the deadline bounds them.
        conflicts: Re-read-and-resend rounds after version conflicts.
        base: First backoff ceiling in seconds; it doubles per failure (full jitter:
            the wait is drawn uniformly below the ceiling).
        cap: Largest backoff ceiling in seconds.
        timeout: Seconds one request may take (connecting, sending, reading).
        deadline: Seconds one change may take in all, waits for its system included. A
            change ends by its deadline plus at most one request timeout.
        slowdown: Share of recent answers that are throttled (429) above which the whole
            system is slowed down (its concurrency halves and it pauses for the
            Retry-After); a moving average over about the last 20 answers, or over
            those of the last quarter of a second when more came in it.
        outage: Seconds a system may stay unreachable (connections refused or timing
            out) before it is stopped: its waiting changes end ``unsent``. ``0``: wait,
            change by change, until each one's deadline.
        auth_stop: Records in a row whose requests were refused for their credentials
            or permissions (401, 403, the systems' own codes), or answered with a
            redirect (not followed: the system's URL is not its API's), after which the
            system is stopped: its other changes end ``failed`` without being sent.
        settle: Seconds a write to a system without a version token (PERSCOM, Findable)
            may still take effect after an ambiguous failure (a timeout, a dropped
            connection, a 5xx that may have applied: the server, or a proxy's backend,
            may still hold it): the record is read back only after this, and the next
            change to the same record waits as long. ``None``: the request ``timeout``.
            A system with a version token needs no wait: a late write fails its check.
    """

    attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 6
    conflicts: Annotated[int, msgspec.Meta(ge=0, le=100)] = 5
    base: _Positive = 0.2
    cap: _Positive = 30.0
    timeout: _Positive = 30.0
    deadline: _Positive = 300.0
    slowdown: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.3
    outage: Annotated[float, msgspec.Meta(ge=0, le=86_400 * 7)] = 60.0
    auth_stop: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 3
    settle: Annotated[float, msgspec.Meta(ge=0, le=86_400)] | None = None

    @property
    def settle_time(self) -> float:
        """:attr:`settle`, or the request timeout when not set."""
        return self.timeout if self.settle is None else self.settle


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
            ``failed`` (permanent error, retries exhausted, or its system was stopped
            for its credentials or configuration), ``unsent`` (not applied and safe to
            send again: its system was unreachable or throttled past the deadline; a
            resume sends it), ``cancelled`` (the run stopped first), ``planned`` (a dry
            run: the write was prepared, not sent).
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
        before: Where the record was read: the fields the change touches as they were
            before the write (``{"to": ...}`` for assignments, ``{field: value}`` for
            field updates; see ``Adapter.touched``). With ``after``, what undo is made of.
        after: The touched fields as the change left them (applied, unchanged).
        current: For a conflict: the touched fields as the record holds them now (who
            holds it, as data), so that a script can decide what to do.
        batch: The request the change's last write rode in, when it went in a batch with
            others (``<system>-w<n>``, numbered per dispatcher); match it with the system's
            own logs by the time and the position.
        position: The change's place in that batch (0-based).
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
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    current: dict[str, Any] | None = None
    batch: str | None = None
    position: int | None = None

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


class Send(msgspec.Struct):
    """Send ``request`` and feed the answer back (``write``: it changes the record)."""

    request: HttpRequest
    write: bool
    timeout: float


class Wait(msgspec.Struct):
    """Wait ``seconds``, then call :meth:`Flow.on_timer`. ``after``: the server asked."""

    seconds: float
    reason: str
    after: float | None = None


class Done(msgspec.Struct):
    """The change is finished."""

    result: Result


Step = Send | Wait | Done
_TYPED = (PatchError, InvalidChange, ConfigError)


class Flow:
    """One change's way through its adapter: read, prepare, write, classify, recover.

    Args:
        adapter: The change's system adapter.
        change: The change.
        policy: Retries and time bounds.
        rng: Random numbers for the backoff jitter.
        now: The current time (any monotonic clock; every event passes it again).
        index: The change's position in the run's input (for the result).
        read_first: Read the record before writing even where the change does not need
            it (a resume: the change may already be in place).
        dry_run: Prepare the write but do not send it: end ``planned``.
        checked: The change was checked by ``adapter.check`` already (when it was loaded
            into a journal): :meth:`start` does not check it again.
        wall: Unix time at ``now`` (for :attr:`Result.started`); defaults to the clock.
    """

    __slots__ = (
        "adapter",
        "after",
        "attempts",
        "batch",
        "change",
        "checked",
        "conflicts",
        "deadline",
        "dry_run",
        "failures",
        "index",
        "last",
        "last_status",
        "maybe_applied",
        "must_read",
        "policy",
        "raised",
        "rng",
        "seen",
        "settled_at",
        "settling",
        "signal",
        "started",
        "t0",
        "throttles",
        "versioned",
        "writes",
        "writing",
        "wrote_from",
    )

    def __init__(
        self,
        adapter: Adapter,
        change: Change,
        *,
        policy: RetryPolicy,
        rng: random.Random,
        now: float,
        index: int = 0,
        read_first: bool = False,
        dry_run: bool = False,
        checked: bool = False,
        wall: float | None = None,
    ) -> None:
        self._setup(adapter, change, policy, rng, now, index, read_first, dry_run, checked, wall)

    def _setup(
        self,
        adapter: Adapter,
        change: Change,
        policy: RetryPolicy,
        rng: random.Random,
        now: float,
        index: int,
        read_first: bool,
        dry_run: bool,
        checked: bool,
        wall: float | None,
    ) -> None:
        self.adapter = adapter
        self.change = change
        self.policy = policy
        self.rng = rng
        self.index = index
        self.dry_run = dry_run
        self.t0 = now
        self.started = time.time() if wall is None else wall
        self.deadline = now + policy.deadline
        self.must_read = read_first
        self.checked = checked
        self.versioned = adapter.versioned
        self.attempts = 0
        self.writes = 0
        self.failures = 0
        self.throttles = 0
        self.conflicts = 0
        self.maybe_applied = False
        self.writing = False
        self.last_status: int | None = None
        self.last = "no answer yet"
        #: The record as last read (for before / after / current).
        self.seen: Current | None = None
        #: A write failed ambiguously on a system without a version token: it may land.
        self.settling = False
        #: When every write sent so far has surely landed or died (the clock of ``now``).
        self.settled_at = 0.0
        self.wrote_from: Current | None = None
        #: What the last event showed about the system (``None``: nothing new).
        self.signal: Signal | None = None
        #: With ``signal == "throttled"``: the server's wait, if it gave one.
        self.after: float | None = None
        #: With ``signal == "adapter"``: what the adapter raised.
        self.raised: Exception | None = None
        #: The batch the last write rode in and the change's place in it (the dispatcher
        #: sets it; ``None``: the write went alone).
        self.batch: tuple[str, int] | None = None

    def __repr__(self) -> str:
        return f"<Flow {self.change.system}/{self.change.record} attempts={self.attempts}>"

    # -- events ----------------------------------------------------------------------------

    def start(self, now: float) -> Step:
        """The first step: the read or write to send (or why none is needed)."""
        if not self.checked:
            try:
                self.adapter.check(self.change)
            except InvalidChange as e:
                return self.finish("failed", str(e), now)
            except Exception as e:
                return self._raised(e, now)
        try:
            return self._next(now)
        except _TYPED as e:
            return self._typed(e, now)
        except Exception as e:
            return self._raised(e, now)

    def on_response(self, response: HttpResponse, now: float) -> Step:
        """The server answered the last :class:`Send`."""
        self.attempts += 1
        self.writes += self.writing
        self.last_status = response.status
        self.signal = "ok"
        self.after = None
        try:
            adapter, change = self.adapter, self.change
            if not self.writing:
                read = adapter.current(change, response)
                if isinstance(read, Current):
                    self.must_read = False
                    return self._prepare(read, now)
                if isinstance(read, Retry):
                    return self._retry_outcome(read, now)
                self._refused(read)
                return self.finish("failed", f"reading the record: {read.reason}", now)
            outcome = adapter.outcome(change, response)
            if isinstance(outcome, Applied):
                self.maybe_applied = False
                if self.seen is None:  # a blind write (the common fast path): nothing read
                    return self.finish(
                        "applied", None, now, version=outcome.version, record_after=outcome.record
                    )
                return self.finish(
                    "applied",
                    None,
                    now,
                    version=outcome.version,
                    record_after=outcome.record,
                    **self._fields("applied"),
                )
            if isinstance(outcome, Retry):
                if outcome.ambiguous:
                    self.maybe_applied = True
                    self.must_read = True
                    if not self.versioned:
                        self.settling = True
                return self._retry_outcome(outcome, now)
            if isinstance(outcome, Conflict):
                if not outcome.recoverable:
                    return self.finish("conflict", outcome.reason, now, **self._fields("conflict"))
                self.conflicts += 1
                if self.conflicts > self.policy.conflicts:
                    return self.finish(
                        "conflict",
                        f"still conflicting after {self.conflicts} re-reads: {outcome.reason}",
                        now,
                        **self._fields("conflict"),
                    )
                self.must_read = True
                return self._next(now)
            self._refused(outcome)
            return self.finish("failed", outcome.reason, now)
        except _TYPED as e:
            return self._typed(e, now)
        except Exception as e:
            if self.writing:  # the write was answered, and nothing could say how
                self.maybe_applied = True
            return self._raised(e, now)

    def _refused(self, failed: Failed) -> None:
        """What a refusal says about the whole system (see :attr:`signal`)."""
        if failed.auth:
            self.signal = "auth"
        elif failed.redirected:
            self.signal = "redirected"

    def on_error(self, error: TransportError, now: float) -> Step:
        """The last :class:`Send` got no answer."""
        self.attempts += 1
        self.writes += self.writing
        self.signal = None
        reason = str(error)
        if isinstance(error, SetupError):
            self.signal = "setup"
            return self.finish("failed", reason, now)
        if isinstance(error, ConnectError):
            # The system is down: the dispatcher pauses it as a whole; this change's
            # attempts are not spent on it. The deadline still bounds it.
            self.signal = "unreachable"
            self.last = reason
            if now >= self.deadline:
                return self._expired(now)
            try:
                return self._next(now)
            except _TYPED as e:
                return self._typed(e, now)
            except Exception as e:
                return self._raised(e, now)
        if self.writing:
            self.maybe_applied = True
            if not self.versioned:
                self.settling = True
        self.must_read = True
        return self._retry(None, reason, now)

    def on_timer(self, now: float) -> Step:
        """The last :class:`Wait` is over."""
        self.signal = None
        try:
            return self._next(now)
        except _TYPED as e:
            return self._typed(e, now)
        except Exception as e:
            return self._raised(e, now)

    def cut_off(self) -> None:
        """The last :class:`Send` was cut off in flight (the run stopped): it counts as
        a try, and a write's effect is unknown."""
        self.attempts += 1
        if self.writing:
            self.maybe_applied = True
            self.writes += 1

    def sending(self, now: float, timeout: float) -> None:
        """The last :class:`Send` goes out now, with ``timeout``. It was made earlier: a
        change can wait at its system's limits, or for its batch, before its request
        leaves. A write without a version token may land until ``settle`` past this
        request's own timeout, so that is when a read-back may trust what it finds."""
        if self.writing and not self.versioned:
            settle = self.policy.settle
            settled = now + timeout + (self.policy.timeout if settle is None else settle)
            if settled > self.settled_at:
                self.settled_at = settled

    def raised_in_adapter(self, error: Exception, now: float) -> Done:
        """The adapter raised ``error`` outside an event (combining a batch, say): the
        change fails as when it raises within one."""
        return self._raised(error, now)

    def expire(self, now: float, reason: str | None = None) -> Done:
        """The deadline came while the change waited for its system: end it now."""
        return self._expired(now, reason)

    def finish(
        self,
        status: Status,
        error: str | None,
        now: float,
        *,
        version: str | None = None,
        record_after: Any = None,
        planned: dict[str, Any] | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        current: dict[str, Any] | None = None,
    ) -> Done:
        """End the change with ``status``. ``unsent`` becomes ``failed`` (unconfirmed) when
        a write may have taken effect: only a change with nothing in doubt is safe to send
        again blindly."""
        change = self.change
        if (
            error is None
            and not self.maybe_applied
            and self.batch is None
            and planned is None
            and before is None
            and after is None
            and current is None
        ):
            # The common end, in few keywords: msgspec builds a struct from up to 15
            # keyword arguments about four times faster than from more or from a
            # ``**`` mapping (0.26 us against 1.0 us per Result, measured).
            return Done(
                Result(
                    index=self.index,
                    id=change.id,
                    system=change.system,
                    record=change.record,
                    status=status,
                    attempts=self.attempts,
                    writes=self.writes,
                    http_status=self.last_status,
                    version=version,
                    started=self.started,
                    elapsed=now - self.t0,
                    record_after=record_after,
                )
            )
        unconfirmed = self.maybe_applied and status not in ("applied", "unchanged")
        if status == "unsent" and self.maybe_applied:
            status = "failed"
            error = f"{error} (a write was sent earlier and not confirmed)"
        return Done(
            Result(
                index=self.index,
                id=change.id,
                system=change.system,
                record=change.record,
                status=status,
                attempts=self.attempts,
                writes=self.writes,
                http_status=self.last_status,
                version=version,
                error=error,
                unconfirmed=unconfirmed,
                started=self.started,
                elapsed=now - self.t0,
                record_after=record_after,
                planned=planned,
                before=before,
                after=after,
                current=current,
                batch=None if self.batch is None else self.batch[0],
                position=None if self.batch is None else self.batch[1],
            )
        )

    def cancelled(self, now: float) -> Done:
        """The run stopped before this change finished."""
        return self.finish("cancelled", "the run stopped before this change finished", now)

    # -- internals ------------------------------------------------------------------------

    def _typed(self, e: Exception, now: float) -> Done:
        # An adapter refusing with one of our typed errors instead of returning Failed:
        # still this change's problem, not the run's.
        return self.finish("failed", f"{type(e).__name__}: {e}", now)

    def _raised(self, e: Exception, now: float) -> Done:
        # Anything else an adapter raises is a bug in it (or, rarely, here): the change
        # fails, unconfirmed where a write of it was answered; the dispatcher logs the
        # traceback and stops the system when its adapter keeps raising.
        self.signal = "adapter"
        self.raised = e
        return self.finish(
            "failed",
            f"the {type(self.adapter).__name__} raised {type(e).__name__}: "
            f"{printable(' '.join(str(e).split()))} (a bug in the adapter, not in the "
            "change: the traceback is in the log)",
            now,
        )

    def _next(self, now: float) -> Step:
        if self.must_read or self.adapter.needs_read(self.change):
            return self._send(self.adapter.read(self.change), False, now)
        return self._prepare(None, now)

    def _prepare(self, current: Current | None, now: float) -> Step:
        if current is not None:
            self.seen = current
        step = self.adapter.prepare(self.change, current)
        if isinstance(step, HttpRequest):
            if self.dry_run:
                return self.finish(
                    "planned", None, now, planned=_planned(step), **self._fields("applied")
                )
            if not self.maybe_applied:
                self.wrote_from = self.seen
            elif not _idempotent(self.adapter, self.change):
                doubt = self._unproven(current)
                if doubt is not None:
                    return self.finish("failed", doubt, now, **self._fields("conflict"))
            return self._send(step, True, now)
        if isinstance(step, Unchanged):
            status: Status = "applied" if self.maybe_applied else "unchanged"
            return self.finish(status, None, now, version=step.version, **self._fields(status))
        if isinstance(step, Conflict):
            return self.finish("conflict", step.reason, now, **self._fields("conflict"))
        return self.finish("failed", step.reason, now)

    def _unproven(self, current: Current | None) -> str | None:
        """Why a write that is not idempotent may not be sent again after one of ours went
        unconfirmed, or ``None`` when it may: the record is provably untouched since the
        read that write was prepared from (the same version token; any write changes it).
        The read-back found the change not in place; without that proof our first write
        may still have landed somewhere the record does not show (a second successor, a
        second record), so the change ends unknown, not resent, for a person to check."""
        before = self.wrote_from.version if self.wrote_from is not None else None
        after = current.version if current is not None else None
        if before is not None and after == before:
            return None
        if before is None:
            why = "the system gives no version token to prove the record untouched"
        else:
            why = f"the record changed since our read (version {before} then, {after} now)"
        return (
            "unknown, not resent: a write of ours went unconfirmed and the record does not "
            f"show the change; {why}: check the record by hand"
        )

    def _fields(self, status: str) -> dict[str, Any]:
        """``before``/``after``/``current`` for a result, from the record as last read."""
        seen = self.seen
        touched = getattr(self.adapter, "touched", None)
        if seen is None or touched is None:
            return {}
        try:
            now = touched(self.change, seen.record)
            if status == "conflict":
                return {"current": now}
            if status == "unchanged":
                return {"before": now, "after": now}
            if self.maybe_applied:
                # Found in place after an unconfirmed write of ours: before is what the
                # record held when that write was prepared.
                base = self.wrote_from
                before = None if base is None else touched(self.change, base.record)
                return {"before": before, "after": now}
            return {"before": now, "after": self.adapter.wanted(self.change, seen.record)}  # type: ignore[attr-defined]
        except Exception:
            return {}

    def _send(self, request: HttpRequest, write: bool, now: float) -> Step:
        left = self.deadline - now
        if left <= 0:
            return self._expired(now)
        self.writing = write
        timeout = self.policy.timeout
        if timeout > left and not write:
            # A read is cut to what is left of the deadline. A write keeps its whole
            # timeout (a change ends by its deadline plus one request timeout): cut to
            # the few milliseconds left, it timed out by our own doing, unconfirmed.
            timeout = left
        if write and not self.versioned:
            # Until then the server may apply this write, even if the request fails early
            # (a proxy dropping the connection while the backend goes on).
            settle = self.policy.settle  # not settle_time: a property call less per write
            settled = now + timeout + (self.policy.timeout if settle is None else settle)
            if settled > self.settled_at:
                self.settled_at = settled
        return Send(request, write, timeout)

    def _retry_outcome(self, outcome: Retry, now: float) -> Step:
        if outcome.throttled:
            self.signal = "throttled"
            self.after = outcome.after
            return self._retry(outcome.after, outcome.reason, now, throttled=True)
        return self._retry(outcome.after, outcome.reason, now)

    def _retry(
        self, after: float | None, reason: str, now: float, *, throttled: bool = False
    ) -> Step:
        self.last = reason
        policy = self.policy
        if throttled:
            # The server pacing us is not a failure of the change: it spends no attempt
            # (the lane slows down, the deadline bounds it), but the backoff still grows.
            self.throttles += 1
        else:
            self.failures += 1
            if self.failures >= policy.attempts:
                return self.finish(
                    "failed", f"gave up after {self.failures} attempts: {reason}", now
                )
        left = self.deadline - now
        if after is not None and after > left:
            return self.finish(
                "unsent",
                f"the server asked to wait {after:g}s, more than the {max(left, 0):.3g}s left "
                f"of the deadline: {reason}",
                now,
            )
        delay = backoff_delay(self.failures + self.throttles, after, policy, self.rng)
        if self.settling:
            # Read back only once a late write would have landed (no version token to
            # catch it afterwards): ``settle`` past the write's own timeout.
            self.settling = False
            settle = self.settled_at - now
            if settle > delay:
                delay = settle
                reason = f"{reason}; letting a late write settle for {settle:.3g}s before reading"
        if delay > left:
            return self._expired(now)
        return Wait(delay, reason, after)

    def _expired(self, now: float, reason: str | None = None) -> Done:
        why = reason or self.last
        return self.finish("unsent", f"deadline of {self.policy.deadline:g}s reached: {why}", now)


def _idempotent(adapter: Adapter, change: Change) -> bool:
    """Whether sending ``change``'s write twice leaves what sending it once does: the
    adapter's per-change answer (``idempotent_for``) where it has one, else its flag."""
    per_change = getattr(adapter, "idempotent_for", None)
    if per_change is not None:
        return bool(per_change(change))
    return bool(adapter.idempotent)


def _planned(req: HttpRequest) -> dict[str, Any]:
    body: Any = None
    if req.body is not None:
        try:
            body = msgspec.json.decode(req.body)
        except msgspec.DecodeError:
            body = req.body.decode("utf-8", "replace")
    return {"method": req.method, "url": req.url, "body": body}
