"""Limits shared by dispatchers (a service's replicas): the sum in flight holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
import pytest

from patchassign import Dispatcher, Limits
from patchassign.journal import JournalError, SharedLimits
from patchassign.sandbox import Faults, Sandbox, demo_mismatches, demo_plan

N = 120
LIMIT = 4


async def until(condition: Callable[[], bool], *, within: float) -> None:
    """Wait for ``condition`` (a slow machine's beats come late), failing after
    ``within`` seconds."""
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.02)


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
            members = (sa, sb_, sc)
            # A few beats: the shares settle, all of it held, split between the three.
            await until(
                lambda: all(
                    sum(m.held[s] for m in members) == LIMIT
                    and min(m.held[s] for m in members) >= 1
                    for s in ("kintone", "maxsight")
                ),
                within=10,
            )
            rates = [1 / r._lanes["maxsight"]._interval for r in replicas]
            assert sum(rates) == pytest.approx(200)  # the rate is split the same way
            parts = [changes[i::3] for i in range(3)]
            results = await asyncio.wait_for(
                asyncio.gather(*(r.send_all(p) for r, p in zip(replicas, parts, strict=True))),
                60,
            )
            assert all(x.status == "applied" for rs in results for x in rs)
            # One replica leaves: the others take its share at their next beats.
            async with asyncio.timeout(15):
                await sc.close()
            await until(lambda: sa.held["kintone"] + sb_.held["kintone"] == LIMIT, within=10)
        assert not demo_mismatches(sb, N, systems=["kintone", "maxsight"])
        for server in sb:
            assert 1 < server.stats.peak <= LIMIT, server.stats.peak


async def test_a_member_without_work_for_a_system_leaves_its_slots_to_those_with_some(
    pg_url: str,
) -> None:
    """Four workers on a limit of 3: the one ranked last had no slot, and its taken items
    waited (until their deadline) while the others, with nothing left to send, kept
    theirs. A member says what it has work for; only those share."""
    busy = {"a": True, "b": True}
    async with (
        Sandbox(demo=2, systems=["kintone"]) as sb,
        Dispatcher(sb.adapters(), limits={"kintone": Limits(concurrency=3)}) as a,
        Dispatcher(sb.adapters(), limits={"kintone": Limits(concurrency=3)}) as b,
        SharedLimits(pg_url, a, beat=0.2, lease=1.0, name="a", wants=lambda s: busy["a"]) as sa,
        SharedLimits(pg_url, b, beat=0.2, lease=1.0, name="b", wants=lambda s: busy["b"]) as sb_,
    ):
        await until(lambda: (sa.held["kintone"], sb_.held["kintone"]) == (2, 1), within=10)
        busy["a"] = False  # a has nothing left to send: b gets every slot
        await until(lambda: (sa.held["kintone"], sb_.held["kintone"]) == (0, 3), within=10)
        assert a.in_flight("kintone") == 0
        busy["a"] = True  # work again: the slots are shared again, b (holding) first
        await until(lambda: (sa.held["kintone"], sb_.held["kintone"]) == (1, 2), within=10)


async def test_a_member_that_joins_takes_no_share_from_members_holding_the_slots(
    pg_url: str,
) -> None:
    """Three workers on a limit of 2. Shares went by name alone: a worker that joined
    with a name ranked first took a slot from one that held it, whose taken items then
    waited out their deadlines (ending unsent, for a resume). The members holding slots
    rank first; the newcomer's share comes as one of them runs out of work."""
    wants = {"a": True, "b": True, "c": True}

    def member(name: str, d: Dispatcher) -> SharedLimits:
        return SharedLimits(pg_url, d, beat=0.2, lease=1.0, name=name, wants=lambda s: wants[name])

    limits = {"kintone": Limits(concurrency=2)}
    async with (
        Sandbox(demo=2, systems=["kintone"]) as sb,
        Dispatcher(sb.adapters(), limits=limits) as a,
        Dispatcher(sb.adapters(), limits=limits) as b,
        Dispatcher(sb.adapters(), limits=limits) as c,
        member("b", b) as sb_,
        member("c", c) as sc,
    ):
        await until(lambda: (sb_.held["kintone"], sc.held["kintone"]) == (1, 1), within=10)
        async with member("a", a) as sa:

            def held() -> tuple[int, int, int]:
                return sa.held["kintone"], sb_.held["kintone"], sc.held["kintone"]

            await asyncio.sleep(1.0)  # five beats: the shares stay
            assert held() == (0, 1, 1)
            wants["c"] = False  # c has sent its last: its slot goes to a
            await until(lambda: held() == (1, 1, 0), within=10)


async def test_a_wants_that_raises_counts_as_wanting_and_stops_nothing(pg_url: str) -> None:
    def broken(system: str) -> bool:
        raise KeyError(system)

    async with (
        Sandbox(demo=2, systems=["kintone"]) as sb,
        Dispatcher(sb.adapters(), limits={"kintone": Limits(concurrency=3)}) as a,
        SharedLimits(pg_url, a, beat=0.2, lease=1.0, wants=broken) as sa,
    ):
        await until(lambda: sa.held["kintone"] == 3, within=10)
        assert (await a.send(next(demo_plan(1, ["kintone"])))).status == "applied"


async def test_a_replica_cut_off_from_the_database_stops_sending_then_comes_back(
    pg_url: str,
) -> None:
    async with (
        Sandbox(demo=5, systems=["kintone"]) as sb,
        Dispatcher(sb.adapters(), limits={"kintone": Limits(concurrency=LIMIT)}) as d,
        SharedLimits(pg_url, d, beat=0.2, lease=1.0) as shared,
    ):
        lane = d._lanes["kintone"]
        assert lane.max == LIMIT
        database = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
            # Cut off: its connection ends and no new one is let in.
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )
            await until(lambda: lane.max == 0, within=10)  # most of a lease: stops
            assert shared.held["kintone"] == LIMIT  # held in the database until it expires
            admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        # The database answers again: a new connection, the share back, sending again.
        await until(lambda: lane.max == LIMIT, within=10)
        results = await asyncio.wait_for(d.send_all(list(demo_plan(5, ["kintone"]))), 30)
        assert all(r.status == "applied" for r in results)


async def test_closing_never_waits_on_a_renewal_it_cut_off(pg_url: str) -> None:
    # Closed at every point of the renewal loop, many times: close() always returns.
    # (Python 3.11's wait_for lost a cancellation that came as a query ended, and
    # close() then waited forever: a CI run hung on it.)
    async with Sandbox(demo=1, systems=["kintone"]) as sb, Dispatcher(sb.adapters()) as d:
        for i in range(150):
            shared = SharedLimits(pg_url, d, beat=1e-6, lease=1.0)
            await shared.start()
            for _ in range(i):  # i turns of the event loop into the renewals
                await asyncio.sleep(0)
            renewing = shared._task
            async with asyncio.timeout(15) as bound:
                await shared.close()
            assert not bound.expired()  # (a cancellation swallowed in close() hid it)
            assert renewing is not None
            assert renewing.done()


async def test_a_cut_as_a_replica_joins_is_tried_once_more(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    join = SharedLimits._join
    calls = []

    async def cut_first(self: SharedLimits) -> None:
        calls.append(self.name)
        if len(calls) == 1:  # the server ends the connection as it joins (a restart)
            assert self._conn is not None
            with contextlib.suppress(psycopg.OperationalError):
                await self._conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        await join(self)

    monkeypatch.setattr(SharedLimits, "_join", cut_first)
    async with (
        Sandbox(demo=1, systems=["kintone"]) as sb,
        Dispatcher(sb.adapters(), limits={"kintone": Limits(concurrency=LIMIT)}) as d,
        SharedLimits(pg_url, d, beat=0.2, lease=1.0) as shared,
    ):
        assert shared.held["kintone"] == LIMIT
    assert len(calls) == 2


def test_a_beat_must_fit_in_the_lease() -> None:
    with pytest.raises(JournalError, match="under half the lease"):
        SharedLimits("postgresql://x/y", Dispatcher([]), beat=5, lease=6)
