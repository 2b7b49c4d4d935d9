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
    system: str, changes: list[Change], n: int, batch: int | None, latency: float
) -> tuple[float, int, Counter[str]]:
    """Seconds, requests the server answered, and the results' statuses."""
    async with Sandbox(demo=n, systems=[system], faults={"latency": latency}) as sb:
        adapter = sb.adapters()[system]
        own = adapter.limits
        limits = {system: Limits(concurrency=own.concurrency, rate=own.rate, burst=own.burst, batch=batch)}  # fmt: skip
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


async def main(n: int, single: int, latency: float) -> None:
    print(machine())
    print(f"\nSandbox latency {latency * 1000:.0f} ms per answer.\n")
    print("| system | changes | mode | requests | requests per change | time | changes/s | statuses |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---|")
    rows: list[tuple[str, list[Change], int, int | None, str]] = [
        ("kintone", list(demo_plan(n, ["kintone"])), n, None, "batched"),
        ("kintone", list(demo_plan(n, ["kintone"])), n, 0, "one by one"),
        ("perscom", perscom_plan(n), n, None, "batched"),
        ("perscom", perscom_plan(single), single, 0, "one by one"),
    ]
    for system, changes, size, batch, mode in rows:
        elapsed, requests, statuses = await measure(system, changes, size, batch, latency)
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
    args = parser.parse_args()
    asyncio.run(main(args.n, args.perscom_single, args.latency))


if __name__ == "__main__":
    run()
