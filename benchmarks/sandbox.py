"""Throughput of the sandbox's fake servers: requests per second each one answers.

Each server runs alone in a child process (its own core); the load comes from this process
with plain aiohttp (64 concurrent requests over keep-alive connections). A bare aiohttp.web
handler that answers ``{}`` is measured the same way, as the ceiling of the stack.

Run: python -m benchmarks.sandbox [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from aiohttp import web

from benchmarks._harness import machine

Request = tuple[str, str, dict[str, str], bytes | None]

_WHAT = {
    "bare": "aiohttp.web handler answering {} (ceiling)",
    "perscom": "PATCH assignment record (validate, store)",
    "maxsight": "GET task",
    "kintone": "PUT record assignees",
    "superoffice": "PATCH JSON Patch, case-insensitive path",
    "findable": "POST delegate (creates a successor)",
    "helpdesk": "PATCH merge patch, If-Match: * (strong ETag)",
}


async def _bare(conn: Connection) -> None:
    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"{}", content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    conn.send({"url": f"http://127.0.0.1:{runner.addresses[0][1]}", "token": ""})
    await _until_stopped(conn)
    await runner.cleanup()


async def _until_stopped(conn: Connection) -> None:
    """Answer "cpu" with this process's CPU seconds so far, until "stop"."""
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, conn.recv)) != "stop":
        conn.send(time.process_time())


async def _fake(system: str, records: int, conn: Connection) -> None:
    from patchassign.sandbox import Sandbox

    async with Sandbox(systems=[system], demo=records) as sb:
        conn.send(sb.describe()[system])
        await _until_stopped(conn)


def _serve(system: str, records: int, conn: Connection) -> None:
    asyncio.run(_bare(conn) if system == "bare" else _fake(system, records, conn))


def _requests(system: str, url: str, token: str, n: int) -> Callable[[int], Request]:
    json_h = {"Content-Type": "application/json"}
    if system == "perscom":
        h = {**json_h, "Authorization": f"Bearer {token}"}
        return lambda i: (
            "PATCH",
            f"{url}/v2/assignment-records/{i % n + 1}",
            h,
            b'{"user_id": %d}' % (i % 999 + 1),  # users 1..999 exist
        )
    if system == "maxsight":
        h = {"apikey": token}
        return lambda i: ("GET", f"{url}/v5/tasks/task-{i % n + 1:06d}", h, None)
    if system == "kintone":
        h = {**json_h, "X-Cybozu-API-Token": token}
        return lambda i: (
            "PUT",
            f"{url}/k/v1/record/assignees.json",
            h,
            b'{"app": 1, "id": %d, "assignees": ["eve"]}' % (i % n + 1),
        )
    if system == "superoffice":
        h = {**json_h, "Authorization": f"Bearer {token}"}
        return lambda i: (
            "PATCH",
            f"{url}/api/v1/ProjectMember/{i % n + 1}",
            h,
            b'[{"op": "replace", "path": "comment", "value": "c%d"}]' % i,
        )
    if system == "findable":  # each assignment can be delegated once: one record per request
        h = {**json_h, "Authorization": f"Bearer {token}"}
        return lambda i: (
            "POST",
            f"{url}/assignments/asg-{i + 1:06d}/delegate",
            h,
            b'{"toUpn": "eve@example.com"}',
        )
    if system == "helpdesk":  # `If-Match: *`: any current version (the tag changes per write)
        h = {
            "Content-Type": "application/merge-patch+json",
            "Authorization": f"Bearer {token}",
            "If-Match": "*",
        }
        return lambda i: (
            "PATCH",
            f"{url}/api/tickets/HD-{i % n + 1:06d}",
            h,
            b'{"assignee": "eve", "notes": "n%d"}' % i,
        )
    return lambda i: ("PATCH", f"{url}/x/{i}", json_h, b'{"user_id": 1}')


async def _load(
    make: Callable[[int], Request], total: int, concurrency: int, cpu: Callable[[], float]
) -> tuple[float, float, Counter[int]]:
    """Warm up with ``total`` requests, then time ``total`` more (request numbers go on).

    Returns requests per second, the server's CPU seconds per request, and the statuses.
    """
    statuses: Counter[int] = Counter()
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def phase(first: int) -> float:
            numbers = iter(range(first, first + total))

            async def worker() -> None:
                for i in numbers:
                    method, url, headers, body = make(i)
                    async with session.request(method, url, headers=headers, data=body) as r:
                        await r.read()
                        statuses[r.status] += 1

            t = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return total / (time.perf_counter() - t)

        await phase(0)
        statuses.clear()
        before = cpu()
        rate = await phase(total)
        return rate, (cpu() - before) / total, statuses


def measure(system: str, total: int, concurrency: int) -> tuple[float, float, Counter[int]]:
    """Requests/s of one server in a child process, its CPU s/request, and the statuses."""
    records = 2 * total if system == "findable" else 1000  # a delegate needs a fresh record
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(system, records, child))
    proc.start()
    try:
        info: dict[str, Any] = parent.recv()
        token = info["app_tokens"]["1"] if system == "kintone" else info["token"]
        make = _requests(system, info["url"], token, records)

        def cpu() -> float:
            parent.send("cpu")
            return float(parent.recv())

        return asyncio.run(_load(make, total, concurrency, cpu))
    finally:
        parent.send("stop")
        proc.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description="Requests per second of the sandbox servers.")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(machine())
    print(
        f"\n{args.requests:,} requests per row after a warm-up of the same size, "
        f"concurrency {args.concurrency}\n"
    )
    print(
        "| server | endpoint | requests/s (load-bound) | server CPU per request "
        "| server capacity (1 core) | statuses |"
    )
    print("|---|---|---|---|---|---|")
    for system in _WHAT:
        rate, cpu, statuses = measure(system, args.requests, args.concurrency)
        shown = ", ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items()))
        print(
            f"| {system} | {_WHAT[system]} | {rate:,.0f} | {cpu * 1e6:.0f} µs "
            f"| {1 / cpu:,.0f}/s | {shown} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
