"""Many workers, one plan: ``patchassign run`` processes sharing a PostgreSQL journal.

scale: throughput with 1, 2 and 4 workers, against rate-limited fakes (the limits are
shared: the sum over workers must hold, and the work spreads) and against unlimited ones
(how it scales on this machine); ``--rtt`` puts the database further away (a proxy that
holds every packet half of it each way), as on a network. Everything runs here: the sandbox (one process), the
workers, and a throwaway PostgreSQL server.

chaos: 4 workers share a plan across the five systems with faults on, while a chaos loop
kill -9s a random worker (10 times) and starts a new one. Checks: every change ends with
one outcome, the servers' records equal the plan's, no change applied twice (the fakes'
write counters), and the most requests in flight to each fake never exceeded its shared
limit.

crowd: more workers than a system's slots (3 workers, Maxsight, SuperOffice and the
in-house helpdesk each limited to 1 request in flight, a 2 s deadline, 10 ms latency): the workers that
join get no share while the first has work. Checks what became of every change (none
may wait out its deadline for a slot another worker holds) and the latency per change.

Run: python -m benchmarks.workers scale [--records 1000] [--workers 1,2,4] [--rtt MS]
     python -m benchmarks.workers chaos [--records 4000] [--workers 4] [--kills 10] [--cuts 5]
     python -m benchmarks.workers crowd [--records 200] [--workers 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from benchmarks._harness import machine
from patchassign.cli import _demo_config
from patchassign.journal import PgJournal, open_journal
from patchassign.sandbox import SYSTEMS, Faults, Sandbox, demo_mismatches, demo_plan
from patchassign.sandbox.postgres import PostgresServer


def _limits(concurrency: int, rate: float | None) -> list[str]:
    spec = f"{concurrency}" + (f":{rate:g}:{concurrency}" if rate else "")
    return [a for s in SYSTEMS for a in ("--limit", f"{s}={spec}")]


async def _worker(
    d: Path, env: dict[str, str], url: str, extra: list[str], plan: Path | None
) -> asyncio.subprocess.Process:
    args = [str(plan)] if plan else ["--join"]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchassign", "run", *args, "-c", str(d / "systems.toml"),
        "--journal", url, "--progress", "none", "--lease", "3", *extra,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )  # fmt: skip


class _Delay:
    """A TCP proxy on 127.0.0.1 to ``target`` that holds every chunk ``rtt / 2`` seconds
    each way: a database on another machine, for the workers' journal connections."""

    def __init__(self, target: int, rtt: float) -> None:
        self.target = target
        self.half = rtt / 2
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _Delay:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def url(self, url: str, port: int) -> str:
        return url.replace(f":{port}/", f":{self.port}/", 1)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        except asyncio.CancelledError:  # the loop ends (the run is over)
            pass
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                when, data = await queue.get()
                if not data:
                    writer.write_eof()
                    return
                if when > loop.time():
                    await asyncio.sleep(when - loop.time())
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.half, data))
        finally:
            queue.put_nowait((0.0, b""))
            await delivering


def _write_plan(path: Path, records: int) -> None:
    with open(path, "wb") as f:
        for change in demo_plan(records):
            f.write(msgspec.json.encode(change) + b"\n")


async def _one(
    pg: PostgresServer | None,
    records: int,
    workers: int,
    limits: list[str],
    faults: Faults | None,
    rtt: float = 0.0,
) -> dict[str, Any]:
    """One shared run (``pg``), or the baseline: one worker with a SQLite journal.
    ``rtt``: seconds added to every round trip between the workers and the database."""
    with tempfile.TemporaryDirectory() as folder:
        d = Path(folder)
        url = pg.new_database() if pg else str(d / "plan.journal")
        async with Sandbox(demo=records, faults=faults) as sb, contextlib.AsyncExitStack() as s:
            if pg is not None and rtt:
                delay = await s.enter_async_context(_Delay(pg.port, rtt))
                url, direct = delay.url(url, pg.port), url
            else:
                direct = url
            env = _demo_config(sb, d / "systems.toml")
            plan = d / "plan.jsonl"
            _write_plan(plan, records)
            # The first worker loads the plan (its load is part of the time), the
            # others join it.
            t0 = time.perf_counter()
            cpu0 = _cpu()
            procs = [await _worker(d, env, url, limits, plan)]
            procs += [await _worker(d, env, url, limits, None) for _ in range(workers - 1)]
            errors = []
            for p in procs:
                _, err = await p.communicate()
                if p.returncode != 0:
                    errors.append(err.decode()[-400:])
            elapsed = time.perf_counter() - t0
            cpu = [b - a for a, b in zip(cpu0, _cpu(), strict=True)]
            with open_journal(direct) as j:
                counts: Counter[str] = Counter()
                for (_, status), n in j.counts().items():
                    counts[status] += n
                split = Counter(r.run for r in j.rows())
            requests = sum(s.stats.count() for s in sb)
            return {
                "elapsed": elapsed,
                "changes": len(SYSTEMS) * records,
                "applied": counts["applied"] + counts["recovered"],
                "requests": requests,
                "peak": {type(s).__name__.removesuffix("Server").lower(): s.stats.peak for s in sb},
                "split": sorted(split.values(), reverse=True),
                "wrong": len(demo_mismatches(sb, records)),
                "twice": sum(1 for s in sb for n in s.stats.writes.values() if n > 1),
                "errors": errors,
                "cpu": cpu,
            }


def _cpu() -> tuple[float, float]:
    """CPU seconds so far of this process (the sandbox) and of its ended children (the
    workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


async def scale(records: int, counts: list[int], only: str | None = None, rtt: float = 0.0) -> None:
    print(machine())
    far = f"; the database {rtt * 1000:g} ms away (a round trip)" if rtt else ""
    print(
        f"\n### Workers sharing one plan: {len(SYSTEMS) * records:,} changes ({len(SYSTEMS)} systems x {records:,}), "
        f"sandbox with 5 ms latency{far}\n"
    )
    print("| fakes | limit per system (all workers) | workers | changes/s | requests/s | "
          "most in flight at a fake | items per worker | CPU s: sandbox / workers |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---|---|")
    faults = Faults(latency=0.005, seed=1)
    modes = (
        ("rate-limited", "8 in flight, 100 req/s", _limits(8, 100.0)),
        # limits that never bind: each worker up to 64 requests in flight (--concurrency)
        ("unlimited", "none that binds", [*_limits(512, None), "--concurrency", "64"]),
    )
    with PostgresServer() as pg:
        for label, limit, limits in modes:
            if only and label != only:
                continue
            for w in [0, *counts]:
                r = await _one(pg if w else None, records, max(w, 1), limits, faults, rtt)
                bad = r["wrong"] or r["twice"] or r["errors"] or r["applied"] != r["changes"]
                journal = "SQLite" if not w else "PostgreSQL"
                print(
                    f"| {label} | {limit} | {max(w, 1)} ({journal}) | "
                    f"{r['changes'] / r['elapsed']:,.0f} | "
                    f"{r['requests'] / r['elapsed']:,.0f} | {max(r['peak'].values())} | "
                    f"{' / '.join(f'{n:,}' for n in r['split'])} | "
                    f"{r['cpu'][0]:,.1f} / {r['cpu'][1]:,.1f} |" + (" FAIL" if bad else ""),
                    flush=True,
                )
                if bad:
                    print(r["errors"][:2], r["wrong"], r["twice"], file=sys.stderr)


async def chaos(records: int, workers: int, kills: int, cuts: int) -> None:
    print(machine())
    rng = random.Random(11)
    faults = Faults(
        latency=0.005,
        jitter=0.01,
        throttle=0.02,
        retry_after=1,
        unavailable=0.02,
        drop=0.01,
        late=0.005,
        hold=2.0,
        seed=9,
    )
    # 8 in flight and 150 requests/s per system, for all workers together: the run
    # lasts long enough (about a minute) for the kills to land mid-run.
    conc = 8
    limits = _limits(conc, 150.0)
    with PostgresServer() as pg, tempfile.TemporaryDirectory() as folder:
        url = pg.new_database()
        d = Path(folder)
        async with Sandbox(demo=records, faults=faults) as sb:
            env = _demo_config(sb, d / "systems.toml")
            plan = d / "plan.jsonl"
            _write_plan(plan, records)
            t0 = time.perf_counter()
            procs = [await _worker(d, env, url, limits, plan)]
            await asyncio.sleep(1.0)
            procs += [await _worker(d, env, url, limits, None) for _ in range(workers - 1)]
            cut = 0

            async def cutter() -> None:
                # The database ends every connection of the workers (a restart, a
                # failover): each connects again and goes on.
                nonlocal cut
                when = random.Random(12)  # (the kills keep their own schedule)
                with psycopg.connect(url, autocommit=True) as admin:
                    while cut < cuts and any(p.returncode is None for p in procs):
                        await asyncio.sleep(when.uniform(2.0, 4.0))
                        admin.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                        )
                        cut += 1

            cutting = asyncio.create_task(cutter())
            killed = 0
            while killed < kills:
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                live = [p for p in procs if p.returncode is None]
                if not live:
                    break
                victim = rng.choice(live)
                victim.send_signal(signal.SIGKILL)
                await victim.wait()
                killed += 1
                procs.append(await _worker(d, env, url, limits, None))
            codes = []
            again = 0
            for p in procs:
                _, err = await p.communicate()
                codes.append(p.returncode)
                again += err.decode(errors="replace").count("connecting again")
                if p.returncode not in (0, -signal.SIGKILL):
                    print(err.decode()[-600:], file=sys.stderr)
            await cutting
            elapsed = time.perf_counter() - t0
            with PgJournal(url) as j:
                counts = j.counts()
                outcomes = Counter(s for (_, s), n in counts.items() for _ in range(n))
                rows = j.count()
            wrong = demo_mismatches(sb, records)
            twice = sum(1 for s in sb for n in s.stats.writes.values() if n > 1)
            peaks = {type(s).__name__.removesuffix("Server").lower(): s.stats.peak for s in sb}
            over = {k: v for k, v in peaks.items() if v > conc}
            print(
                f"\n### Chaos: {workers} workers, {len(SYSTEMS) * records:,} changes, {killed} kill -9s, "
                f"{cut} cuts of every connection\n"
            )
            print(f"outcomes: {dict(outcomes)} ({rows:,} items)")
            print(f"worker exits: {Counter(codes)}; journal reconnections: {again}")
            print(
                f"records not as planned: {len(wrong)}; changes applied twice: {twice}; "
                f"most in flight per fake (limit {conc}): {peaks}; time {elapsed:,.1f} s"
            )
            print(
                f"faults: {sum(s.stats.count(status=429) for s in sb):,} 429s, "
                f"{sum(s.stats.count(status=503) for s in sb):,} 503s, "
                f"{sum(sum(s.stats.dropped.values()) for s in sb):,} dropped connections, "
                f"{sum(s.stats.late for s in sb):,} writes held 2 s"
            )
            done = sum(n for s, n in outcomes.items() if s in ("applied", "recovered"))
            ok = done == len(SYSTEMS) * records and not wrong and not twice and not over
            ok = ok and killed == kills and cut == cuts
            ok = ok and all(c in (0, -signal.SIGKILL) for c in codes)
            print("PASS" if ok else "FAIL")
            sys.exit(0 if ok else 1)


CROWD = ["maxsight", "superoffice", "helpdesk"]


async def _at_work(url: str, first: asyncio.subprocess.Process) -> None:
    """Until the first worker has taken items (or ended)."""
    while first.returncode is None:
        await asyncio.sleep(0.05)
        # (The journal may not exist yet.)
        with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as c:
            row = c.execute(
                "SELECT count(*) FROM patchassign.items WHERE status <> 'pending'"
            ).fetchone()
            if row and row[0]:
                return


async def crowd(records: int, workers: int, rounds: int) -> None:
    print(machine())
    print(
        f"\n### More workers than slots: {workers} workers, {len(CROWD)} systems x "
        f"{records:,} changes, 1 request in flight per system, a 2 s deadline, 10 ms latency\n"
    )
    print("| round | workers | time | outcomes | items per worker | latency p50 / p99 / max |")
    print("|---:|---:|---:|---|---|---|")
    limits = [a for s in CROWD for a in ("--limit", f"{s}=1")]
    with PostgresServer() as pg:
        for n in range(1, rounds + 1):
            with tempfile.TemporaryDirectory() as folder:
                d = Path(folder)
                url = pg.new_database()
                async with Sandbox(demo=records, systems=CROWD, faults=Faults(latency=0.01)) as sb:
                    env = _demo_config(sb, d / "systems.toml")
                    config = d / "systems.toml"
                    config.write_text(
                        config.read_text().replace("[retry]\n", "[retry]\ndeadline = 2\n")
                    )
                    plan = d / "plan.jsonl"
                    plan.write_bytes(b"".join(msgspec.json.encode(c) + b"\n" for c in demo_plan(records, CROWD)))  # fmt: skip
                    t0 = time.perf_counter()
                    procs = [await _worker(d, env, url, limits, plan)]
                    await _at_work(url, procs[0])  # the others join once it took items
                    procs += [await _worker(d, env, url, limits, None) for _ in range(workers - 1)]
                    for p in procs:
                        await p.communicate()
                    elapsed = time.perf_counter() - t0
                    with PgJournal(url) as j:
                        outcomes: Counter[str] = Counter()
                        for (_, status), k in j.counts().items():
                            outcomes[status] += k
                        rows = list(j.rows())
                    split = sorted(Counter(r.run for r in rows).values(), reverse=True)
                    took = sorted(r.elapsed for r in rows if r.elapsed is not None)

                    def q(f: float, took: list[float] = took) -> float:
                        return took[min(len(took) - 1, int(f * len(took)))] * 1000

                    shown = ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))
                    print(
                        f"| {n} | {workers} | {elapsed:.1f} s | {shown} | "
                        f"{' / '.join(f'{k:,}' for k in split)} | "
                        f"{q(0.5):,.0f} / {q(0.99):,.0f} / {took[-1] * 1000:,.0f} ms |",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Workers sharing a PostgreSQL journal.")
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--records", type=int, default=1000, help="per system")
    s.add_argument("--workers", default="1,2,4")
    s.add_argument("--only", choices=["rate-limited", "unlimited"])
    s.add_argument(
        "--rtt", type=float, default=0.0, help="ms added to each round trip to the database"
    )
    c = sub.add_parser("chaos")
    c.add_argument("--records", type=int, default=4000, help="per system")
    c.add_argument("--workers", type=int, default=4)
    c.add_argument("--kills", type=int, default=10)
    c.add_argument("--cuts", type=int, default=5, help="times every connection is cut")
    w = sub.add_parser("crowd")
    w.add_argument("--records", type=int, default=200, help="per system")
    w.add_argument("--workers", type=int, default=3)
    w.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.what == "crowd":
        asyncio.run(crowd(args.records, args.workers, args.rounds))
    elif args.what == "scale":
        workers = [int(n) for n in args.workers.split(",")]
        asyncio.run(scale(args.records, workers, args.only, args.rtt / 1000))
    else:
        asyncio.run(chaos(args.records, args.workers, args.kills, args.cuts))


if __name__ == "__main__":
    main()
