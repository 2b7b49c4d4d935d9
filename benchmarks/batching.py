"""Requests per change, batched and one by one, under each system's real limits.

* Kintone: the demo's changes (each names who holds the record: a read first), 50 in
  flight (the adapter's default; the domain allows 100): batched reads through
  ``records.json`` (500) and writes through ``bulkRequest.json`` (20), against one request
  each.
* PERSCOM: plain reassignments (no read), under PERSCOM's 1,000 requests a minute
  (the adapter's default limits: 16 in flight, 16.7/s, bursts of 20): batch updates
  (50 per request) against one request each. One by one at 16.7 requests/s, 10,000
  changes take ten minutes: that row runs ``--perscom-single`` changes (1,000 by default)
  and gives the rate, which is what the limit decides.
* PERSCOM, the demo's changes (each names who holds the record: a read first; PERSCOM
  reads one record per request), at a worker's share of its limits (2 in flight, 8
  requests/s: ``--reads`` changes, 300 by default): the reads go one by one and the
  writes in batches; the rate is what a read each allows.

The sandbox adds ``--latency`` seconds to every answer (20 ms by default), as a network
and a busy server would. Run: python -m benchmarks.batching [--n 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

from benchmarks._harness import machine
from patchassign import Dispatcher
from patchassign.changes import Assign, Change
from patchassign.sandbox import Sandbox, demo_plan
from patchassign.systems import Limits


async def measure(
    system: str,
    changes: list[Change],
    n: int,
    batch: int | None,
    latency: float,
    share: tuple[int, float] | None = None,
) -> tuple[float, int, Counter[str]]:
    """Seconds, requests the server answered, and the results' statuses. ``share``: in
    flight and requests/s instead of the system's own limits (a worker's share)."""
    async with Sandbox(demo=n, systems=[system], faults={"latency": latency}) as sb:
        adapter = sb.adapters()[system]
        own = adapter.limits
        concurrency, rate = share or (own.concurrency, own.rate)
        burst = concurrency if share else own.burst
        limits = {system: Limits(concurrency=concurrency, rate=rate, burst=burst, batch=batch)}
        async with Dispatcher(sb.adapters(), limits=limits) as d:
            t = time.perf_counter()
            results = await d.send_all(changes)
            elapsed = time.perf_counter() - t
        server = sb.servers[system]
        wrong = list(server.demo_mismatches(range(1, len(changes) + 1)))
        assert not wrong, wrong[:3]
        assert max(server.stats.writes.values()) == 1
        return elapsed, server.stats.count(), Counter(r.status for r in results)


def perscom_plan(n: int) -> list[Change]:
    """Plain reassignments of PERSCOM's demo records to team B (no ``expect``)."""
    out: list[Change] = []
    for change in demo_plan(n, ["perscom"]):
        assert isinstance(change, Assign)
        out.append(Assign(system="perscom", record=change.record, to=change.to, id=change.id))
    return out


async def main(n: int, single: int, latency: float, reads: int = 300) -> None:
    print(machine())
    print(f"\nSandbox latency {latency * 1000:.0f} ms per answer.\n")
    print("| system | changes | mode | requests | requests per change | time | changes/s | statuses |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---|")
    share = (2, 8.0)  # a quarter of the workers' (PERSCOM's 16 in flight, 16.7/s) and less
    rows: list[tuple[str, list[Change], int, int | None, str, tuple[int, float] | None]] = [
        ("kintone", list(demo_plan(n, ["kintone"])), n, None, "batched", None),
        ("kintone", list(demo_plan(n, ["kintone"])), n, 0, "one by one", None),
        ("perscom", perscom_plan(n), n, None, "batched", None),
        ("perscom", perscom_plan(single), single, 0, "one by one", None),
        # The demo's PERSCOM changes read first (expect): reads go one by one.
        (
            "perscom",
            list(demo_plan(reads, ["perscom"])),
            reads,
            None,
            "reads first, batched writes, 2 in flight, 8/s",
            share,
        ),
    ]
    for system, changes, size, batch, mode, limits in rows:
        elapsed, requests, statuses = await measure(system, changes, size, batch, latency, limits)
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()))
        print(
            f"| {system} | {size:,} | {mode} | {requests:,} | {requests / size:.3f} "
            f"| {elapsed:.1f} s | {size / elapsed:,.0f} | {shown} |",
            flush=True,
        )


def run() -> None:
    parser = argparse.ArgumentParser(description="Batched against one-by-one requests.")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--perscom-single", type=int, default=1_000)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--reads", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.perscom_single, args.latency, args.reads))


if __name__ == "__main__":
    run()
