"""Limits shared by dispatchers (a service's replicas): the sum in flight holds."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from patchassign import Dispatcher, Limits
from patchassign.journal import JournalError, SharedLimits
from patchassign.sandbox import Faults, Sandbox, demo_mismatches, demo_plan

N = 120
LIMIT = 4


async def test_replicas_share_a_systems_concurrency(pg_url: str) -> None:
    async with Sandbox(
        demo=N, systems=["kintone", "maxsight"], faults=Faults(latency=0.01, jitter=0.02)
    ) as sb:
        limits = {
            "kintone": Limits(concurrency=LIMIT),
            "maxsight": Limits(concurrency=LIMIT, rate=200, burst=4),
        }
        changes = list(demo_plan(N, ["kintone", "maxsight"]))
        replicas = [Dispatcher(sb.adapters(), limits=limits) for _ in range(3)]
        async with (
            replicas[0] as a,
            replicas[1] as b,
            replicas[2] as c,
            SharedLimits(pg_url, a, beat=0.2, lease=1.0) as sa,
            SharedLimits(pg_url, b, beat=0.2, lease=1.0) as sb_,
            SharedLimits(pg_url, c, beat=0.2, lease=1.0) as sc,
        ):
            await asyncio.sleep(0.5)  # a few beats: the shares settle
            for system in ("kintone", "maxsight"):
                held = [s.held[system] for s in (sa, sb_, sc)]
                assert sum(held) == LIMIT, held  # all of it, not more
                assert min(held) >= 1  # split between the three
            rates = [1 / r._lanes["maxsight"]._interval for r in replicas]
            assert sum(rates) == pytest.approx(200)  # the rate is split the same way
            parts = [changes[i::3] for i in range(3)]
            results = await asyncio.gather(
                *(r.send_all(p) for r, p in zip(replicas, parts, strict=True))
            )
            assert all(x.status == "applied" for rs in results for x in rs)
            # One replica leaves: the others take its share at their next beats.
            await sc.close()
            await asyncio.sleep(0.6)
            assert sa.held["kintone"] + sb_.held["kintone"] == LIMIT
        assert not demo_mismatches(sb, N, systems=["kintone", "maxsight"])
        for server in sb:
            assert 1 < server.stats.peak <= LIMIT, server.stats.peak


async def test_a_replica_cut_off_from_the_database_stops_sending(pg_url: str) -> None:
    async with (
        Sandbox(demo=5, systems=["kintone"]) as sb,
        Dispatcher(sb.adapters(), limits={"kintone": Limits(concurrency=LIMIT)}) as d,
        SharedLimits(pg_url, d, beat=0.2, lease=1.0) as shared,
    ):
        assert d._lanes["kintone"].max == LIMIT
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname = current_database()"
            )
        await asyncio.sleep(1.2)  # most of a lease without a renewal
        assert d._lanes["kintone"].max == 0
        assert shared.held["kintone"] == LIMIT  # held in the database until it expires


def test_a_beat_must_fit_in_the_lease() -> None:
    with pytest.raises(JournalError, match="under half the lease"):
        SharedLimits("postgresql://x/y", Dispatcher([]), beat=5, lease=6)
