"""The dispatcher against a plain aiohttp loop, and its memory as the input grows.

Throughput: one sandbox server (PERSCOM, blind ``PATCH`` assignments: one request per
change) runs in a child process on its own core; this process sends the same requests at
the same concurrency, over the same kind of session, first with a plain aiohttp loop (N
workers pulling prebuilt requests), then through ``Dispatcher.run``. Rounds alternate the
two so that drift on a noisy machine hits both; the table gives the median of the rounds.

Memory: a fresh process runs ``Dispatcher.run`` over a lazily generated input of 10,000 to
1,000,000 changes and reports its peak resident memory (``ru_maxrss``).

Breakdown (``--breakdown``): the same rounds through steps from the plain loop to the
dispatcher (our transport through ``session.request``, then through its lean send; the
adapter classifying answers; a ``Flow`` per change), to show where the difference goes.

Instructions (``--instructions``): the client process runs under valgrind's callgrind,
which counts the machine instructions it executes; a run of N changes less a run of none
gives the instructions per change. Unlike time, the count does not move with what the
machine's neighbours do (it moves by a percent or two with how answers batch up in the
event loop), so it compares the clients on a noisy machine; it does not see caches or
the server's pace. With ``--breakdown``, every step of the breakdown is counted.

Run: python -m benchmarks.dispatch [--changes N] [--rounds R] [--concurrency C]
                                   [--memory 10000,100000,1000000] [--uvloop]
                                   [--overhead | --breakdown] [--instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import yarl

from benchmarks._harness import machine
from benchmarks.sandbox import _serve
from patchassign.changes import Assign, Change
from patchassign.dispatch import Dispatcher, Limits
from patchassign.flow import Done, Flow, RetryPolicy, Send
from patchassign.systems import Applied, HttpRequest, PerscomAdapter
from patchassign.transports import AiohttpTransport

RECORDS = 10_000
UVLOOP = "--uvloop" in sys.argv


def _loop_run(coro: Any) -> Any:
    if UVLOOP:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def changes(n: int, first: int = 0) -> Iterator[Change]:
    """``n`` blind PERSCOM reassignments (no read needed), cycling over the records."""
    for i in range(first, first + n):
        yield Assign(system="perscom", record=i % RECORDS + 1, to=str(200 + i % 7), id=str(i))


def _limits(concurrency: int) -> dict[str, Limits]:
    # One request per change, as the plain loop sends (batches have their own benchmark).
    return {"perscom": Limits(concurrency=concurrency, batch=0)}


async def plain(adapter: PerscomAdapter, n: int, first: int, concurrency: int) -> float:
    """Requests/s of a plain aiohttp loop: each worker builds the change's request with
    the adapter (the same bytes the dispatcher sends) and sends it."""
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        it = changes(n, first)

        async def worker() -> None:
            for change in it:
                adapter.check(change)
                req = adapter.prepare(change, None)
                assert isinstance(req, HttpRequest)
                url = yarl.URL(req.url, encoded=True)
                async with session.request(
                    req.method, url, headers=req.headers, data=req.body
                ) as r:
                    await r.read()
                    statuses[r.status] += 1

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rate = n / (time.perf_counter() - t)
    assert statuses == {200: n}, statuses
    return rate


async def dispatched(adapter: PerscomAdapter, n: int, first: int, concurrency: int) -> float:
    """Changes/s through ``Dispatcher.run`` (one request each)."""
    ok = 0
    async with Dispatcher([adapter], concurrency=concurrency, limits=_limits(concurrency)) as d:
        t = time.perf_counter()
        async for r in d.run(changes(n, first)):
            ok += r.status == "applied"
        rate = n / (time.perf_counter() - t)
    assert ok == n, ok
    return rate


async def steps(adapter: PerscomAdapter, n: int, first: int, concurrency: int, upto: str) -> float:
    """Changes/s of a plain loop over ``AiohttpTransport`` doing part of what the dispatcher
    does, for the breakdown: ``public`` (check, prepare, send through ``session.request``),
    ``transport`` (the same through the transport's lean send, as the dispatcher sends),
    ``classify`` (and the adapter's ``outcome``), ``flow`` (each change driven by a
    ``Flow`` instead)."""
    loop = asyncio.get_running_loop()
    policy = RetryPolicy()
    rng = random.Random(1)
    ok = 0
    async with AiohttpTransport(limit=concurrency, lean=upto != "public") as transport:
        it = changes(n, first)

        async def worker() -> None:
            nonlocal ok
            for change in it:
                if upto == "flow":
                    flow = Flow(adapter, change, policy=policy, rng=rng, now=loop.time())
                    step = flow.start(loop.time())
                    assert isinstance(step, Send)
                    response = await transport.send(step.request, timeout=step.timeout)
                    done = flow.on_response(response, loop.time())
                    assert isinstance(done, Done)
                    ok += done.result.status == "applied"
                    continue
                adapter.check(change)
                req = adapter.prepare(change, None)
                assert isinstance(req, HttpRequest)
                response = await transport.send(req, timeout=30.0)
                if upto == "classify":
                    ok += isinstance(adapter.outcome(change, response), Applied)
                else:
                    ok += response.status == 200

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rate = n / (time.perf_counter() - t)
    assert ok == n, ok
    return rate


def _clients(adapter: PerscomAdapter, concurrency: int) -> dict[str, Any]:
    """The clients of the breakdown, by name: each takes (first change, changes)."""
    return {
        "plain aiohttp loop": lambda k, n: plain(adapter, n, k, concurrency),
        "loop over AiohttpTransport(lean=False)": lambda k, n: steps(
            adapter, n, k, concurrency, "public"
        ),
        "loop over AiohttpTransport (its lean send)": lambda k, n: steps(
            adapter, n, k, concurrency, "transport"
        ),
        "+ the adapter classifies each answer": lambda k, n: steps(
            adapter, n, k, concurrency, "classify"
        ),
        "+ a Flow drives each change": lambda k, n: steps(adapter, n, k, concurrency, "flow"),
        "Dispatcher.run (+ lanes, limits, record order, results)": lambda k, n: dispatched(
            adapter, n, k, concurrency
        ),
    }


_PLAIN, _DISPATCHER = (
    "plain aiohttp loop",
    "Dispatcher.run (+ lanes, limits, record order, results)",
)


def _myself(*args: str, concurrency: int) -> list[str]:
    """The command that runs this module again in a child process, on the same loop."""
    return [
        sys.executable,
        "-m",
        "benchmarks.dispatch",
        *args,
        "--concurrency",
        str(concurrency),
        *(["--uvloop"] if UVLOOP else []),
    ]


def _count_child(url: str, token: str, client: str, n: int, concurrency: int) -> None:
    """One client: 500 changes to warm up, then ``n`` (run under callgrind)."""
    adapter = PerscomAdapter(url, token, notifications=False)
    run = _clients(adapter, concurrency)[client]

    async def go() -> None:
        await run(0, 500)
        if n:
            await run(1_000, n)

    _loop_run(go())


def instructions(
    url: str, token: str, n: int, rounds: int, concurrency: int, every_step: bool
) -> None:
    """Machine instructions the client process executes per change, under callgrind."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (Debian: apt install valgrind)")
    names = list(_clients(PerscomAdapter(url, token), concurrency))
    if not every_step:
        names = [_PLAIN, _DISPATCHER]

    def count(client: str, k: int) -> int:
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                *_myself("--count-child", url, token, client, str(k), concurrency=concurrency),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in proc.stderr.splitlines():
            if "Collected :" in line:
                return int(line.rsplit(":", 1)[1].strip().replace(",", ""))
        raise RuntimeError(f"no instruction count from callgrind: {proc.stderr[-500:]}")

    per: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            per[name].append((count(name, n) - count(name, 0)) / n)
    base = statistics.median(per[_PLAIN])
    print(
        f"\n### Instructions per change (callgrind): {n:,} changes less none, "
        f"{rounds} rounds, concurrency {concurrency}\n"
    )
    print("| client | instructions per change (median) | rounds | plain loop's share |")
    print("|---|---|---|---|")
    for name, counts in per.items():
        m = statistics.median(counts)
        print(
            f"| {name} | {m / 1000:,.1f}k | {', '.join(f'{c / 1000:,.1f}k' for c in counts)} "
            f"| {base / m:.1%} |",
            flush=True,
        )


def breakdown(url: str, token: str, n: int, rounds: int, concurrency: int) -> None:
    """Where the dispatcher's time goes: from the plain loop to ``Dispatcher.run`` in
    steps, each measured in the same rounds."""
    adapter = PerscomAdapter(url, token, notifications=False)
    rows = _clients(adapter, concurrency)

    async def go() -> dict[str, list[float]]:
        got: dict[str, list[float]] = {name: [] for name in rows}
        for run in rows.values():
            await run(0, n)  # warm up every path
        for r in range(rounds):
            for i, (name, run) in enumerate(rows.items()):
                got[name].append(await run((r * len(rows) + i + 1) * n, n))
        return got

    got = _loop_run(go())
    base = statistics.median(got[_PLAIN])
    print(f"\n### Breakdown: {n:,} changes per step, {rounds} rounds, concurrency {concurrency}\n")
    print("| step | changes/s (median) | vs plain loop |\n|---|---|---|")
    for name, rates in got.items():
        m = statistics.median(rates)
        print(f"| {name} | {m:,.0f} | {m / base:.1%} |", flush=True)


def throughput(url: str, token: str, n: int, rounds: int, concurrency: int) -> None:
    adapter = PerscomAdapter(url, token, notifications=False)

    cpu: dict[str, list[float]] = {"plain": [], "dispatcher": []}

    async def timed(name: str, run: Any) -> float:
        # The client's CPU time per change (user + system; the server is another
        # process): when it matches the wall time per change, the client is the limit.
        t = time.process_time()
        rate: float = await run
        cpu[name].append((time.process_time() - t) / n * 1e6)
        return rate

    async def go() -> tuple[list[float], list[float]]:
        await plain(adapter, n // 2, 0, concurrency)  # warm up both paths
        await dispatched(adapter, n // 2, 0, concurrency)
        p: list[float] = []
        d: list[float] = []
        for r in range(rounds):
            p.append(await timed("plain", plain(adapter, n, (2 * r + 1) * n, concurrency)))
            d.append(
                await timed("dispatcher", dispatched(adapter, n, (2 * r + 2) * n, concurrency))
            )
        return p, d

    p, d = _loop_run(go())
    mp_, md = statistics.median(p), statistics.median(d)
    cp, cd = statistics.median(cpu["plain"]), statistics.median(cpu["dispatcher"])
    print(
        f"\n### Throughput: {n:,} changes per round, {rounds} rounds, concurrency {concurrency}\n"
    )
    print("| client | requests/s (median) | rounds | vs plain loop | client CPU per change |")
    print("|---|---|---|---|---|")
    print(
        f"| plain aiohttp loop | {mp_:,.0f} | {', '.join(f'{x:,.0f}' for x in p)} | 100% "
        f"| {cp:.1f} µs |"
    )
    print(
        f"| patchassign Dispatcher.run | {md:,.0f} | {', '.join(f'{x:,.0f}' for x in d)} "
        f"| {md / mp_:.0%} | {cd:.1f} µs ({cp / cd:.0%}) |",
        flush=True,
    )


def _memory_child(url: str, token: str, n: int, concurrency: int) -> None:
    """Run ``n`` changes through the dispatcher; print peak RSS and time as JSON."""
    adapter = PerscomAdapter(url, token, notifications=False)

    async def go() -> dict[str, Any]:
        counts: Counter[str] = Counter()
        async with Dispatcher([adapter], concurrency=concurrency, limits=_limits(concurrency)) as d:
            t = time.perf_counter()
            async for r in d.run(changes(n)):
                counts[r.status] += 1
            elapsed = time.perf_counter() - t
        return {"n": n, "elapsed": elapsed, "statuses": dict(counts)}

    out = _loop_run(go())
    out["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def memory(url: str, token: str, sizes: list[int], concurrency: int) -> None:
    print("\n### Peak memory of the client process as the input grows\n")
    print("| changes | peak RSS | time | changes/s | statuses |")
    print("|---|---|---|---|---|")
    for n in sizes:
        proc = subprocess.run(
            _myself("--child", url, token, str(n), concurrency=concurrency),
            capture_output=True,
            text=True,
            check=True,
        )
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"| {n:,} | {got['maxrss_mib']:,.1f} MiB | {got['elapsed']:,.1f} s "
            f"| {n / got['elapsed']:,.0f} | {got['statuses']} |",
            flush=True,
        )


def overhead(n: int = 100_000) -> None:
    """The dispatcher's own cost per change, without a network: the same adapter calls
    and a ``MockTransport`` answering at once, against a bare loop doing just those."""
    from patchassign import HttpResponse, MockTransport

    ok = HttpResponse.from_json(200, {"data": {"id": 1, "user_id": 7, "updated_at": "v2"}})
    adapter = PerscomAdapter("http://127.0.0.1:1", "tok", notifications=False)

    async def bare() -> float:
        transport = MockTransport(lambda r: ok, record=False)
        it = changes(n)

        async def worker() -> None:
            for change in it:
                adapter.check(change)
                req = adapter.prepare(change, None)
                assert isinstance(req, HttpRequest)
                adapter.outcome(change, await transport.send(req, timeout=30))

        t = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(64)))
        return time.perf_counter() - t

    async def dispatcher() -> float:
        transport = MockTransport(lambda r: ok, record=False)
        async with Dispatcher([adapter], transport=transport, limits=_limits(64)) as d:
            t = time.perf_counter()
            async for r in d.run(changes(n)):
                assert r.status == "applied"
            return time.perf_counter() - t

    b = min(_loop_run(bare()) for _ in range(3))
    d = min(_loop_run(dispatcher()) for _ in range(3))
    print(f"\n### Own cost per change, no network ({n:,} changes, best of 3)\n")
    print("| client | µs per change |\n|---|---|")
    print(f"| bare loop: adapter check/prepare/outcome + MockTransport | {b / n * 1e6:.1f} |")
    print(f"| Dispatcher.run on MockTransport | {d / n * 1e6:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Dispatcher throughput and memory.")
    parser.add_argument("--changes", type=int, help="per round (20,000; 2,000 counted)")
    parser.add_argument("--rounds", type=int, help="5; 3 counted")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--memory", default="10000,100000,1000000")
    parser.add_argument("--uvloop", action="store_true", help="both clients on uvloop")
    parser.add_argument("--overhead", action="store_true", help="only the no-network cost")
    parser.add_argument(
        "--breakdown", action="store_true", help="only the steps from plain loop to dispatcher"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="instructions per change under callgrind (valgrind), not time",
    )
    parser.add_argument("--child", nargs=3, metavar=("URL", "TOKEN", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--count-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.changes is None:
        args.changes = 2_000 if args.instructions else 20_000
    if args.rounds is None:
        args.rounds = 3 if args.instructions else 5
    if args.child:
        url, token, n = args.child
        _memory_child(url, token, int(n), args.concurrency)
        return
    if args.count_child:
        url, token, client, n = args.count_child
        _count_child(url, token, client, int(n), args.concurrency)
        return
    print(machine())
    if args.overhead:
        overhead()
        return
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=("perscom", RECORDS, child))
    proc.start()
    try:
        info: dict[str, Any] = parent.recv()
        print(f"server: sandbox PERSCOM fake in a child process, {RECORDS:,} records")
        if args.instructions:
            instructions(
                info["url"],
                info["token"],
                args.changes,
                args.rounds,
                args.concurrency,
                args.breakdown,
            )
            return
        if args.breakdown:
            breakdown(info["url"], info["token"], args.changes, args.rounds, args.concurrency)
            return
        throughput(info["url"], info["token"], args.changes, args.rounds, args.concurrency)
        sizes = [int(s) for s in args.memory.split(",") if s]
        if sizes:
            memory(info["url"], info["token"], sizes, args.concurrency)
    finally:
        parent.send("stop")
        proc.join(10)


if __name__ == "__main__":
    main()
