"""Workers as users run them: ``patchassign run`` processes sharing one plan in a real
PostgreSQL, against the sandbox (in this process) with faults on."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest_asyncio

from patchassign.cli import _demo_config
from patchassign.journal import PgJournal
from patchassign.sandbox import SYSTEMS, Faults, Sandbox, demo_mismatches, demo_plan
from tests.bulk.test_run import Setup, make, patchassign, small

__all__ = ["small"]  # the fixture

LIMIT = 3  # per system, for all workers together
WORKER_TIMEOUT = 180  # seconds a worker may take
LIMITS = [a for s in SYSTEMS for a in ("--limit", f"{s}={LIMIT}")]


@pytest_asyncio.fixture
async def slow(tmp_path: Path) -> AsyncIterator[Setup]:
    # Each request takes 10-30 ms, so that requests overlap and the limits matter.
    async for s in make(tmp_path, 150, Faults(latency=0.01, jitter=0.02, seed=7)):
        yield s


async def worker(setup: Setup, url: str, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "patchassign", "run", *extra, "-c", str(setup.config),
        "--journal", url, "--progress", "none", "--lease", "2", *LIMITS,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **setup.env},
    )  # fmt: skip


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """The worker's exit status and output; a worker still running after 180 s is
    interrupted (its report says what it was waiting for), then killed, and the test fails
    with what it wrote."""
    chunks: list[bytes] = []

    async def drain(stream: asyncio.StreamReader | None) -> bytes:
        data = b""
        while stream is not None and (block := await stream.read(1 << 16)):
            data += block
        return data

    readers = [asyncio.create_task(drain(proc.stdout)), asyncio.create_task(drain(proc.stderr))]
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), WORKER_TIMEOUT)
    except TimeoutError:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        chunks = await asyncio.gather(*readers)
        text = b"".join(chunks).decode(errors="replace")
        raise AssertionError(
            f"a worker ran past {WORKER_TIMEOUT} s; what it wrote:\n{text[-6000:]}"
        ) from None
    chunks = await asyncio.gather(*readers)
    assert proc.returncode is not None
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def check_outcome(setup: Setup, url: str) -> Counter[int]:
    """Every change applied once, the servers as the plan says, the limits held."""
    with PgJournal(url) as j:
        counts = j.counts()
        rows = list(j.rows())
    assert {status for (_, status) in counts} <= {"applied", "recovered"}, counts
    assert len(rows) == len(SYSTEMS) * setup.n
    assert not demo_mismatches(setup.sb, setup.n)
    assert max(n for s in setup.sb for n in s.stats.writes.values()) == 1  # nothing twice
    for server in setup.sb:
        assert server.stats.peak <= LIMIT, (type(server).__name__, server.stats.peak)
    return Counter(r.run for r in rows if r.run is not None)


async def test_three_workers_share_one_plan_and_its_limits(slow: Setup, pg_url: str) -> None:
    # The servers answer slowly until every worker has joined: on a loaded machine the
    # first worker could otherwise finish the plan before the others have started.
    quick = {server: server.faults for server in slow.sb}
    for server, faults in quick.items():
        server.faults = msgspec.structs.replace(faults, latency=0.3)
    first = await worker(slow, pg_url, str(slow.plan))
    await asyncio.sleep(0.3)
    others = [await worker(slow, pg_url, "--join") for _ in range(2)]
    again = await worker(slow, pg_url, str(slow.plan))  # a second loader joins too
    with psycopg.connect(pg_url, autocommit=True) as admin:
        for _ in range(600):
            if joined(admin) >= 4 or any(p.returncode is not None for p in [first, *others]):
                break
            await asyncio.sleep(0.1)
    for server, faults in quick.items():
        server.faults = faults
    for proc in [first, *others, again]:
        code, text = await finish(proc)
        assert code == 0, text
    by_worker = check_outcome(slow, pg_url)
    assert len(by_worker) >= 2, by_worker  # the work was shared


async def test_killed_workers_items_go_to_the_others(slow: Setup, pg_url: str) -> None:
    rng = random.Random(3)
    procs = [await worker(slow, pg_url, str(slow.plan))]
    await asyncio.sleep(0.5)
    procs += [await worker(slow, pg_url, "--join") for _ in range(2)]
    kills = 0
    while kills < 3:
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        live = [p for p in procs if p.returncode is None]
        if not live:
            break
        victim = rng.choice(live)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        kills += 1
        procs.append(await worker(slow, pg_url, "--join"))
    codes: list[Any] = []
    for proc in procs:
        code, text = await finish(proc)
        codes.append(code)
        assert code in (0, -signal.SIGKILL), text
    assert kills == 3
    assert codes.count(0) >= 1
    check_outcome(slow, pg_url)


def joined(admin: psycopg.Connection[Any]) -> int:
    """How many workers have joined the plan so far."""
    try:
        row = admin.execute("SELECT count(*) FROM patchassign.workers").fetchone()
    except psycopg.errors.UndefinedTable:  # the first is still making the journal
        return 0
    return 0 if row is None else int(row[0])


def applied(url: str) -> int:
    """Items with an outcome ``applied`` in the journal so far."""
    with psycopg.connect(url, autocommit=True) as c:
        if not joined(c):
            return 0
        row = c.execute("SELECT count(*) FROM patchassign.items WHERE status = 'applied'")
        return int((row.fetchone() or (0,))[0])


async def test_workers_ride_out_their_connections_cut(slow: Setup, pg_url: str) -> None:
    """The database cuts every connection of the workers, three times (a restart, a
    failover, a proxy): each worker connects again, journal and shared limits alike,
    and goes on. They stopped with "the journal cannot be used" (and the shared limits
    of a service replica sent nothing ever after)."""
    procs = [await worker(slow, pg_url, str(slow.plan))]
    await asyncio.sleep(0.5)
    procs += [await worker(slow, pg_url, "--join") for _ in range(2)]
    cuts = 0
    with psycopg.connect(pg_url, autocommit=True) as admin:
        async with asyncio.timeout(60):  # all three at work (one may be done by then)
            while joined(admin) < 3:
                await asyncio.sleep(0.05)
        while cuts < 3 and any(p.returncode is None for p in procs):
            await asyncio.sleep(0.4)
            (n,) = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            ).fetchone() or (0,)
            cuts += n > 0
    assert cuts == 3
    outs = [await finish(proc) for proc in procs]
    for code, text in outs:
        assert code == 0, text
    assert sum(text.count("connecting again") for _, text in outs) >= 3, outs
    check_outcome(slow, pg_url)


async def test_a_worker_whose_database_goes_away_stops_in_words_and_loses_nothing(
    slow: Setup, pg_url: str
) -> None:
    """The database refuses the worker for longer than it tries to connect again: it
    stops with the journal's error, whichever of its calls (outcomes written, a take, a
    heartbeat; all made off the event loop) meets it first. A worker started once the
    database is back finishes the plan, each change once."""
    db = pg_url.rsplit("/", 1)[1]
    proc = await worker(slow, pg_url, str(slow.plan))
    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        async with asyncio.timeout(60):  # at work: outcomes written
            while applied(pg_url) < 50:
                await asyncio.sleep(0.05)
        admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,)
        )
        code, text = await finish(proc)
        admin.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
    assert code != 0, text
    assert "the journal cannot be used" in text, text
    assert "Traceback" not in text, text
    assert text.count("connecting again") == 1, text  # the other calls fail at once
    code, text = await finish(await worker(slow, pg_url, "--join"))
    assert code == 0, text
    check_outcome(slow, pg_url)


async def test_report_status_leftovers_and_undo_on_postgresql(small: Setup, pg_url: str) -> None:
    code, out, err = await patchassign(
        small, "run", small.plan, "-c", small.config, "--journal", pg_url, "--progress", "none"
    )
    assert code == 0, out + err
    assert "every change applied" in out
    code, out, err = await patchassign(small, "status", pg_url, "--json")
    assert code == 0, err
    status = json.loads(out)
    assert {s["system"]: s["done"] for s in status["systems"]} == {
        s: {"applied": small.n} for s in SYSTEMS
    }
    assert [w["live"] for w in status["workers"]] == [False]
    code, out, err = await patchassign(small, "status", pg_url)
    assert "workers: 0 live, 1 in all" in out
    code, out, err = await patchassign(small, "leftovers", pg_url)
    assert (code, out) == (0, "")
    undo = small.dir / "undo.jsonl"
    code, _, err = await patchassign(small, "undo", pg_url, "-o", undo)
    assert code == 0, err
    undoable = (len(SYSTEMS) - 1) * small.n  # all but Findable's delegations
    assert len(undo.read_text().splitlines()) == undoable
    # the undo plan runs on another schema of the same database, and puts records back
    code, out, err = await patchassign(
        small, "run", undo, "-c", small.config, "--journal", pg_url + "?schema=undo"
    )
    assert code == 0, out + err
    assert len(demo_mismatches(small.sb, small.n)) >= (len(SYSTEMS) - 1) * small.n


async def test_workers_without_a_share_of_a_systems_slots_take_none_of_its_items(
    tmp_path: Path, pg_url: str
) -> None:
    """Three workers on a system limited to one request in flight. The two that joined
    had no share of its slot, and took items anyway: their changes waited for a slot
    that the first worker kept while it had work, and ended ``unsent`` at their
    deadline (2 s here, 300 s by default: a night run's limited system), for a resume.
    A worker without a share now takes nothing; every change is applied in this run."""
    n = 200
    async with Sandbox(demo=n, systems=["maxsight"], faults=Faults(latency=0.01)) as sb:
        config = tmp_path / "systems.toml"
        env = _demo_config(sb, config)
        config.write_text(config.read_text().replace("[retry]\n", "[retry]\ndeadline = 2\n"))
        plan = tmp_path / "plan.jsonl"
        plan.write_bytes(
            b"".join(msgspec.json.encode(c) + b"\n" for c in demo_plan(n, ["maxsight"]))
        )
        setup = Setup(sb, tmp_path, plan, config, env, n)

        async def start(*args: str) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "patchassign", "run", *args, "-c", str(config),
                "--journal", pg_url, "--progress", "none", "--lease", "2",
                "--limit", "maxsight=1",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **setup.env},
            )  # fmt: skip

        procs = [await start(str(plan))]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            async with asyncio.timeout(60):  # at work before the others join
                while applied(pg_url) < 5:
                    await asyncio.sleep(0.05)
            procs += [await start("--join") for _ in range(2)]
            async with asyncio.timeout(60):
                while joined(admin) < 3 and procs[0].returncode is None:
                    await asyncio.sleep(0.05)
        outs = [await finish(proc) for proc in procs]
        for code, text in outs:
            assert code == 0, text
        with PgJournal(pg_url) as j:
            assert j.counts() == {("maxsight", "applied"): n}
        assert not demo_mismatches(sb, n, systems=["maxsight"])
        assert sb.maxsight.stats.peak == 1
