"""A night run through the CLI: a big mixed plan with one system throttled to a trickle.

Two runs of ``patchassign run`` (fresh processes, fresh sandboxes in their own process,
journal and results as a user runs it):

* baseline: the plan without the slow system's lines;
* mixed: the whole plan, the slow system limited (``--limit``) to about 5% of the rate the
  others reach. Once every other system's items are done, the run is interrupted (Ctrl-C,
  as a user would do, or leave it to finish overnight): the slow system's rest stays in
  the journal for ``--resume``.

For each other system: seconds from the run's first change to its last outcome, alone and
in the mixed plan, read from the journal's timings.

Run: python -m benchmarks.night [--lines 200000] [--slow superoffice] [--rate 25]
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from benchmarks._harness import machine, sandbox_process

SYSTEMS = ("perscom", "maxsight", "kintone", "superoffice", "findable")


def _finish_times(journal: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Per system: seconds from the run's first start to its last outcome; outcomes."""
    with sqlite3.connect(journal) as db:
        t0 = db.execute("SELECT min(started) FROM items WHERE started IS NOT NULL").fetchone()[0]
        rows = db.execute(
            "SELECT system, max(started + elapsed), count(*) FROM items "
            "WHERE elapsed IS NOT NULL GROUP BY system"
        ).fetchall()
    return {s: end - t0 for s, end, _ in rows}, {s: n for s, _, n in rows}


def one(
    folder: Path, per_system: int, systems: tuple[str, ...], slow: str, rate: float
) -> tuple[dict[str, float], dict[str, int], float]:
    from patchassign.sandbox import demo_plan

    server, env = sandbox_process(per_system, folder / "systems.toml")
    try:
        plan = folder / "plan.jsonl"
        with open(plan, "wb") as f:
            for change in demo_plan(per_system, systems):
                f.write(msgspec.json.encode(change) + b"\n")
        journal = folder / "plan.journal"
        args = [
            sys.executable,
            "-m",
            "patchassign",
            "run",
            str(plan),
            "-c",
            str(folder / "systems.toml"),
            "--journal",
            str(journal),
            "--progress",
            "none",
            "--limit",
            f"{slow}=2:{rate:g}",
        ]
        t = time.perf_counter()
        proc = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        others = [s for s in systems if s != slow]
        marks = ",".join("?" * len(others))
        while proc.poll() is None:
            time.sleep(0.5)
            if not journal.exists():
                continue
            try:
                with sqlite3.connect(journal) as db:
                    loaded = db.execute("SELECT count(*) FROM items").fetchone()[0]
                    left = db.execute(
                        f"SELECT count(*) FROM items WHERE system IN ({marks}) "
                        "AND status IN ('pending', 'taken')",
                        others,
                    ).fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if loaded and not left and slow in systems:
                proc.send_signal(signal.SIGINT)  # the others are done: stop for the night
                break
        proc.wait(120)
        wall = time.perf_counter() - t
        finish, counts = _finish_times(journal)
        return finish, counts, wall
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--slow", default="superoffice")
    parser.add_argument("--rate", type=float, default=25.0, help="the slow system's requests/s")
    parser.add_argument(
        "--repeat", type=int, default=1, help="alternate the two runs this many times"
    )
    args = parser.parse_args()
    per_system = args.lines // len(SYSTEMS)
    others = tuple(s for s in SYSTEMS if s != args.slow)
    print(machine())
    print(
        f"\n{args.lines:,}-line plan, {per_system:,} changes per system; {args.slow} limited "
        f"to 2 in flight and {args.rate:g} requests/s"
    )
    for _ in range(args.repeat):
        pair(args, per_system, others)


def pair(args: argparse.Namespace, per_system: int, others: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        alone, _, wall_alone = one(Path(a), per_system, others, args.slow, args.rate)
        mixed, n_mixed, wall_mixed = one(Path(b), per_system, SYSTEMS, args.slow, args.rate)
    print(
        "\n| system | last outcome, plan without it | last outcome, mixed plan | ratio "
        "| outcomes (mixed) |"
    )
    print("|---|---|---|---|---|")
    for s in others:
        print(
            f"| {s} | {alone[s]:,.1f} s | {mixed[s]:,.1f} s | {mixed[s] / alone[s]:.2f}x "
            f"| {n_mixed.get(s, 0):,} |"
        )
    print(
        f"| {args.slow} (stopped when the others were done) | - | {mixed.get(args.slow, 0):,.1f} s "
        f"| - | {n_mixed.get(args.slow, 0):,} |"
    )
    print(f"\nwall time with start-up and loading: {wall_alone:,.1f} s and {wall_mixed:,.1f} s")


if __name__ == "__main__":
    main()
