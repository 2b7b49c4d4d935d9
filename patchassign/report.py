"""What a bulk run tells its user: the report, the progress display, leftovers and undo.

Everything here reads the journal (:mod:`patchassign.journal`) or counts what the run
hands it; nothing sends a request.

* :class:`Report`: the end of a run, rendered for stdout.
* :class:`Progress`: one bar per system on a terminal (``rich``: done/total, rate, ETA and
  the system's state, at the terminal's width, log lines printed above the bars), and
  timestamped lines on a timer otherwise (also while nothing completes).
* :func:`write_leftovers`: the plan lines still to do, as a plan.
* :func:`write_undo`: the inverse plan of what a run applied.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, TextIO

import msgspec

from ._aio import cancel_and_wait
from ._json import json_equal

if TYPE_CHECKING:
    from .journal import JournalLike, Status

__all__ = [
    "LEFTOVER_STATUSES",
    "OK_STATUSES",
    "Progress",
    "Report",
    "inverse",
    "write_leftovers",
    "write_undo",
]

#: Outcomes with nothing left to do.
OK_STATUSES = frozenset({"applied", "unchanged", "recovered"})
#: What ``leftovers`` writes by default: everything not done, whatever the reason.
LEFTOVER_STATUSES = ("conflict", "failed", "unsent", "cancelled", "pending", "taken")
_STATUSES = (
    "applied",
    "recovered",
    "unchanged",
    "conflict",
    "failed",
    "unsent",
    "cancelled",
    "pending",
    "taken",
    "invalid",
    "planned",
)
_encode = msgspec.json.Encoder().encode


@dataclass
class Report:
    """The end of a run: what happened, how fast, what went wrong."""

    plan: str
    valid: int
    invalid: int
    counts: dict[tuple[str, str], int]  # (system, status) over the whole plan
    run_counts: Counter[str]  # status -> outcomes of this run
    elapsed: float
    latency: list[float] = field(default_factory=list)  # p50, p90, p99, max of this run
    errors: list[tuple[str, str, str, int]] = field(default_factory=list)
    interrupted: bool = False
    dry_run: bool = False
    skipped: int = 0  # items already done (resume)
    unconfirmed: int = 0
    journal: str = ""
    results_error: str | None = None
    load_time: float | None = None
    #: Systems that answered 429: (system, 429 answers, slowdowns).
    throttled: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def all_applied(self) -> bool:
        """Every valid change of the plan is applied or in place (and none invalid)."""
        if self.interrupted or self.invalid:
            return False
        bad = {"conflict", "failed", "cancelled", "unsent"}
        if self.dry_run:
            return not any(self.run_counts[s] for s in bad)
        return not any(
            n for (_, s), n in self.counts.items() if s not in OK_STATUSES and s != "invalid"
        ) and (sum(n for (_, s), n in self.counts.items() if s in OK_STATUSES) >= self.valid)

    def render(self) -> str:
        lines = [
            f"plan {self.plan}: {counted(self.valid, 'change')}"
            + (f", {counted(self.invalid, 'invalid line')} skipped" if self.invalid else "")
            + (f", {self.skipped:,} already done (resumed)" if self.skipped else "")
            + (f"; loaded in {self.load_time:,.1f} s" if self.load_time is not None else "")
        ]
        done_now = sum(self.run_counts.values())
        rate = done_now / self.elapsed if self.elapsed > 0 else 0.0
        head = "dry run" if self.dry_run else "this run"
        lines.append(
            f"{head}: {counted(done_now, 'change')} in {self.elapsed:,.1f} s ({rate:,.0f}/s)"
        )
        if self.latency:
            p50, p90, p99, top = self.latency
            lines.append(
                f"latency per change: p50 {_ms(p50)}, p90 {_ms(p90)}, p99 {_ms(p99)}, "
                f"max {_ms(top)}"
            )
        if self.dry_run:
            c = self.run_counts
            lines.append(
                f"would write {c['planned']:,}, already in place {c['unchanged']:,}, "
                f"conflicts {c['conflict']:,}, failed {c['failed']:,}"
            )
        else:
            lines += table(self.counts)
        if self.errors:
            lines.append("errors (commonest first):")
            for system, status, error, n in self.errors:
                lines.append(f"  {n:>7,} x {system} {status}: {error[:160]}")
        for system, refused, slowdowns in self.throttled:
            line = f"{system}: {counted(refused, 'answer', 'was')} 429 (too many requests)"
            if slowdowns:
                line += (
                    f", {slowdowns:,} slowdown(s): a `rate` (requests/s) under the system's "
                    f"limit in its [systems.{system}] table avoids them"
                )
            lines.append(line)
        if not self.dry_run:
            left = sum(n for (_, s), n in self.counts.items() if s in LEFTOVER_STATUSES)
            recovered = sum(n for (_, s), n in self.counts.items() if s == "recovered")
            if recovered:
                them = "it" if recovered == 1 else "them"
                lines.append(
                    f"{counted(recovered, 'change', 'was')} applied by a run that stopped "
                    f"before it could record {them}, and found in place by this one (recovered)"
                )
            unsent = sum(n for (_, s), n in self.counts.items() if s == "unsent")
            if unsent:
                lines.append(
                    f"{counted(unsent, 'change', 'was')} not sent (their system stopped or "
                    "their deadline came while they waited): --resume sends them"
                )
            if left:
                lines.append(
                    f"{counted(left, 'change', 'is')} not done: `patchassign leftovers "
                    f"{self.journal}` writes them as a plan (conflicts carry the record's "
                    "current value in --results)"
                )
        if self.unconfirmed:
            lines.append(
                f"{counted(self.unconfirmed, 'write', 'was')} sent but not confirmed when the "
                "run stopped: --resume reads those records before doing anything"
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


def counted(n: int, noun: str, verb: str = "") -> str:
    """``1 change``, ``2 changes``; with ``verb`` (``is``, ``was``) its form too."""
    many = n != 1
    words = f"{n:,} {noun}{'s' if many else ''}"
    if verb:
        words += " " + ({"is": "are", "was": "were"}[verb] if many else verb)
    return words


def table(counts: dict[tuple[str, str], int]) -> list[str]:
    """Per system and status, with a total row."""
    present = [s for s in _STATUSES if any(st == s for _, st in counts)]
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


def render_status(status: Status) -> str:
    """``patchassign status``: per system, then per run or worker."""
    lines = [f"journal {status.where}" + (f" (plan {status.plan})" if status.plan else "")]
    done = sorted({k for s in status.systems for k in s.done}, key=_order)
    head = ["system", "pending", "taken", *done, "workers", "per s"]
    rows = [
        [
            s.system,
            f"{s.pending:,}",
            f"{s.taken:,}",
            *(f"{s.done.get(k, 0):,}" for k in done),
            str(s.workers),
            f"{s.rate:,.1f}",
        ]
        for s in status.systems
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines.extend(
        "  "
        + r[0].ljust(widths[0])
        + "".join(f"  {c:>{w}}" for c, w in zip(r[1:], widths[1:], strict=True))
        for r in [head, *rows]
    )
    live = sum(w.live for w in status.workers)
    lines.append(f"workers: {live} live, {len(status.workers)} in all")
    now = time.time()
    for w in status.workers:
        if w.live:
            state = f"live, {w.taken:,} taken"
        elif w.finished is not None:
            state = f"finished {clock(max(0.0, now - w.finished))} ago"
        else:
            state = "stopped (lost)" if w.alive is not None else "stopped"
        lines.append(
            f"  {w.run:>4}  {w.name}  started {clock(max(0.0, now - w.started))} ago, {state}"
        )
    return "\n".join(lines) + "\n"


def _order(status: str) -> int:
    return _STATUSES.index(status) if status in _STATUSES else len(_STATUSES)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """Progress of a run, per system, on ``stream`` (stderr).

    Args:
        totals: Changes to do per system.
        stream: Where to draw (the CLI gives stderr; the report goes to stdout).
        mode: ``bar`` (``rich`` bars, redrawn in place), ``log`` (a timestamped line every
            ``interval`` seconds, also while nothing completes), ``none``, or ``auto``:
            bars on a terminal, lines otherwise.
        interval: Seconds between log lines.
        states: Each system's state now (``running``, ``throttled``, ``paused``,
            ``stopped``), e.g. :meth:`Dispatcher.states`.
        paces: Requests/s of the systems pacing themselves after 429s, e.g.
            :meth:`Dispatcher.paces` (shown beside their state).
        left: What is left per system over all workers (a shared journal's
            ``left``): the counts follow the whole plan, not only this worker's part
            (asked every couple of seconds).

    :meth:`update` only counts (it runs once per result); the display is redrawn by a
    timer started with :meth:`start`.
    """

    def __init__(
        self,
        totals: dict[str, int],
        stream: TextIO,
        mode: str = "auto",
        interval: float = 10.0,
        states: Callable[[], dict[str, str]] | None = None,
        left: Callable[[], dict[str, int]] | None = None,
        paces: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        if mode == "auto":
            mode = "bar" if _isatty(stream) else "log"
        self.mode = mode
        self.totals = dict(totals)
        self.total = sum(totals.values())
        self.stream = stream
        self.interval = interval
        self.states = states
        self.paces = paces
        self.done: Counter[str] = Counter()  # per system
        self.bad: Counter[str] = Counter()  # conflicts + failed, per system
        self.counts: Counter[str] = Counter()  # per status
        self.t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._rich: Any = None
        self._ids: dict[str, Any] = {}
        self.left = left
        self._synced = 0.0

    def _sync(self) -> None:
        """With other workers: done per system is the plan's, from the journal."""
        now = time.monotonic()
        if self.left is None or now - self._synced < 2.0:
            return
        self._synced = now
        self._left(self.left())

    def _left(self, left: dict[str, int]) -> None:
        for system, total in self.totals.items():
            self.done[system] = max(self.done[system], total - left.get(system, 0))

    def update(self, system: str, status: str) -> None:
        self.done[system] += 1
        self.counts[status] += 1
        if status in ("conflict", "failed"):
            self.bad[system] += 1

    def start(self) -> None:
        """Start drawing (on the running event loop)."""
        if self.mode == "none" or self._task is not None:
            return
        if self.mode == "bar":
            self._start_rich()
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="progress")

    async def _tick(self) -> None:
        period = 0.1 if self.mode == "bar" else self.interval
        while True:
            await asyncio.sleep(period)
            if self.left is not None and time.monotonic() - self._synced >= 2.0:
                # A query to a database that may be a network away: off the event loop.
                self._synced = time.monotonic()
                self._left(await asyncio.to_thread(self.left))
            self.show()

    def line(self, now: float | None = None) -> str:
        """All systems in one line (log mode, and the last line of a run)."""
        now = time.monotonic() if now is None else now
        done = sum(self.done.values())
        elapsed = max(now - self.t0, 1e-9)
        rate = done / elapsed
        left = self.total - done
        eta = clock(left / rate) if rate > 0 and left > 0 else "-"
        pct = done / self.total if self.total else 1.0
        states = self._states()
        parts = [
            f"{done:,}/{self.total:,} ({pct:.0%}) {rate:,.0f}/s ETA {eta}",
            f"conflicts {self.counts['conflict']:,} failed {self.counts['failed']:,}",
        ]
        for system in sorted(self.totals):
            state = states.get(system, "")
            shown = "" if state in ("", "running") else f" {state}"
            parts.append(f"{system} {self.done[system]:,}/{self.totals[system]:,}{shown}")
        return " | ".join(parts)

    def _states(self) -> dict[str, str]:
        """Each system's state, with its pace where it paces itself ("throttled, paced
        at 48/s"; "paced at 48/s" while it runs)."""
        states = dict(self.states()) if self.states else {}
        for system, pace in (self.paces() if self.paces else {}).items():
            state = states.get(system, "running")
            paced = f"paced at {pace:,.0f}/s"
            states[system] = paced if state == "running" else f"{state}, {paced}"
        return states

    def show(self) -> None:
        self._sync()
        if self.mode == "bar" and self._rich is not None:
            self._rates()
            states = self._states()
            for system, task in self._ids.items():
                state = states.get(system, "running")
                bad = self.bad[system]
                self._rich.update(
                    task,
                    completed=self.done[system],
                    state=state if not bad else f"{state}, {bad:,} not applied",
                )
        elif self.mode == "log":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self.stream.write(f"{stamp} progress: {self.line()}\n")
            self.stream.flush()

    def _start_rich(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        console = Console(file=self.stream, stderr=True)
        self._rich = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=None),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[state]}"),
            console=console,
            auto_refresh=True,
            refresh_per_second=8,
            redirect_stderr=True,
            redirect_stdout=False,
            expand=True,
        )
        width = max((len(s) for s in self.totals), default=6)
        for system in sorted(self.totals):
            self._ids[system] = self._rich.add_task(
                system.ljust(width), total=self.totals[system], state="running", rate=""
            )
        self._rich.start()

    def _rates(self) -> None:
        if self._rich is None:
            return
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        for system, task in self._ids.items():
            self._rich.update(task, rate=f"{self.done[system] / elapsed:,.0f}/s")

    async def aclose(self) -> None:
        """Stop drawing; leave the final state on screen."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        self.close()

    def close(self) -> None:
        if self.mode == "bar" and self._rich is not None:
            self.show()
            self._rich.stop()
            self._rich = None
        elif self.mode == "log":
            self.show()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# -- leftovers and undo -----------------------------------------------------------------------


def write_leftovers(journal: JournalLike, out: IO[bytes], statuses: Iterable[str]) -> int:
    """Write the plan lines of the items with one of ``statuses``, as a plan (JSON Lines,
    each change as the plan gave it, with its original id); returns how many."""
    n = 0
    for _, change in journal.changes(statuses):
        out.write(change + b"\n")
        n += 1
    return n


def write_undo(journal: JournalLike, out: IO[bytes]) -> tuple[int, Counter[str]]:
    """Write the inverse plan of what the journal's runs applied: each applied change back
    to the value it found, with ``expect`` (or ``test`` operations) set to the value it
    wrote, so that an undo never overwrites what someone changed since (those end as
    conflicts). Returns how many were written and, per reason, how many could not be."""
    n = 0
    skipped: Counter[str] = Counter()
    for row in journal.rows(statuses=("applied", "recovered")):
        if row.change is None:
            continue
        undo = inverse(row.change, row.before, row.after)
        if isinstance(undo, str):
            skipped[undo] += 1
            continue
        out.write(_encode(undo) + b"\n")
        n += 1
    return n, skipped


def inverse(change: dict[str, Any], before: Any, after: Any) -> dict[str, Any] | str:
    """The change that puts back what ``change`` replaced, or why there is none.

    ``before``/``after``: the touched fields as the journal kept them (see
    ``Adapter.touched``).
    """
    action = change.get("action")
    if action == "delegate":
        return "a delegation cannot be undone (it created a successor assignment)"
    if action == "move":
        was = before.get("to") if isinstance(before, dict) else None
        now = after.get("to") if isinstance(after, dict) else None
        if not isinstance(was, dict) or not isinstance(now, dict):
            return "the user's earlier placement is not known"
        if any(v is None for v in was.values()):
            return "the user had no earlier placement to move back to"
        return {
            "system": change["system"],
            "record": change["record"],
            "id": f"undo-{change.get('id')}",
            "action": "move",
            "to": was,
            "expect": now,
        }
    if before is None and action in ("assign", "unassign") and change.get("expect") is not None:
        # A write guarded by `expect` was sent only while the record held that: it is
        # what the record held before (a `recovered` change, whose read was not kept).
        before = {"to": change["expect"]}
        if action == "assign" and change.get("to_type", "user") != "user":
            before["to_type"] = change["to_type"]
    if not isinstance(before, dict) or not isinstance(after, dict):
        return "the record's earlier value is not known (it was not read before the write)"
    base = {
        "system": change["system"],
        "record": change["record"],
        "id": f"undo-{change.get('id')}",
    }
    if action in ("assign", "unassign"):
        was, now = before.get("to"), after.get("to")
        empty: tuple[Any, ...] = (None, [])
        if was in empty:
            if now in empty:
                return "nothing to undo (unassigned before and after)"
            return {**base, "action": "unassign", "expect": now}
        undo: dict[str, Any] = {**base, "action": "assign", "to": was}
        if before.get("to_type", "user") != "user":
            undo["to_type"] = before["to_type"]
        if now is not None:
            undo["expect"] = now
        return undo
    keys = [k for k in before if k not in after or not json_equal(before[k], after[k])]
    keys += [k for k in after if k not in before]
    if not keys:
        return "nothing to undo (no field changed)"
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/" + _escape(k), "value": after[k]} for k in keys if k in after
    ]
    for key in keys:
        path = "/" + _escape(key)
        if key in before:
            ops.append(
                {"op": "replace" if key in after else "add", "path": path, "value": before[key]}
            )
        else:
            ops.append({"op": "remove", "path": path})
    return {**base, "action": "patch", "patch": ops}


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
