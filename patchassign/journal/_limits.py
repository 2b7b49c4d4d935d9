"""Limits shared across processes: each system's concurrency and rate held for every
worker and service replica together, in PostgreSQL (psycopg 3, async).

A system with a limit of ``C`` requests in flight has ``C`` slots in ``limit_slots``. A
process may have as many requests in flight to the system as it holds slots, each slot
under a lease it renews every ``beat`` seconds. Every beat, each process computes its
fair share from the live members that have work for the system (``C`` split evenly, the
remainder to the first: those holding slots of it, then by name; a member without work
gets none), claims free or expired
slots up to it (``FOR UPDATE SKIP LOCKED``), and gives back
slots above it, never below what it has in flight: a slot is held by one process at a
time, so the requests in flight, summed over processes, never exceed ``C``. The rate
(and burst) is split the same way: a process's rate is the system's rate times the share
of the slots it uses.

A process that stops renewing (killed, cut off) loses its slots when their lease ends;
one that cannot reach the database for most of a lease stops sending until it can, as
its slots may go to others (a lost connection is opened again at the next beat). Costs:
one round of queries per beat per process, nothing per request. The limits in force are
those of the process that joined last (a new deployment's configuration wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

from .._aio import cancel_and_wait
from ._base import JournalError
from ._postgres import NOW, _reason, connect, options, search_path, split_url

if TYPE_CHECKING:
    import psycopg

    from ..dispatch import Dispatcher

__all__ = ["SharedLimits"]

log = logging.getLogger("patchassign")


class SharedLimits:
    """Hold a :class:`~patchassign.Dispatcher`'s per-system limits together with every
    other process sharing the same database (workers of one plan, or a service's
    replicas)::

        async with Dispatcher(adapters) as d, SharedLimits("postgresql://db/x", d):
            ...  # d's systems' limits now hold for all replicas together

    Until the first share is claimed (on entering), and whenever the database cannot be
    reached for most of a lease, the dispatcher sends nothing to those systems.

    Args:
        url: The PostgreSQL database (``?schema=NAME`` as for the journal: processes
            share limits within one schema).
        dispatcher: The dispatcher whose limits are shared (its ``limits`` are this
            process's configuration of each system).
        lease: Seconds a slot stays this process's without a renewal.
        beat: Seconds between renewals (and rebalancing).
        name: This member's name (default: host, process id and a random tag).
        wants: Whether this process has work for a system now (default: always). A
            process without work for a system gives its slots back and counts for
            nothing in the others' shares, so that a worker holding that system's last
            items gets every slot, not a share kept idle by those with nothing to send.
    """

    def __init__(
        self,
        url: str,
        dispatcher: Dispatcher,
        *,
        lease: float = 10.0,
        beat: float = 2.0,
        name: str | None = None,
        wants: Callable[[str], bool] | None = None,
    ) -> None:
        if not 0 < beat < lease / 2:
            raise JournalError(f"beat ({beat:g} s) must be under half the lease ({lease:g} s)")
        self.url = url
        self.dispatcher = dispatcher
        self.lease = lease
        self.beat = beat
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.systems = sorted(dispatcher.adapters)
        self._wants = wants
        #: Slots held per system (what this process may have in flight).
        self.held: dict[str, int] = dict.fromkeys(self.systems, 0)
        #: Each system's shared limits as last read: ``(concurrency, rate, burst)``.
        self.shared: dict[str, tuple[int, float | None, int]] = {}
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._valid_until = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        self._paused = False
        self._owed = False  # slots above the fair share still held (in flight)
        self._where = split_url(url)[2]
        self._schema = ""

    def __repr__(self) -> str:
        return f"<SharedLimits {self._where} member={self.name}>"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Join: register this process's limits, claim a first share, start renewing."""
        import psycopg

        conn, self._schema, _ = await asyncio.to_thread(connect, self.url, self.lease)
        conn.close()
        try:
            self._conn = await self._open()
        except psycopg.Error as e:
            raise JournalError(f"{self._where}: cannot connect ({_reason(e, self.url)})") from None
        for system in self.systems:
            self.dispatcher.resize(system, 0, None, 1)
        try:
            try:
                await self._join()
            except psycopg.OperationalError:
                if not self._conn.closed:
                    raise
                # The database ended the connection (a restart, a failover): once more.
                self._conn = await self._open()
                await self._join()
        except psycopg.Error as e:
            await self.close()
            raise JournalError(
                f"{self._where}: cannot share limits ({_reason(e, self.url)})"
            ) from None
        self._task = asyncio.create_task(self._renew(), name="patchassign-shared-limits")

    async def _join(self) -> None:
        """Register this process's limits (a new deployment's win) and claim a share."""
        conn = self._conn
        assert conn is not None
        async with conn.transaction():
            for system in self.systems:
                lim = self.dispatcher.limits[system]
                await conn.execute(
                    "INSERT INTO limits (system, concurrency, rate, burst) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (system) DO UPDATE SET "
                    "concurrency = excluded.concurrency, rate = excluded.rate, "
                    "burst = excluded.burst",
                    (system, lim.concurrency, lim.rate, lim.burst),
                )
                await conn.execute(
                    "INSERT INTO limit_slots (system, slot) "
                    "SELECT %s, g FROM generate_series(0, %s - 1) g ON CONFLICT DO NOTHING",
                    (system, lim.concurrency),
                )
        await self.rebalance()

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        conninfo = split_url(self.url)[0]
        conn = await psycopg.AsyncConnection.connect(
            options(conninfo, self.lease, 10), autocommit=True
        )
        try:
            await conn.execute(search_path(self._schema))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Leave: stop renewing, give every slot back, restore the dispatcher's own
        limits."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        expiry, self._expiry = self._expiry, None
        if expiry is not None:
            expiry.cancel()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            with contextlib.suppress(Exception):
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE limit_slots SET holder = NULL, expires = NULL WHERE holder = %s",
                        (self.name,),
                    )
                    await conn.execute("DELETE FROM limit_members WHERE member = %s", (self.name,))
        finally:
            await conn.close()
            for system in self.systems:
                lim = self.dispatcher.limits[system]
                self.dispatcher.resize(system, lim.concurrency, lim.rate, lim.burst)
                self.held[system] = 0

    async def _renew(self) -> None:
        while True:
            # Slots kept only because requests were in flight go back as soon as those
            # are done, not a whole beat later: a joining process waits less.
            await asyncio.sleep(min(self.beat, 0.25) if self._owed else self.beat)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a
                # cancellation that comes as the query ends, and close() waited forever.
                async with asyncio.timeout(self.lease / 2):
                    if self._conn is None or self._conn.closed:
                        # Lost (the server restarted, the connection was cut): a new one.
                        self._conn = await self._open()
                    await self.rebalance()
            except Exception as e:  # the database is unreachable, slow, restarting...
                text = _reason(e, self.url)
                if time.monotonic() + self.beat >= self._valid_until and not self._paused:
                    self._pause(text)
                else:
                    log.warning("shared limits: cannot reach %s (%s)", self._where, text)

    def _pause(self, why: str) -> None:
        """Send nothing: this process's slots are about to end without a renewal."""
        if self._paused:
            return
        self._paused = True
        for system in self.systems:
            self.dispatcher.resize(system, 0, None, 1)
        log.warning(
            "shared limits: cannot reach %s (%s): sending nothing until it answers (the "
            "slots may go to other workers)",
            self._where,
            why,
        )

    def _expire_at(self, valid_until: float) -> None:
        """Pause a beat before ``valid_until`` unless a renewal comes first: whatever the
        renewal is doing (a statement that hangs, a cancellation that takes its time),
        this process stops sending before its slots can go to others."""
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_later(
            max(0.0, valid_until - self.beat - time.monotonic()),
            self._pause,
            f"its slots were not renewed within {self.lease - self.beat:g} s",
        )

    async def rebalance(self) -> None:
        """Renew this process's slots and move its share towards its fair share."""
        conn = self._conn
        if conn is None:
            return
        asked = time.monotonic()
        wanted = self._wanted()
        async with conn.transaction():
            # An upsert: membership comes back after a cut longer than a lease.
            await conn.execute(
                "INSERT INTO limit_members (member, systems, expires) "  # noqa: S608
                f"VALUES (%s, %s, {NOW} + %s) ON CONFLICT (member) DO UPDATE "
                "SET systems = excluded.systems, expires = excluded.expires",
                (self.name, wanted, self.lease),
            )
            await conn.execute(
                f"UPDATE limit_slots SET expires = {NOW} + %s WHERE holder = %s",  # noqa: S608
                (self.lease, self.name),
            )
            cur = await conn.execute(
                "SELECT system, concurrency, rate, burst FROM limits WHERE system = ANY(%s)",
                (self.systems,),
            )
            limits = {s: (int(c), r, int(b)) for s, c, r, b in await cur.fetchall()}
            cur = await conn.execute(
                "SELECT member, systems FROM limit_members "  # noqa: S608
                f"WHERE expires >= {NOW} ORDER BY member"
            )
            members = await cur.fetchall()
            cur = await conn.execute(
                f"SELECT holder, system, slot FROM limit_slots WHERE expires >= {NOW}"  # noqa: S608
            )
            mine: dict[str, list[int]] = {}
            holding: set[tuple[str, str]] = set()
            for holder, system, slot in await cur.fetchall():
                holding.add((holder, system))
                if holder == self.name:
                    mine.setdefault(system, []).append(int(slot))
        self._valid_until = asked + self.lease
        self._expire_at(self._valid_until)
        self._owed = False
        if self._paused:
            self._paused = False
            log.warning("shared limits: %s answers again", self._where)
        for system in self.systems:
            if system not in limits:
                continue
            concurrency, rate, burst = limits[system]
            self.shared[system] = (concurrency, rate, burst)
            # Members holding slots of the system first, then the others, each by name: a
            # member keeps its share while it has work, and one that joins takes a share
            # only where the slots go round (or as they come free). By name alone, one
            # that joined could take the share of a member with items in hand, which then
            # waited out their deadlines (they ended unsent).
            sharing = sorted(
                (m for m, systems in members if system in systems),
                key=lambda m: ((m, system) not in holding, m),
            )
            n = max(1, len(sharing))
            if self.name in sharing:
                rank = sharing.index(self.name)
                target = concurrency // n + (1 if rank < concurrency % n else 0)
            else:
                target = 0  # no work for it here now: the slots go to those with some
            held = [s for s in mine.get(system, []) if s < concurrency]
            extra = [s for s in mine.get(system, []) if s >= concurrency]
            in_flight = self.dispatcher.in_flight(system)
            if len(held) > target:
                # Lower the lane first, then give back only what is not in flight.
                self._apply(system, target, concurrency, rate, burst)
                keep = max(target, in_flight)
                extra += sorted(held)[keep:]
                held = sorted(held)[:keep]
                self._owed = self._owed or keep > target
            if extra:
                await conn.execute(
                    "UPDATE limit_slots SET holder = NULL, expires = NULL "
                    "WHERE system = %s AND holder = %s AND slot = ANY(%s)",
                    (system, self.name, extra),
                )
            if len(held) < target:
                cur = await conn.execute(
                    "UPDATE limit_slots SET holder = %s, "  # noqa: S608
                    f"expires = {NOW} + %s WHERE (system, slot) IN ("
                    "SELECT system, slot FROM limit_slots WHERE system = %s AND slot < %s "
                    f"AND (holder IS NULL OR expires < {NOW}) ORDER BY slot LIMIT %s "
                    "FOR UPDATE SKIP LOCKED) RETURNING slot",
                    (self.name, self.lease, system, concurrency, target - len(held)),
                )
                held += [int(s) for (s,) in await cur.fetchall()]
            self.held[system] = len(held)
            self._apply(system, min(len(held), target), concurrency, rate, burst)

    def _wanted(self) -> list[str]:
        """The systems this process has work for now: it counts in their shares only. A
        ``wants`` that raises counts as wanting (a bug there must not stop the sends)."""
        if self._wants is None:
            return self.systems
        out = []
        for system in self.systems:
            try:
                wanted = bool(self._wants(system))
            except Exception:
                log.exception("shared limits: wants(%r) raised; counted as wanting", system)
                wanted = True
            if wanted:
                out.append(system)
        return out

    def _apply(
        self, system: str, use: int, concurrency: int, rate: float | None, burst: int
    ) -> None:
        share = use / concurrency if concurrency else 0.0
        self.dispatcher.resize(
            system,
            use,
            None if rate is None or not use else rate * share,
            max(1, int(burst * share)),
        )
