"""Bulk runs: a plan file in, every outcome out, resumable after a crash.

:func:`run_plan` loads the plan into the journal in one streaming pass (every line decoded
and checked once; nothing is sent if a line is bad, unless told to skip them), then each
system's lane takes its own pending items from the journal in batches: a slow or stopped
system never holds back another, and memory stays flat at any plan size. Each outcome goes
back into its item's row (with the touched fields before and after); the report,
``--results``, ``leftovers`` and ``undo`` are read from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from .dispatch import Check, Dispatcher, Limits, Result
from .errors import ConfigError, InvalidChange, PatchassignError
from .hooks import LoggingHooks, RetryEvent
from .journal import Item, JournalError, JournalLike, PgJournal, SharedLimits, open_journal
from .plan import plan_format, read_plan
from .report import Progress, Report

if TYPE_CHECKING:
    from .changes import Change
    from .config import Config

__all__ = [
    "InvalidPlan",
    "Options",
    "PreflightFailed",
    "Report",
    "Validation",
    "run_plan",
    "validate_plan",
]

_encode = msgspec.json.Encoder().encode
#: Items a lane takes from the journal at a time.
TAKE = 128
#: With a shared journal: less taken and held per worker, so that the work spreads over
#: the workers and a lost worker's items (back only when its lease ends) are few.
SHARED_TAKE = 32
#: ... and at most this many when the database is far (see :func:`next_take`).
SHARED_TAKE_MAX = 128
SHARED_AHEAD = 64
#: Seconds between looks for items that may come back (a shared journal's lost workers).
POLL = 0.5
#: Changes a lane holds ahead of its workers (the dispatcher's buffer): small, because the
#: journal is the queue; a killed run leaves at most this many (plus a batch) per system
#: ``taken``, which the next run reads before writing.
AHEAD = 256
#: Seconds between two notes of the systems' paces in a SQLite journal.
PACES_EVERY = 5.0


@dataclass
class Options:
    """What ``patchassign run`` was asked to do."""

    plan: Path | None
    config: Config
    journal: Path | str | None = None  # a file, or a postgresql:// URL
    resume: bool = False
    join: bool = False  # work on a plan a PostgreSQL journal holds already
    lease: float = 15.0  # PostgreSQL: seconds a worker's items stay its own unrenewed
    dry_run: bool = False
    skip_invalid: bool = False
    retry_failed: bool = False
    results: Path | None = None
    progress: str = "auto"  # auto | bar | log | none
    progress_interval: float = 10.0
    concurrency: int | None = None
    limits: dict[str, Limits] = field(default_factory=dict)
    verbose: bool = False
    preflight: bool = True
    format: str | None = None  # jsonl | csv; default: from the file
    #: What to call the plan where ``plan`` is a copy (of standard input, or a pipe).
    plan_name: str | None = None

    @property
    def plan_label(self) -> str:
        return self.plan_name or str(self.plan)

    def journal_path(self) -> Path | str:
        if self.journal is not None:
            return self.journal
        if self.plan is None:
            raise ConfigError("--join needs --journal (the shared journal to work on)")
        return self.plan.with_name(self.plan.name + ".journal")


@dataclass
class Validation:
    """The pass over a plan: what it holds, and what is wrong with it."""

    lines: int = 0
    valid: int = 0
    invalid: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # the first 1,000
    digest: str = ""
    by_system: Counter[str] = field(default_factory=Counter)
    samples: dict[str, Change] = field(default_factory=dict)  # a valid change per system
    unusable: dict[str, str] = field(default_factory=dict)  # systems used, not configured
    unit: str = "line"  # what a plan's lines are called: "row" in a CSV plan


def _items(
    path: Path, config: Config | None, fmt: str | None, v: Validation, digest: object
) -> Iterator[tuple[int, Change | None, str | None, str | None, str | None]]:
    """Each plan line decoded and checked once: ``(line, change, error, system, key)``
    (the record's canonical key, by its adapter)."""
    fmt = plan_format(path, fmt)
    v.unit = "row" if fmt == "csv" else "line"
    for line, item in read_plan(path, format=fmt, digest=digest):
        v.lines = line
        error = _check(item, config, v)
        if error is None:
            assert not isinstance(item, InvalidChange)
            v.valid += 1
            v.by_system[item.system] += 1
            if item.system not in v.samples:
                v.samples[item.system] = item
            key = getattr(config.adapters.get(item.system), "key", None) if config else None
            yield line, item, None, None, None if key is None else key(item)
        else:
            v.invalid += 1
            if len(v.errors) < 1000:
                v.errors.append((line, error))
            yield line, None, error, item.system, None


def validate_plan(path: Path, config: Config | None, *, format: str | None = None) -> Validation:
    """Decode every line and check it with its system's adapter (when configured).

    Raises:
        PlanError: The file is not a plan in that format.
        OSError: The plan cannot be read.
    """
    out = Validation()
    digest = hashlib.sha256()
    for _ in _items(path, config, format, out, digest):
        pass
    out.digest = digest.hexdigest()
    return out


def _check(item: Change | InvalidChange, config: Config | None, v: Validation) -> str | None:
    if isinstance(item, InvalidChange):
        if item.field is None:
            return item.reason
        return f"{'column' if item.csv else 'field'} {item.field!r}: {item.reason}"
    if config is None:
        return None
    adapter = config.adapters.get(item.system)
    if adapter is None:
        broken = config.broken.get(item.system)
        if broken is not None:
            v.unusable.setdefault(item.system, broken)
            return None  # one error for the whole system, after the pass
        return f"system {item.system!r} is not in the configuration"
    try:
        adapter.check(item)
    except InvalidChange as e:
        return e.reason if e.field is None else f"field {e.field!r}: {e.reason}"
    return None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _load(journal: JournalLike, opts: Options) -> tuple[Validation, float | None]:
    """Load the plan into the journal, or check that the journal holds this plan."""
    if isinstance(journal, PgJournal):
        # A second loader of the same plan waits for the first one's load, then joins.
        with journal.exclusive("load"):
            return _load_into(journal, opts)
    return _load_into(journal, opts)


def _load_into(journal: JournalLike, opts: Options) -> tuple[Validation, float | None]:
    cfg = opts.config
    v = Validation()
    if opts.plan is None:
        if not journal.loaded:
            raise JournalError(f"{journal.where} holds no plan yet: nothing to --join")
        v.digest = journal.meta("plan_sha256") or ""
    elif journal.loaded:
        v.digest = _digest(opts.plan)
        stale = journal.runs() == 0 and not journal.shared  # workers may be about to join
        if stale and journal.meta("plan_sha256") != v.digest:
            # Loaded by a run that never started (its preflight failed...), and the plan
            # was edited since: nothing was sent from it, so load it as it is now.
            journal.clear()
    if journal.loaded:
        if not (opts.resume or journal.shared) and journal.runs() > 0:
            raise JournalError(
                f"{journal.where} already holds this plan's items: add --resume to continue "
                "it, or use a new --journal"
            )
        if journal.meta("plan_sha256") != v.digest:
            raise JournalError(
                f"{journal.where} belongs to another plan ({journal.meta('plan')}, changed since "
                "or different): use a new --journal (`patchassign leftovers` turns what is "
                "left in it into a plan)"
            )
        counts = journal.counts()
        v.invalid = sum(n for (_, s), n in counts.items() if s == "invalid")
        v.valid = sum(counts.values()) - v.invalid
        for (system, status), n in counts.items():
            if status != "invalid":
                v.by_system[system] += n
        for system in v.by_system:
            if system in cfg.broken:
                v.unusable[system] = cfg.broken[system]
            else:
                sample = journal.sample(system)
                if sample is not None:
                    v.samples[system] = sample
        return v, None
    t0 = time.monotonic()
    digest = hashlib.sha256()
    plan = opts.plan
    assert plan is not None

    def checked() -> Iterator[tuple[int, Change | None, str | None, str | None, str | None]]:
        yield from _items(plan, cfg, opts.format, v, digest)
        # Past the last line, before the load commits: a plan that must not run is not
        # kept (the load rolls back), so fixing it and running again just works.
        if v.invalid and not opts.skip_invalid:
            raise InvalidPlan(v)
        if v.unusable:
            raise unusable_error(v)

    journal.load(checked(), plan=opts.plan_label, digest=digest)
    v.digest = digest.hexdigest()
    return v, time.monotonic() - t0


def unusable_error(v: Validation) -> ConfigError:
    names = ", ".join(sorted(v.unusable))
    why = "; ".join(v.unusable[s] for s in sorted(v.unusable))
    return ConfigError(f"the plan uses {names}, whose configuration cannot be used: {why}")


async def run_plan(
    opts: Options, *, out: TextIO | None = None, err: TextIO | None = None
) -> Report:
    """Load and run a plan. Raises nothing for bad changes; see :class:`Report`.

    On cancellation (Ctrl-C) the run stops cleanly: outcomes so far are in the journal,
    the report says it was interrupted, and the cancellation propagates.

    Raises:
        InvalidPlan: Lines are invalid and ``skip_invalid`` is off (nothing was sent, and
            nothing was kept in the journal).
        PreflightFailed: A system of the plan failed its check (nothing was written).
        JournalError: The journal belongs to another plan, or holds one without
            ``resume``.
        ConfigError: The plan uses a system whose configuration cannot be used.
        PlanError: The file is not a plan in its format.
        OSError: The plan cannot be read.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    scratch = tempfile.TemporaryDirectory(prefix="patchassign-dry-") if opts.dry_run else None
    jpath = Path(scratch.name) / "dry-run.journal" if scratch else opts.journal_path()
    try:
        journal = open_journal(jpath, lease=opts.lease)
        try:
            return await _run(opts, journal, out, err)
        finally:
            journal.close()
    finally:
        if scratch is not None:
            scratch.cleanup()


async def _run(opts: Options, journal: JournalLike, out: TextIO, err: TextIO) -> Report:
    cfg = opts.config
    if opts.plan is None and not journal.loaded:
        err.write(f"waiting for a plan to be loaded into {journal.where} (Ctrl-C to stop)\n")
        err.flush()
        while not journal.loaded:
            await asyncio.sleep(1.0)
    v, load_time = _load(journal, opts)
    # Loading holds the event loop; a SIGTERM or Ctrl-C that came meanwhile waits in the
    # loop's signal pipe. A (short) timer makes the loop poll it before this task resumes,
    # so the cancellation lands here, before anything is sent.
    await asyncio.sleep(0.01)
    if v.unusable:
        raise unusable_error(v)
    run_counts: Counter[str] = Counter()
    progress: Progress | None = None
    interrupted = False
    unconfirmed = 0
    t0 = time.monotonic()
    adapters = {s: cfg.adapters[s] for s in v.by_system if s in cfg.adapters}
    limits = {s: lim for s, lim in {**cfg.limits, **opts.limits}.items() if s in adapters}
    inflight: dict[str, dict[int, Item]] = {}
    # With a shared journal: whether a lane's last take found items (until its first
    # take, it may). A lane that found none holds no slots of its system's shared limits.
    finding: dict[str, bool] = {}
    # With a shared journal: the slots this worker holds of each system's shared limits.
    shares: dict[str, int] = {}

    def wants(system: str) -> bool:
        return finding.get(system, True) or bool(inflight.get(system))

    def source(system: str) -> Iterator[Change]:
        held = inflight[system]
        after = 0
        index = 0
        while True:
            batch = journal.take(system, after, TAKE)
            if not batch:
                return
            for item in batch:
                held[index] = item
                index += 1
                yield item.change
            after = batch[-1].line

    async def shared_source(system: str) -> AsyncIterator[Change]:
        # Workers share the journal: items come back to the pool when a worker is
        # lost, so a lane ends only when none of its system's items is left anywhere.
        assert isinstance(journal, PgJournal)
        held = inflight[system]
        index = 0
        adapter = cfg.adapters[system]
        loop = asyncio.get_running_loop()
        size = SHARED_TAKE
        taken: float | None = None  # when the last take came back
        while True:
            if not shares.get(system):
                # No share of the system's slots here now (more workers than slots): a
                # take would hold items this worker cannot send, their deadlines running
                # while the workers with the slots went on (they ended unsent). It takes
                # none, and counts as wanting while the pool has items ready: a share
                # comes to it as the others run out of work, or are lost.
                ready = await asyncio.to_thread(journal.ready, system)
                finding[system] = ready
                if not ready and not await asyncio.to_thread(journal.unfinished, system):
                    return
                await asyncio.sleep(POLL)
                continue
            # Off the event loop: the database may be a network away, and the other
            # lanes' requests go on meanwhile (the journal takes one call at a time).
            asked = loop.time()
            batch = await asyncio.to_thread(journal.take, system, 0, size)
            if taken is not None and len(batch) == size:
                size = next_take(size, journal.took, asked - taken)
            taken = loop.time()
            finding[system] = bool(batch)
            if not batch:
                if not await asyncio.to_thread(journal.unfinished, system):
                    return
                await asyncio.sleep(POLL)
                continue
            await _hold(batch, adapter.versioned, cfg, system, err)
            for item in batch:
                held[index] = item
                index += 1
                yield item.change

    def read_first(system: str, index: int) -> bool:
        return inflight[system][index].doubt

    keep_paces = not journal.shared and not opts.dry_run
    paces_kept = time.monotonic()

    def record(r: Result) -> None:
        nonlocal paces_kept
        item = inflight[r.system].pop(r.index)
        if r.error is not None:
            r = msgspec.structs.replace(r, error=cfg.scrub(r.error))
        status: str = r.status
        if item.doubt and status == "unchanged":
            # Applied by a run that was killed before journaling it: what the record held
            # before that write is not what this run read (that is the write's result).
            status = "recovered"
            r = msgspec.structs.replace(r, before=None)
        run_counts[status] += 1
        if flushing is None:
            journal.record(item.line, r, status)
        elif flushing.journal.keep(item.line, r, status):
            flushing.due.set()
        if progress is not None:
            progress.update(r.system, status)
        if opts.dry_run:
            _show_planned(out, item.line, r)
        if keep_paces and time.monotonic() - paces_kept > PACES_EVERY:
            paces_kept = time.monotonic()
            _keep_paces(journal, dispatcher)

    dispatcher = Dispatcher(
        adapters,
        concurrency=opts.concurrency or cfg.concurrency,
        limits=limits,
        retry=cfg.retry,
        verify_tls=cfg.verify_tls,
        dry_run=opts.dry_run,
        buffer=SHARED_AHEAD if journal.shared else AHEAD,
        hooks=[ScrubbedLog(cfg)] if opts.verbose else [],
        paces={s: p for s, p in _kept_paces(journal).items() if s in adapters},
    )
    started = False
    skipped = 0
    flushing: _Flushing | None = None
    try:
        async with dispatcher as d, contextlib.AsyncExitStack() as stack:
            if isinstance(journal, PgJournal):
                # The systems' limits hold for all workers together, the checks included.
                sharing = SharedLimits(
                    journal.url, d, lease=journal.lease, beat=journal.lease / 5, wants=wants
                )
                await stack.enter_async_context(sharing)
                shares = sharing.held
            if opts.preflight and journal.todo(retry_failed=opts.retry_failed):
                samples = [v.samples[s] for s in sorted(v.samples)]
                checks = await d.check(samples, systems=sorted(adapters))
                for c in checks.values():
                    err.write(render_check(c, cfg) + "\n")
                # A system this worker has no share of the limits for now is not checked:
                # the workers holding its slots are sending (their requests are its check).
                failed = [c for c in checks.values() if not c.ok and c.skipped is None]
                if failed:
                    raise PreflightFailed(failed)
            journal.start(retry_failed=opts.retry_failed)
            started = True
            await _settle(journal, cfg, err)
            if isinstance(journal, PgJournal):
                stack.enter_context(_beating(journal, asyncio.current_task()))
                flushing = stack.enter_context(_Flushing(journal, asyncio.current_task()))
            totals = journal.pending()
            if isinstance(journal, PgJournal):
                # Items taken by other workers may come back to the pool (a worker lost):
                # a lane runs while its system has any left.
                totals = journal.left()
                # A worker does the systems it is configured for; others do the rest.
                for system in sorted(set(totals) - set(adapters)):
                    err.write(
                        f"{system}: not in this worker's configuration; its "
                        f"{totals.pop(system):,} pending item(s) are left to other workers\n"
                    )
            inflight.update({s: {} for s in totals})
            skipped = v.valid - sum(totals.values()) if opts.resume else 0
            progress = Progress(
                totals,
                err,
                opts.progress,
                opts.progress_interval,
                dispatcher.states,
                left=journal.left if isinstance(journal, PgJournal) else None,
                paces=dispatcher.paces,
            )
            progress.start()
            # Loaded items were checked by their adapters when the plan was loaded.
            make = shared_source if journal.shared else source
            run = d.run({s: make(s) for s in totals}, read_first=read_first, checked=True)
            try:
                async with run:
                    async for r in run:
                        record(r)
            except asyncio.CancelledError:
                interrupted = True
                lost = getattr(journal, "lost", None)
                if lost is not None:
                    raise lost from None
                raise
            finally:
                for r in run.stopped:
                    record(r)
                unconfirmed = len(run.unconfirmed)
                await progress.aclose()
    finally:
        if started:
            if keep_paces:
                _keep_paces(journal, dispatcher)
            journal.finish(interrupted=interrupted)
            report = _report(opts, v, journal, run_counts, t0, interrupted, skipped, unconfirmed)
            report.load_time = load_time
            report.throttled = _throttled(dispatcher)
            if interrupted:
                out.write(report.render() + "\n")
    return report


def _keep_paces(journal: JournalLike, d: Dispatcher) -> None:
    """The pace each throttled system has held, for a resume to start at (a SQLite
    journal: with PostgreSQL a worker's pace is its share of the system's limit)."""
    journal.set_meta("paces", msgspec.json.encode(d.settled_paces()).decode())


def _kept_paces(journal: JournalLike) -> dict[str, float]:
    """The paces an earlier run on this journal kept (``{}``: none, or not readable)."""
    raw = None if journal.shared else journal.meta("paces")
    if not raw:
        return {}
    try:
        paces = msgspec.json.decode(raw, type=dict[str, float])
    except msgspec.DecodeError:
        return {}
    return {s: p for s, p in paces.items() if 0 < p <= 1_000_000}


def _throttled(d: Dispatcher) -> list[tuple[str, int, int]]:
    """The systems that answered 429, for the report."""
    slowdowns = d.slowdowns()
    return [
        (system, n, slowdowns.get(system, 0))
        for (system, status), n in sorted(d.counts.items())
        if status == 429 and n
    ]


def _report(
    opts: Options,
    v: Validation,
    journal: JournalLike,
    run_counts: Counter[str],
    t0: float,
    interrupted: bool,
    skipped: int,
    unconfirmed: int,
) -> Report:
    report = Report(
        plan=opts.plan_label if opts.plan else str(journal.meta("plan")),
        valid=v.valid,
        invalid=v.invalid,
        counts=journal.counts(),
        run_counts=run_counts,
        elapsed=time.monotonic() - t0,
        latency=journal.percentiles((0.5, 0.9, 0.99, 1.0), run=journal.run_id),
        errors=journal.errors(),
        interrupted=interrupted,
        dry_run=opts.dry_run,
        skipped=max(skipped, 0),
        unconfirmed=unconfirmed,
        journal=str(getattr(journal, "where", opts.journal_path())),
    )
    if opts.results:
        try:
            export_results(journal, opts.results)
        except OSError as e:  # a full disk, a missing folder...
            where = "" if opts.dry_run else f"; every outcome is in the journal {journal.where}"
            report.results_error = (
                f"the results could not be written to {opts.results} "
                f"({e.strerror or e}){where}: "
                + ("free space" if e.errno == errno.ENOSPC else "fix that")
                + " and run again"
                + ("" if opts.dry_run else " with --resume --results FILE")
            )
    return report


async def _settle(journal: JournalLike, cfg: Config, err: TextIO) -> None:
    """Before reading the records a stopped run may have written to a system without a
    version token, give the writes it had in flight time to land (``retry.settle``):
    read too early, a late write would be missed and then overwritten (or done twice)."""
    systems = sorted(
        s for s in journal.doubtful() if s in cfg.adapters and not cfg.adapters[s].versioned
    )
    last = journal.last_alive()
    if not systems or last is None:
        return
    # The stopped run may have sent a write up to one journal interval after it last
    # wrote to the journal; it may land until its timeout and the settle time are over.
    retry = cfg.retry
    wait = last + journal.interval + retry.timeout + retry.settle_time - time.time()
    if wait <= 0:
        return
    err.write(
        f"waiting {wait:,.1f} s for writes a stopped run may have had in flight to "
        f"{', '.join(systems)} (no version token) to settle before reading those records\n"
    )
    err.flush()
    await asyncio.sleep(wait)


async def _hold(batch: list[Item], versioned: bool, cfg: Config, system: str, err: TextIO) -> None:
    """Items a lost worker had taken, of a system without a version token: a write it
    had in flight may land until its lease ended plus the request timeout and the
    settle time; read those records only after that (see :func:`_settle`)."""
    if versioned:
        return
    holds = [i.hold for i in batch if i.doubt and i.hold is not None]
    if not holds:
        return
    wait = max(holds) + cfg.retry.timeout + cfg.retry.settle_time
    if wait <= 0:
        return
    err.write(
        f"{system}: waiting {wait:,.1f} s for writes a lost worker may have had in flight "
        "to settle before reading those records\n"
    )
    err.flush()
    await asyncio.sleep(wait)


@contextlib.contextmanager
def _beating(journal: PgJournal, task: asyncio.Task[Any] | None) -> Iterator[None]:
    """Renew the worker's lease every third of it while the block runs; if the lease was
    lost (the worker stalled and others took its items), stop the run (``task``)."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(journal.lease / 3)
            try:
                await asyncio.to_thread(journal.beat)
            except JournalError as e:
                journal.lost = e
                if task is not None:
                    task.cancel()
                return

    beating = asyncio.create_task(beat(), name="patchassign-lease")
    try:
        yield
    finally:
        beating.cancel()


def next_take(size: int, took: float, worked: float) -> int:
    """How many items a lane of a PostgreSQL worker takes next: ``size`` last time, the
    take's statement ``took`` seconds (:attr:`PgJournal.took`: the database's round trip
    and work), and the lane ``worked`` through the batch before in that many.

    Near the database a take is a millisecond and the lane takes ``SHARED_TAKE`` at a
    time (the work spreads over the workers; few items come back in doubt with a lost
    worker). When taking is slow beside working (a database a network away), the lane
    would wait on its takes: it takes twice as many, up to ``SHARED_TAKE_MAX``; and half
    as many again when taking is fast beside working.
    """
    if took > worked / 4:
        return min(2 * size, SHARED_TAKE_MAX)
    if took < worked / 32:
        return max(size // 2, SHARED_TAKE)
    return size


class _Flushing:
    """Writes a PostgreSQL journal's buffered outcomes off the event loop: when
    :meth:`PgJournal.keep` says a write is due (``due``), or every ``interval``. A failed
    write stops the run (``task``) as a lost lease does."""

    def __init__(self, journal: PgJournal, task: asyncio.Task[Any] | None) -> None:
        self.journal = journal
        self.task = task
        self.due = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    def __enter__(self) -> _Flushing:
        self._writer = asyncio.create_task(self._write(), name="patchassign-outcomes")
        return self

    def __exit__(self, *exc: object) -> None:
        # What is left is written by ``finish`` (after a write still running in its
        # thread: the journal takes one call at a time).
        if self._writer is not None:
            self._writer.cancel()

    async def _write(self) -> None:
        journal = self.journal
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(journal.interval, 0.05)):
                    await self.due.wait()
            self.due.clear()
            try:
                await asyncio.to_thread(journal.flush)
            except JournalError as e:
                journal.lost = e
                if self.task is not None:
                    self.task.cancel()
                return


def _show_planned(out: TextIO, line: int, r: Result) -> None:
    where = f"line {line} {r.system} {r.record}"
    if r.status == "planned" and r.planned is not None:
        body = r.planned.get("body")
        shown = _encode(body).decode() if body is not None else ""
        out.write(f"{where}: {r.planned['method']} {r.planned['url']} {shown}\n")
    else:
        out.write(f"{where}: {r.status}" + (f" ({r.error})" if r.error else "") + "\n")


def export_results(journal: JournalLike, path: Path) -> int:
    """Write one JSON line per plan line (the journal's rows), in plan order; returns the
    count."""
    n = 0
    encode = msgspec.json.Encoder().encode
    with open(path, "wb") as f:
        for row in journal.rows():
            f.write(encode(row) + b"\n")
            n += 1
    return n


class ScrubbedLog(LoggingHooks):
    """``--verbose`` retry lines, with configured credentials scrubbed from the reasons."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config

    def on_retry(self, event: RetryEvent) -> None:
        super().on_retry(msgspec.structs.replace(event, reason=self.config.scrub(event.reason)))


def render_check(c: Check, config: Config | None = None) -> str:
    """One line of a preflight check."""
    where = f"{c.system} ({c.host})"
    if c.ok:
        ms = f"{(c.latency or 0) * 1000:,.0f} ms"
        return f"check: {where}: reachable, authenticated, {ms}"
    if c.skipped is not None:
        skipped = c.skipped if config is None else config.scrub(c.skipped)
        return f"check: {where}: not checked: {skipped}"
    error = c.error or "not ok"
    if config is not None:
        error = config.scrub(error)
    return f"check: {where}: FAILED: {error}"


class PreflightFailed(PatchassignError):
    """A system of the plan failed its preflight check; nothing was written."""

    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks
        names = ", ".join(c.system for c in checks)
        super().__init__(f"preflight check failed for {names}; nothing was written")


class InvalidPlan(PatchassignError):
    """The plan has invalid lines and the run was not told to skip them."""

    def __init__(self, validation: Validation) -> None:
        self.validation = validation
        super().__init__(f"{validation.invalid:,} invalid line(s); nothing was sent")
