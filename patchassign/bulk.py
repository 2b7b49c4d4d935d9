"""Bulk runs: a plan file in, every outcome out, resumable after a crash.

:func:`run_plan` validates the whole plan first (every bad line reported, nothing sent
unless told to skip them), then streams it through the :class:`~patchassign.dispatch.Dispatcher`,
writes each outcome to the :class:`~patchassign.journal.Journal`, shows progress, and ends
with a :class:`Report`. Memory does not grow with the plan: the plan is read twice as a
stream, lines already done are skipped by walking the journal alongside, and the report is
computed by the journal's database.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from .dispatch import Check, Dispatcher, Limits, Result
from .errors import InvalidChange, PatchassignError
from .hooks import LoggingHooks, RetryEvent
from .journal import DONE, Journal, JournalError
from .plan import read_plan

if TYPE_CHECKING:
    from .changes import Change
    from .config import Config

__all__ = ["Options", "Progress", "Report", "run_plan", "validate_plan"]

OK_STATUSES = frozenset({"applied", "unchanged"})
_encode = msgspec.json.Encoder().encode


@dataclass
class Options:
    """What ``patchassign run`` was asked to do."""

    plan: Path
    config: Config
    journal: Path | None = None
    resume: bool = False
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

    def journal_path(self) -> Path:
        return self.journal or self.plan.with_name(self.plan.name + ".journal")


@dataclass
class Validation:
    """The first pass over a plan."""

    lines: int = 0
    valid: int = 0
    invalid: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # the first 1,000
    digest: str = ""
    by_system: Counter[str] = field(default_factory=Counter)
    samples: dict[str, Change] = field(default_factory=dict)  # a valid change per system


def validate_plan(path: Path, config: Config | None) -> Validation:
    """Decode every line and check it with its system's adapter (when configured).

    Raises:
        OSError: The plan cannot be read.
    """
    out = Validation()
    for line, item in read_plan(path):
        out.lines = line
        error = _check(item, config)
        if error is None:
            out.valid += 1
            assert not isinstance(item, InvalidChange)
            out.by_system[item.system] += 1
            out.samples.setdefault(item.system, item)
        else:
            out.invalid += 1
            if len(out.errors) < 1000:
                out.errors.append((line, error))
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    out.digest = h.hexdigest()
    return out


def _check(item: Change | InvalidChange, config: Config | None) -> str | None:
    if isinstance(item, InvalidChange):
        return item.reason if item.field is None else f"field {item.field!r}: {item.reason}"
    if config is None:
        return None
    adapter = config.adapters.get(item.system)
    if adapter is None:
        return f"system {item.system!r} is not in the configuration"
    try:
        adapter.check(item)
    except InvalidChange as e:
        return e.reason if e.field is None else f"field {e.field!r}: {e.reason}"
    return None


class Progress:
    """Done / total, rate, ETA and failures: a bar on a terminal, log lines otherwise."""

    def __init__(
        self, total: int, stream: TextIO, mode: str = "auto", interval: float = 10.0
    ) -> None:
        if mode == "auto":
            mode = "bar" if stream.isatty() else "log"
        self.mode = mode
        self.total = total
        self.stream = stream
        self.interval = interval if mode == "log" else 0.1
        self.done = 0
        self.counts: Counter[str] = Counter()
        self.t0 = time.monotonic()
        self._last = self.t0

    def update(self, result: Result) -> None:
        self.done += 1
        self.counts[result.status] += 1
        now = time.monotonic()
        if self.mode != "none" and now - self._last >= self.interval:
            self._last = now
            self.show(now)

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        left = self.total - self.done
        eta = _clock(left / rate) if rate > 0 and left > 0 else "-"
        pct = self.done / self.total if self.total else 1.0
        bad = self.counts["conflict"] + self.counts["failed"]
        return (
            f"{self.done:,}/{self.total:,} ({pct:.0%}) {rate:,.0f}/s ETA {eta} "
            f"conflicts {self.counts['conflict']:,} failed {self.counts['failed']:,}"
            + (" !" if bad else "")
        )

    def show(self, now: float | None = None) -> None:
        if self.mode == "bar":
            pct = self.done / self.total if self.total else 1.0
            width = 28
            filled = int(pct * width)
            bar = "#" * filled + "." * (width - filled)
            self.stream.write(f"\r[{bar}] {self.line(now)}\x1b[K")
        elif self.mode == "log":
            self.stream.write(f"progress: {self.line(now)}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.mode == "none":
            return
        self.show()
        if self.mode == "bar":
            self.stream.write("\n")
            self.stream.flush()


@dataclass
class Report:
    """The end of a run: what happened, how fast, what went wrong."""

    plan: str
    validation: Validation
    counts: dict[tuple[str, str], int]  # (system, status) over the whole plan
    run_counts: Counter[str]  # status -> outcomes of this run
    elapsed: float
    latency: list[float]  # p50, p90, p99, max of this run
    errors: list[tuple[str, str, str, int]]
    interrupted: bool = False
    dry_run: bool = False
    skipped: int = 0  # lines already done (resume)
    unconfirmed: int = 0
    journal: str = ""
    results_error: str | None = None

    @property
    def all_applied(self) -> bool:
        if self.interrupted or self.validation.invalid:
            return False
        bad = {"conflict", "failed", "cancelled"}
        if self.dry_run:
            return not any(self.run_counts[s] for s in bad)
        return not any(n for (_, s), n in self.counts.items() if s not in OK_STATUSES) and (
            sum(self.counts.values()) >= self.validation.valid
        )

    def render(self) -> str:
        v = self.validation
        done_now = sum(self.run_counts.values())
        lines = [
            f"plan {self.plan}: {v.valid:,} changes"
            + (f", {v.invalid:,} invalid lines skipped" if v.invalid else "")
            + (f", {self.skipped:,} already done (resumed)" if self.skipped else "")
        ]
        rate = done_now / self.elapsed if self.elapsed > 0 else 0.0
        head = "dry run" if self.dry_run else "this run"
        lines.append(f"{head}: {done_now:,} changes in {self.elapsed:,.1f} s ({rate:,.0f}/s)")
        if self.latency:
            p50, p90, p99, top = self.latency
            lines.append(
                f"latency per change: p50 {_ms(p50)}, p90 {_ms(p90)}, p99 {_ms(p99)}, "
                f"max {_ms(top)}"
            )
        if self.dry_run:
            lines.append(
                "would write {planned:,}, already in place {unchanged:,}, conflicts "
                "{conflict:,}, failed {failed:,}".format(
                    planned=self.run_counts["planned"],
                    unchanged=self.run_counts["unchanged"],
                    conflict=self.run_counts["conflict"],
                    failed=self.run_counts["failed"],
                )
            )
        else:
            lines += _table(self.counts)
        if self.errors:
            lines.append("errors (commonest first):")
            for system, status, error, n in self.errors:
                lines.append(f"  {n:>7,} x {system} {status}: {error[:160]}")
        unsent = sum(n for (_, s), n in self.counts.items() if s == "unsent")
        if unsent and not self.dry_run:
            lines.append(
                f"{unsent:,} changes were not sent (their system stopped or their deadline "
                "came while they waited): --resume sends them"
            )
        if self.unconfirmed:
            lines.append(
                f"{self.unconfirmed:,} writes were sent but not confirmed when the run "
                "stopped: --resume reads those records before doing anything"
            )
        if self.results_error:
            lines.append(f"RESULTS NOT WRITTEN: {self.results_error}")
        if self.interrupted:
            lines.append(f"interrupted: continue with --resume (journal {self.journal})")
        elif not self.dry_run:
            lines.append(
                "result: every change applied"
                if self.all_applied
                else "result: NOT everything applied (see the errors above and --results)"
            )
        return "\n".join(lines)


def _table(counts: dict[tuple[str, str], int]) -> list[str]:
    statuses = ["applied", "unchanged", "conflict", "failed", "unsent", "invalid", "cancelled"]
    present = [s for s in statuses if any(st == s for _, st in counts)]
    systems = sorted({s for s, _ in counts})
    if not systems:
        return []
    width = max(len("system"), *(len(s) for s in systems))
    out = ["  " + "system".ljust(width) + "".join(f"{s:>11}" for s in present)]
    for system in [*systems, "total"]:
        cells = [
            sum(n for (sy, st), n in counts.items() if st == s and system in (sy, "total"))
            for s in present
        ]
        out.append("  " + system.ljust(width) + "".join(f"{c:>11,}" for c in cells))
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _done_lines(path: Path, retry_failed: bool) -> Iterator[int]:
    """Lines with a kept outcome, ascending, from a separate read-only connection."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise JournalError(f"{path}: the journal cannot be read ({e})") from None
    try:
        done = DONE - {"failed"} if retry_failed else DONE
        marks = ",".join("?" * len(done))
        cur = db.execute(
            f"SELECT line FROM items WHERE status IN ({marks}) ORDER BY line",  # noqa: S608
            tuple(done),
        )
        for (line,) in cur:
            yield int(line)
    except sqlite3.Error as e:
        raise JournalError(
            f"{path}: the journal is damaged ({e}); restore it from a copy, or start "
            "over with a new --journal"
        ) from None
    finally:
        db.close()


async def run_plan(
    opts: Options, *, out: TextIO | None = None, err: TextIO | None = None
) -> Report:
    """Validate and run a plan. Raises nothing for bad changes; see :class:`Report`.

    On cancellation (Ctrl-C) the run stops cleanly: outcomes so far are in the journal,
    the report says it was interrupted, and the cancellation propagates.

    Raises:
        InvalidPlan: Lines are invalid and ``skip_invalid`` is off (nothing was sent).
        JournalError: The journal belongs to another plan, or holds outcomes without
            ``resume``.
        OSError: The plan cannot be read.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    cfg = opts.config
    validation = validate_plan(opts.plan, cfg)
    # Validation holds the event loop; a SIGTERM or Ctrl-C that came meanwhile waits in
    # the loop's signal pipe. A (short) timer makes the loop poll it before this task
    # resumes, so the cancellation lands here, before anything is sent. (sleep(0) would
    # resume this task first: its wake-up is queued before the signal's callback.)
    await asyncio.sleep(0.01)
    if validation.invalid and not opts.skip_invalid:
        raise InvalidPlan(validation)
    t0 = time.monotonic()
    run_counts: Counter[str] = Counter()
    journal: Journal | None = None
    jpath = opts.journal_path()
    if not opts.dry_run:
        journal = Journal(jpath)
    interrupted = False
    skipped = 0
    unconfirmed = 0
    if journal is not None:
        try:
            journal.bind(str(opts.plan), validation.digest, resume=opts.resume)
        except BaseException:
            journal.close()
            raise
    results_file = open(opts.results, "wb") if opts.results and opts.dry_run else None  # noqa: SIM115
    try:
        if journal is not None and validation.invalid:
            for line, item in read_plan(opts.plan):
                error = _check(item, cfg)
                if error is not None:
                    system = None if isinstance(item, InvalidChange) else item.system
                    journal.record_invalid(line, error, system)
            journal.flush()
        lines: dict[int, int] = {}  # input index -> plan line, while in flight

        def changes() -> Iterator[Change]:
            nonlocal skipped
            done = iter(_done_lines(jpath, opts.retry_failed)) if journal and opts.resume else None
            next_done = next(done, None) if done else None
            index = 0
            for line, item in read_plan(opts.plan):
                if line > validation.lines:
                    # The plan grew after it was validated: only what was validated is
                    # sent (the journal-as-queue work will make this structural).
                    err.write(
                        f"warning: {opts.plan} grew during the run; lines after line "
                        f"{validation.lines:,} were not validated and are not sent\n"
                    )
                    break
                while done is not None and next_done is not None and next_done < line:
                    next_done = next(done, None)
                if next_done == line:
                    if not isinstance(item, InvalidChange):
                        skipped += 1
                    continue
                if isinstance(item, InvalidChange) or _check(item, cfg) is not None:
                    continue
                lines[index] = line
                index += 1
                yield item

        total = validation.valid
        if journal is not None and opts.resume:
            total -= journal.count_done(retry_failed=opts.retry_failed)
        progress = Progress(max(total, 0), err, opts.progress, opts.progress_interval)
        limits = {**cfg.limits, **opts.limits}
        async with Dispatcher(
            cfg.adapters,
            concurrency=opts.concurrency or cfg.concurrency,
            limits=limits,
            retry=cfg.retry,
            verify_tls=cfg.verify_tls,
            dry_run=opts.dry_run,
            hooks=[ScrubbedLog(cfg)] if opts.verbose else [],
        ) as d:
            if opts.preflight and validation.samples and total > 0:
                checks = await d.check(
                    validation.samples.values(), systems=sorted(validation.samples)
                )
                for c in checks.values():
                    err.write(render_check(c, cfg) + "\n")
                failed = [c for c in checks.values() if not c.ok]
                if failed:
                    raise PreflightFailed(failed)
            run = d.run(changes(), read_first=opts.resume)
            try:
                async with run:
                    async for r in run:
                        if r.error is not None:
                            r = msgspec.structs.replace(r, error=cfg.scrub(r.error))
                        line = lines.pop(r.index)
                        run_counts[r.status] += 1
                        progress.update(r)
                        if journal is not None:
                            journal.record(line, r)
                        if opts.dry_run:
                            _show_planned(out, line, r)
                            if results_file is not None:
                                results_file.write(_result_line(line, r) + b"\n")
            except asyncio.CancelledError:
                interrupted = True
                raise
            finally:
                for r in run.stopped:
                    line = lines.pop(r.index)
                    run_counts[r.status] += 1
                    if journal is not None:
                        journal.record(line, r)
                unconfirmed = len(run.unconfirmed)
                progress.close()
    finally:
        elapsed = time.monotonic() - t0
        if results_file is not None:
            results_file.close()
        report = Report(
            plan=str(opts.plan),
            validation=validation,
            counts={},
            run_counts=run_counts,
            elapsed=elapsed,
            latency=[],
            errors=[],
            interrupted=interrupted,
            dry_run=opts.dry_run,
            skipped=skipped,
            unconfirmed=unconfirmed,
            journal=str(jpath),
        )
        if journal is not None:
            journal.finish(interrupted=interrupted)
            report.counts = journal.counts()
            report.latency = journal.percentiles((0.5, 0.9, 0.99, 1.0), run=journal.run_id)
            report.errors = journal.errors()
            if opts.results and not opts.dry_run:
                try:
                    export_results(journal, opts.results)
                except OSError as e:  # a full disk, a missing folder...
                    report.results_error = (
                        f"the results could not be written to {opts.results} "
                        f"({e.strerror or e}); every outcome is in the journal {jpath}: "
                        "free space and run again with --resume --results FILE"
                    )
            journal.close()
        if interrupted:
            err.write(report.render() + "\n")
    return report


def _show_planned(out: TextIO, line: int, r: Result) -> None:
    where = f"line {line} {r.system} {r.record}"
    if r.status == "planned" and r.planned is not None:
        body = r.planned.get("body")
        shown = _encode(body).decode() if body is not None else ""
        out.write(f"{where}: {r.planned['method']} {r.planned['url']} {shown}\n")
    else:
        out.write(f"{where}: {r.status}" + (f" ({r.error})" if r.error else "") + "\n")


def _result_line(line: int, r: Result) -> bytes:
    row: dict[str, Any] = {
        "line": line,
        "id": r.id,
        "system": r.system,
        "record": r.record,
        "status": r.status,
        "http_status": r.http_status,
        "version": r.version,
        "error": r.error,
        "attempts": r.attempts,
        "elapsed": round(r.elapsed, 6),
    }
    if r.planned is not None:
        row["planned"] = r.planned
    return _encode({k: v for k, v in row.items() if v is not None})


def export_results(journal: Journal, path: Path) -> int:
    """Write one JSON line per plan line with an outcome, in plan order; returns the count."""
    n = 0
    with open(path, "wb") as f:
        for row in journal.rows():
            out = {
                "line": row["line"],
                "id": row["id"],
                "system": row["system"],
                "record": None if row["record"] is None else msgspec.json.decode(row["record"]),
                "status": row["status"],
                "http_status": row["http_status"],
                "version": row["version"],
                "error": row["error"],
                "attempts": row["attempts"],
                "unconfirmed": bool(row["unconfirmed"]) or None,
                "elapsed": None if row["elapsed"] is None else round(row["elapsed"], 6),
            }
            f.write(_encode({k: v for k, v in out.items() if v is not None}) + b"\n")
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
