"""Lanes: one slow, limited or broken system against healthy ones, side by side in one run.

Every scenario runs the real dispatcher (default transport, default RetryPolicy unless
said) against the sandbox's fakes on 127.0.0.1, and is compared with the same healthy
systems run without the troubled one (the baseline, measured in the same process run):

* mixed: a third of the changes for a system limited to ~5% of the others' rate;
* wrong credentials: requests that reach the system, and the healthy systems' outcome;
* redirected: a system whose URL redirects every request (a sign-on page in the way):
  requests that reach it;
* unreachable: a system at a closed port, default outage budget: when every change
  has its outcome;
* 429 storm (60% of answers), and Retry-After: 3600 on every answer;
* every write answered 500: writes per change against ``attempts``.

Run: python -m benchmarks.lanes [--n 1000] [--quick]   (--quick: outage budget 5 s)
     python -m benchmarks.lanes --n 300 --rate-limits 20,50,200   (a system alone
     against its own rate limit: how close the lane's learned rate gets; then against
     429s at random on 30% of its answers, --random-429s)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from benchmarks._harness import machine
from patchassign import Dispatcher, Limits, RetryPolicy
from patchassign.sandbox import Sandbox, demo_plan
from patchassign.systems import MaxsightAdapter, SuperOfficeAdapter

if TYPE_CHECKING:
    from patchassign.changes import Change

HEALTHY = ("kintone", "perscom")


async def timed(
    adapters: dict[str, Any],
    plan: Iterable[Change],
    *,
    limits: dict[str, Limits] | None = None,
    retry: RetryPolicy | None = None,
    until_healthy: int | None = None,
) -> tuple[dict[str, float], Counter[tuple[str, str]], float]:
    """Per system: seconds until its last result; statuses; total seconds.

    ``until_healthy``: stop the run once each healthy system has this many results (the
    troubled system's changes still waiting are then cancelled, not counted).
    """
    last: dict[str, float] = {}
    by: Counter[tuple[str, str]] = Counter()
    t0 = time.perf_counter()
    # The sandbox has no per-minute limit: lift PERSCOM's documented 1,000 a minute.
    limits = {"perscom": Limits(concurrency=32), **(limits or {})}
    limits = {system: lim for system, lim in limits.items() if system in adapters}
    dispatcher = Dispatcher(adapters, limits=limits, retry=retry, concurrency=64)
    async with dispatcher as d, d.run(plan) as run:
        async for r in run:
            last[r.system] = time.perf_counter() - t0
            by[r.system, r.status] += 1
            if until_healthy and all(
                sum(n for (sy, _), n in by.items() if sy == s) >= until_healthy for s in HEALTHY
            ):
                break
    return last, by, time.perf_counter() - t0


def healthy_done(last: dict[str, float]) -> float:
    return max(last[s] for s in HEALTHY)


def statuses(by: Counter[tuple[str, str]], system: str) -> str:
    return ", ".join(f"{st} {n:,}" for (sy, st), n in sorted(by.items()) if sy == system)


@contextlib.asynccontextmanager
async def redirecting() -> AsyncIterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1 that redirects every request to a sign-on page: its URL,
    and the requests it got."""
    reached: list[str] = []

    async def sign_on(request: web.Request) -> web.Response:
        reached.append(request.method)
        raise web.HTTPFound("https://sso.example.com/login?return=%2Fapi")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", sign_on)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", reached
    finally:
        await runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(n: int, quick: bool) -> None:
    rows: list[str] = []
    systems = [*HEALTHY, "superoffice", "maxsight"]

    def sandbox(faults: dict[str, Any] | None = None) -> Sandbox:
        return Sandbox(demo=n, systems=systems, faults=faults)

    def row(label: str, last: dict[str, float], alone: float, troubled: str) -> None:
        done = healthy_done(last)
        rows.append(f"| {label} | {done:.2f} s | {done / alone:.2f}x | {troubled} |")
        print(rows[-1], file=sys.stderr, flush=True)

    # -- baseline: the healthy systems alone ---------------------------------------------
    async with sandbox() as sb:
        adapters = sb.adapters()
        last, by, _ = await timed({s: adapters[s] for s in HEALTHY}, demo_plan(n, HEALTHY))
    alone = healthy_done(last)
    rate = 2 * n / alone
    row(
        f"baseline: {' and '.join(HEALTHY)} alone ({rate:,.0f} changes/s)",
        last,
        alone,
        f"kintone: {statuses(by, 'kintone')}; perscom: {statuses(by, 'perscom')}",
    )

    # -- mixed: superoffice limited to ~5% of the others' rate -----------------------------
    async with sandbox() as sb:
        adapters = sb.adapters()
        slow = max(1.0, rate / 2 * 0.05)
        limits = {"superoffice": Limits(concurrency=2, rate=slow)}
        last, by, _ = await timed(
            {s: adapters[s] for s in [*HEALTHY, "superoffice"]},
            demo_plan(n, [*HEALTHY, "superoffice"]),
            limits=limits,
        )
    row(
        f"mixed: + {n:,} superoffice limited to {slow:.0f}/s (5%), 2 in flight",
        last,
        alone,
        f"superoffice: {statuses(by, 'superoffice')} in {last['superoffice']:.1f} s",
    )

    # -- wrong credentials -----------------------------------------------------------------
    async with sandbox() as sb:
        adapters = sb.adapters()
        adapters["maxsight"] = MaxsightAdapter(sb.maxsight.url, "wrong-key", assigned_by="admin")
        last, by, _ = await timed(
            {s: adapters[s] for s in [*HEALTHY, "maxsight"]},
            demo_plan(n, [*HEALTHY, "maxsight"]),
        )
        reached = sb.maxsight.stats.count()
    row(
        f"wrong API key on maxsight ({n:,} changes)",
        last,
        alone,
        f"maxsight: **{reached} requests reached it**; {statuses(by, 'maxsight')}",
    )

    # -- redirected: a URL that is not the API's -------------------------------------------
    async with sandbox() as sb, redirecting() as (url, redirected):
        adapters = sb.adapters()
        adapters["maxsight"] = MaxsightAdapter(url, sb.maxsight.token, assigned_by="admin")
        last, by, _ = await timed(
            {s: adapters[s] for s in [*HEALTHY, "maxsight"]},
            demo_plan(n, [*HEALTHY, "maxsight"]),
        )
    row(
        f"maxsight behind a sign-on page (every answer a 301; {n:,} changes)",
        last,
        alone,
        f"maxsight: **{len(redirected)} requests reached it**; {statuses(by, 'maxsight')}",
    )

    # -- unreachable -----------------------------------------------------------------------
    async with sandbox() as sb:
        adapters = sb.adapters()
        adapters["superoffice"] = SuperOfficeAdapter(
            f"http://127.0.0.1:{closed_port()}", token=sb.superoffice.token
        )
        policy = RetryPolicy(outage=5.0) if quick else RetryPolicy()
        last, by, total = await timed(
            {s: adapters[s] for s in [*HEALTHY, "superoffice"]},
            demo_plan(n, [*HEALTHY, "superoffice"]),
            retry=policy,
        )
    row(
        f"superoffice unreachable (closed port), outage budget {policy.outage:g} s",
        last,
        alone,
        f"**every outcome in {total:.1f} s**; superoffice: {statuses(by, 'superoffice')}",
    )

    # -- 429 storm and Retry-After: 3600 ---------------------------------------------------
    for label, faults in (
        (
            "429 storm: maxsight's own rate limit at 50 requests/s (burst 10)",
            {"rate_limit": 50.0},
        ),
        (
            "random 429s on 60% of maxsight's answers (Retry-After 1, regardless of load)",
            {"throttle": 0.6},
        ),
        ("Retry-After: 3600 on every maxsight answer", {"throttle": 1.0, "retry_after": 3600}),
    ):
        async with sandbox({"maxsight": faults}) as sb:
            adapters = sb.adapters()
            last, by, _ = await timed(
                {s: adapters[s] for s in [*HEALTHY, "maxsight"]},
                demo_plan(n, [*HEALTHY, "maxsight"]),
                until_healthy=n,
            )
            throttled = sb.maxsight.stats.count(status=429)
            answered = sb.maxsight.stats.count()
        row(
            label,
            last,
            alone,
            f"maxsight when they were done: {statuses(by, 'maxsight') or 'none yet'}; "
            f"{throttled:,} of {answered:,} answers were 429",
        )

    # -- every write answered 500 ----------------------------------------------------------
    m = min(n, 200)
    policy = RetryPolicy(base=0.01, cap=0.1)
    async with sandbox({"maxsight": {"server_error": 1.0, "writes_only": True}}) as sb:
        adapters = sb.adapters()
        last, by, _ = await timed(
            {"maxsight": adapters["maxsight"]}, demo_plan(m, ["maxsight"]), retry=policy
        )
        writes = sb.maxsight.stats.count(endpoint="update")
    rows.append(
        f"| every maxsight write answered 500 ({m} changes, attempts {policy.attempts}) | | | "
        f"**{writes:,} writes = {writes / m:.1f} per change**; {statuses(by, 'maxsight')} |"
    )

    print(f"\n{machine()}\n")
    print(f"{n:,} changes per system; default RetryPolicy unless said; concurrency 64\n")
    print("| scenario | healthy systems done | vs alone | the troubled system |")
    print("|---|---|---|---|")
    for line in rows:
        print(line, flush=True)


async def rate_limits(
    n: int, rates: Iterable[float], random_share: float, burst: int | None = None
) -> None:
    """A system alone against its own rate limit (the fake's token bucket, ``burst``
    requests: 10 unless given, or ``0`` for a second's worth of the rate; ``Retry-After:
    1``): how close the lane gets to the rate the server allows. Then the same system
    answering 429 at random (``random_share`` of its answers, whatever the rate): a pace
    learned from those would only spiral down."""
    from patchassign.sandbox import Faults

    print(f"\n{machine()}\n")
    bucket = "a second's worth" if burst == 0 else f"{10 if burst is None else burst} requests"
    print(
        f"{n:,} Maxsight changes (a read and a write each), default RetryPolicy, "
        f"the server's bucket {bucket}\n"
    )
    print("| server's limit | time | 429s | slowdowns | answers/s that got through | vs limit |")
    print("|---|---|---|---|---|---|")

    def size(rate: float) -> int:
        return 10 if burst is None else burst or max(1, round(rate))

    cases: list[tuple[str, float | None, Faults]] = [
        (f"{rate:g}/s", rate, Faults(rate_limit=rate, burst=size(rate))) for rate in rates
    ]
    if random_share:
        faults = Faults(throttle=random_share, retry_after=1, seed=3)
        cases.append((f"none: 429s at random on {random_share:.0%}", None, faults))
    for label, rate, faults in cases:
        async with Sandbox(demo=n, systems=["maxsight"], faults={"maxsight": faults}) as sb:
            t0 = time.monotonic()
            async with Dispatcher(sb.adapters()) as d:
                results = await d.send_all(demo_plan(n, ["maxsight"]))
                slowdowns = d.slowdowns()["maxsight"]
            elapsed = time.monotonic() - t0
            stats = sb.maxsight.stats
        assert all(r.status == "applied" for r in results)
        ok = (stats.count() - stats.count(status=429)) / elapsed
        print(
            f"| {label} | {elapsed:.1f} s | {stats.count(status=429):,} | {slowdowns} "
            f"| {ok:.1f} | {f'{ok / rate:.0%}' if rate else '-'} |",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="changes per system")
    parser.add_argument("--quick", action="store_true", help="outage budget 5 s, not 60 s")
    parser.add_argument(
        "--rate-limits",
        default="",
        help="only a system alone against its own rate limits, e.g. 20,50,200 (--n 300)",
    )
    parser.add_argument(
        "--random-429s",
        type=float,
        default=0.3,
        help="with --rate-limits: then 429s at random on this share of the answers (0: none)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        help="with --rate-limits: the server's bucket in requests (10; 0: a second's worth)",
    )
    args = parser.parse_args()
    if args.burst is not None and args.burst < 0:
        parser.error("--burst must be 0 (a second's worth) or more requests")
    if args.rate_limits:
        rates = [float(r) for r in args.rate_limits.split(",")]
        asyncio.run(rate_limits(args.n, rates, args.random_429s, args.burst))
    else:
        asyncio.run(main(args.n, args.quick))
