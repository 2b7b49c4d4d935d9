"""The long reliability runs: chaos (every fault at once) and repeated kill -9 with resume.

chaos: the demo plan (five systems interleaved) against the sandbox with 429s (with
Retry-After), 503s, latency spikes, dropped connections (half after the change applied),
concurrent editors, and every server going down for a while and coming back, all at once;
plus records someone else reassigned before the run (their changes must end as
conflicts). Reports applied, conflicts, failed, duplicates (must be 0), lost (must be 0)
and the time against a fault-free run of the same plan.

kills: ``patchassign run`` in a subprocess, killed with SIGKILL at random points (at least
20 times) and resumed each time, then finished; the final state must equal the plan's and
no change may be applied twice.

Run: python -m benchmarks.reliability chaos [--records 10000]     # 5 x 10,000 changes
     python -m benchmarks.reliability kills [--records 1000] [--kills 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec

from benchmarks._harness import machine
from patchassign.cli import _demo_config
from patchassign.dispatch import Dispatcher, Limits, RetryPolicy
from patchassign.sandbox import (
    SYSTEMS,
    Faults,
    Sandbox,
    demo_mismatches,
    demo_plan,
    exact_faults,
    move_elsewhere,
    moved_elsewhere,
)

CHAOS = Faults(
    throttle=0.05,
    retry_after=1,
    unavailable=0.05,
    latency=0.0,
    jitter=0.005,
    spikes=0.01,
    spike=0.5,
    drop=0.02,
    editor=0.1,
    gateway=0.01,  # a proxy's 200 page, the request not forwarded
    late=0.01,  # writes held 12 s, past the 10 s timeout, then applied
    hold=12.0,
    echo=0.01,  # 500 with the request's credential in the message
    seed=2026,
)
POLICY = RetryPolicy(base=0.1, cap=2.0, timeout=10.0, attempts=10, deadline=600)
LIMITS = {"perscom": Limits(concurrency=16)}  # the fake has no per-minute limit


async def one_run(n: int, faults: Faults | None, outages: bool) -> dict[str, Any]:
    async with Sandbox(demo=n, faults=None if faults is None else exact_faults(faults)) as sb:
        moved = {i for i in range(1, n + 1) if moved_elsewhere(i)}
        for i in moved:
            move_elsewhere(sb, i)
        statuses: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        # Changes that gave up after ``RetryPolicy.conflicts`` re-reads, the editor having
        # changed the record between each read and its write (at 10% of reads, about one
        # change in a million: every few runs, one): reported, not lost.
        gave_up: dict[str, set[int]] = {system: set() for system in SYSTEMS}
        odd: Counter[str] = Counter()  # conflicts nobody planned, by reason
        outage_log: list[str] = []

        async def outage() -> None:
            # each server in turn: down for 3 s, back for 2 s
            await asyncio.sleep(2)
            for server in sb:
                await server.go_down()
                outage_log.append(f"{server.system} down")
                await asyncio.sleep(3)
                await server.come_back()
                await asyncio.sleep(2)

        tokens = [
            t
            for info in sb.describe().values()
            for t in [info["token"], *info.get("app_tokens", {}).values()]
        ]
        leaked = 0
        t = time.perf_counter()
        async with Dispatcher(sb.adapters(), retry=POLICY, limits=LIMITS, seed=1) as d:
            chaos = asyncio.create_task(outage()) if outages else None
            results = 0
            async for r in d.run(demo_plan(n)):
                statuses[r.status] += 1
                results += 1
                if r.status == "failed":
                    errors[f"{r.system}: {r.error}"] += 1
                elif r.status == "conflict" and r.id is not None:
                    i = int(r.id.rsplit("-", 1)[1])  # the demo's ids: "<system>-<i>"
                    if (r.error or "").startswith("still conflicting after"):
                        gave_up[r.system].add(i)
                    elif i not in moved:
                        odd[f"{r.system}: {r.error}"] += 1
                if r.error and any(token in r.error for token in tokens):
                    leaked += 1
            if chaos is not None:
                chaos.cancel()
        elapsed = time.perf_counter() - t
        await asyncio.sleep(faults.hold if faults is not None and faults.late else 0)
        duplicates = sum(1 for s in sb for count in s.stats.writes.values() if count > 1)
        wrong = [
            problem
            for system in sb.servers
            for problem in demo_mismatches(sb, n, [system], skip=moved | gave_up[system])
        ]
        injected = {
            "429": sum(c for s in sb for (_, st), c in s.stats.requests.items() if st == 429),
            "503": sum(c for s in sb for (_, st), c in s.stats.requests.items() if st == 503),
            "dropped": sum(sum(s.stats.dropped.values()) for s in sb),
            "edits": sum(sum(s.stats.edits.values()) for s in sb),
            "late": sum(s.stats.late for s in sb),
            "echoed": sum(s.stats.echoed for s in sb),
        }
        return {
            "changes": len(SYSTEMS) * n,
            "results": results,
            "statuses": dict(statuses),
            "expected_conflicts": len(SYSTEMS) * len(moved),
            "gave_up": sum(len(ids) for ids in gave_up.values()),
            "odd": odd.most_common(5),
            "wrong": wrong[:5],
            "duplicates": duplicates,
            "lost": len(wrong) + (len(SYSTEMS) * n - results),
            "elapsed": elapsed,
            "injected": injected,
            "outages": len(outage_log),
            "leaked": leaked,
            "errors": errors.most_common(5),
        }


def chaos(records: int) -> None:
    print(machine())
    clean = asyncio.run(one_run(records, None, False))
    rough = asyncio.run(one_run(records, CHAOS, True))
    print(f"\n### Chaos: {len(SYSTEMS) * records:,} changes, every fault at once\n")
    print("| run | applied | conflicts (expected) | failed | duplicates | lost | time |")
    print("|---|---|---|---|---|---|---|")
    for name, r in (("fault-free", clean), ("chaos", rough)):
        s = r["statuses"]
        print(
            f"| {name} | {s.get('applied', 0):,} | {s.get('conflict', 0):,} "
            f"({r['expected_conflicts']:,}) | {s.get('failed', 0):,} | {r['duplicates']} "
            f"| {r['lost']} | {r['elapsed']:,.1f} s |"
        )
    inj = rough["injected"]
    print(
        f"\nInjected in the chaos run: {inj['429']:,} x 429, {inj['503']:,} x 503, "
        f"{inj['dropped']:,} dropped connections, {inj['edits']:,} concurrent edits, "
        f"{inj['late']:,} writes held 12 s and applied late, {inj['echoed']:,} answers echoing "
        f"the credential ({rough['leaked']} results carrying one), "
        f"{rough['outages']} server outages of 3 s; slowdown {rough['elapsed'] / clean['elapsed']:.1f}x."
    )
    if rough["gave_up"]:
        print(
            f"{rough['gave_up']} change(s) gave up after {POLICY.conflicts + 1} version "
            "conflicts in a row (the editor changed the record between each read and its "
            "write): reported as conflicts with the reason, not counted as lost."
        )
    for error, count in rough["errors"]:
        print(f"  failed {count} x {error}")
    for error, count in rough["odd"]:
        print(f"  unplanned conflict {count} x {error}")
    for problem in rough["wrong"]:
        print(f"  not as planned: {problem}")
    ok = (
        rough["duplicates"] == 0
        and rough["lost"] == 0
        and not rough["statuses"].get("failed")
        and rough["leaked"] == 0
    )
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


async def kills(records: int, count: int) -> None:
    print(machine())
    rng = random.Random(20)
    # Dropped connections, a proxy's 200 pages, answers echoing the credential, and
    # writes held 2 s before they are applied (what a kill leaves in flight).
    faults = Faults(
        latency=0.01, jitter=0.01, drop=0.01, gateway=0.01, echo=0.01, late=0.02, hold=2.0, seed=5
    )
    with tempfile.TemporaryDirectory() as folder:
        d = Path(folder)
        async with Sandbox(demo=records, faults=faults) as sb:
            env = _demo_config(sb, d / "systems.toml")
            config = d / "systems.toml"
            # Held writes (2 s) land within timeout + settle (3 s) of being sent; a resume
            # waits that long (plus a journal interval) before reading what a killed run
            # had in flight to PERSCOM and Findable.
            text = config.read_text().replace("timeout = 5.0", "timeout = 2.5")
            config.write_text(text.replace("settle = 1.0", "settle = 0.5"))
            settle_wait = 1.0 + 2.5 + 0.5
            plan = d / "plan.jsonl"
            with open(plan, "wb") as f:
                for change in demo_plan(records):
                    f.write(msgspec.json.encode(change) + b"\n")
            total = len(SYSTEMS) * records
            killed_at: list[int] = []
            t = time.perf_counter()
            runs = 0
            while len(killed_at) < count:
                # start-up and loading take about 0.5 s; a resume first waits out the
                # settle time of the writes the killed run had in flight
                delay = rng.uniform(0.6, 2.0) + (settle_wait if runs else 0.0)
                code, seen = await _run_and_kill(plan, d, env, delay, resume=runs > 0)
                runs += 1
                if code != -signal.SIGKILL:
                    print(f"run {runs} finished (exit {code}) before its kill at {delay:.2f}s")
                    break
                killed_at.append(seen)
            code, _ = await _run_and_kill(plan, d, env, None, resume=True)
            elapsed = time.perf_counter() - t
            duplicates = sum(1 for s in sb for c in s.stats.writes.values() if c > 1)
            wrong = demo_mismatches(sb, records)
            print(f"\n### Kill -9 and resume: {total:,} changes, {len(killed_at)} kills\n")
            print(f"journaled outcomes at each kill: {killed_at}")
            with sqlite3.connect(plan.with_name(plan.name + ".journal")) as db:
                final = dict(db.execute("SELECT status, count(*) FROM items GROUP BY 1"))
                dump = "\n".join(db.iterdump())
            tokens = [
                t
                for info in sb.describe().values()
                for t in [info["token"], *info.get("app_tokens", {}).values()]
            ]
            leaked = sum(token in dump for token in tokens)
            # Every record started with team A: nothing may be reported `unchanged`; the
            # changes a killed run applied without journaling them are `recovered`.
            print(f"final outcomes: {final}")
            print(
                f"final run exit {code}; records not as planned: {len(wrong)}; "
                f"changes applied twice: {duplicates}; total time {elapsed:,.1f} s"
            )
            print(
                f"faults: {sum(s.stats.late for s in sb):,} writes held 2 s, "
                f"{sum(s.stats.echoed for s in sb):,} answers echoing the credential "
                f"(tokens in the journal: {leaked}), "
                f"{sum(sum(s.stats.dropped.values()) for s in sb):,} dropped connections"
            )
            ok = (
                code == 0
                and not wrong
                and duplicates == 0
                and len(killed_at) >= count
                and not final.get("unchanged")
                and not leaked
            )
            print("PASS" if ok else "FAIL")
            sys.exit(0 if ok else 1)


def _journaled(journal: Path) -> int:
    if not journal.exists():
        return 0
    with sqlite3.connect(journal) as db:
        return int(
            db.execute(
                "SELECT count(*) FROM items WHERE status NOT IN ('pending', 'taken')"
            ).fetchone()[0]
        )


async def _run_and_kill(
    plan: Path, d: Path, env: dict[str, str], delay: float | None, *, resume: bool
) -> tuple[int, int]:
    """Run ``patchassign run``; SIGKILL it after ``delay`` seconds unless it ended.

    Returns the exit status and the outcomes in the journal at the kill."""
    args = ["-m", "patchassign", "run", str(plan), "-c", str(d / "systems.toml")]
    args += ["--progress", "none", "--concurrency", "4"] + (["--resume"] if resume else [])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    seen = 0
    if delay is not None:
        try:
            await asyncio.wait_for(proc.wait(), delay)
        except TimeoutError:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            seen = _journaled(plan.with_name(plan.name + ".journal"))
    return await proc.wait(), seen


def main() -> None:
    parser = argparse.ArgumentParser(description="Long reliability runs.")
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("chaos")
    c.add_argument("--records", type=int, default=10_000, help="per system")
    k = sub.add_parser("kills")
    k.add_argument("--records", type=int, default=1000, help="per system")
    k.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    if args.what == "chaos":
        chaos(args.records)
    else:
        asyncio.run(kills(args.records, args.kills))


if __name__ == "__main__":
    main()
