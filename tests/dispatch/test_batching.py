"""Batches: many changes of one system in one request, through its bulk endpoint.

The adapters say what can go together and read each change's answer out of the combined
one (sans-I/O, tested with plain values); the dispatcher's batcher collects, sends under
the lane's limits, isolates failures and splits what it cannot attribute (tested on
``MockTransport``); the whole against the sandbox with faults on.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from patchassign import Dispatcher, MockTransport, RetryPolicy
from patchassign.changes import Assign, Change, MovePerson
from patchassign.errors import ConnectionLost
from patchassign.sandbox import Faults, Sandbox, demo_plan
from patchassign.systems import (
    Current,
    HttpRequest,
    HttpResponse,
    KintoneAdapter,
    Limits,
    PerscomAdapter,
)

FAST = RetryPolicy(base=0.01, cap=0.05, timeout=2.0, attempts=6, settle=0.1)


def body(request: HttpRequest) -> Any:
    return json.loads(request.body or b"null")


# -- the adapters: what goes together, and each change's answer ----------------------------


def kintone() -> KintoneAdapter:
    return KintoneAdapter("https://k.example", app_tokens={1: "t1", 2: "t2"})


def k_read(a: KintoneAdapter, rid: int, app: int = 1) -> HttpRequest:
    return a.read(Assign(system="kintone", record=f"{app}:{rid}", to=["eve"]))


def k_record(rid: int, held: list[str], revision: int = 3) -> dict[str, Any]:
    return {
        "$id": {"type": "__ID__", "value": str(rid)},
        "$revision": {"type": "__REVISION__", "value": str(revision)},
        "Assignee": {"type": "STATUS_ASSIGNEE", "value": [{"code": c} for c in held]},
    }


def k_write(a: KintoneAdapter, rid: int, to: str, app: int = 1) -> HttpRequest:
    change = Assign(system="kintone", record=f"{app}:{rid}", to=[to])
    prepared = a.prepare(change, Current(k_record(rid, ["ada"]), "3"))
    assert isinstance(prepared, HttpRequest)
    return prepared


def test_kintone_reads_of_one_app_become_one_records_json_query() -> None:
    a = kintone()
    reads = [k_read(a, i) for i in (5, 7, 9)]
    assert {a.batch_group(r, False) for r in reads} == {("r", "1")}
    assert a.batch_group(k_read(a, 5, app=2), False) != a.batch_group(reads[0], False)
    combined = a.combine(reads, False)
    assert combined.method == "GET"
    assert "/k/v1/records.json?" in combined.url
    assert "%24id+in+%28%225%22%2C+%227%22%2C+%229%22%29+limit+3" in combined.url
    assert combined.headers["X-Cybozu-API-Token"] == "t1"
    answer = HttpResponse.from_json(200, {"records": [k_record(9, ["bob"]), k_record(5, ["ada"])]})
    parts = a.split(reads, False, answer)
    assert parts is not None
    five, seven, nine = parts
    assert five is not None
    assert seven is not None
    assert nine is not None
    assert a.current(Assign(system="kintone", record="1:5", to=["x"]), five) == Current(
        k_record(5, ["ada"]), "3"
    )
    assert seven.status == 404
    assert seven.json()["code"] == "GAIA_RE01"
    assert nine.json()["record"] == k_record(9, ["bob"])
    refused = HttpResponse.from_json(400, {"code": "GAIA_IA02", "message": "token"})
    assert a.split(reads, False, refused) is None  # about all of them


def test_kintone_writes_become_one_bulk_request_all_or_nothing() -> None:
    a = kintone()
    writes = [k_write(a, i, "eve") for i in (1, 2, 3)]
    assert len({a.batch_group(w, True) for w in writes}) == 1
    combined = a.combine(writes, True)
    assert (combined.method, combined.url) == ("POST", "https://k.example/k/v1/bulkRequest.json")
    assert body(combined)["requests"] == [
        {"method": "PUT", "api": "/k/v1/record/assignees.json", "payload": body(w)} for w in writes
    ]
    ok = HttpResponse.from_json(200, {"results": [{"revision": "4"}] * 3})
    parts = a.split(writes, True, ok)
    assert parts is not None
    assert [p.json() if p else None for p in parts] == [{"revision": "4"}] * 3
    error = {"id": "x", "code": "GAIA_CO02", "message": "stale"}
    failed = HttpResponse.from_json(409, {"results": [{}, error, {}]})
    parts = a.split(writes, True, failed)
    assert parts is not None
    assert parts[0] is None
    assert parts[2] is None
    assert parts[1] is not None
    assert (parts[1].status, parts[1].json()) == (409, error)
    assert a.split(writes, True, HttpResponse.from_json(429, {"code": "GAIA_TO04"})) is None


def perscom() -> PerscomAdapter:
    return PerscomAdapter("https://p.example", "tok")


def p_write(a: PerscomAdapter, rid: int, user: int) -> HttpRequest:
    prepared = a.prepare(Assign(system="perscom", record=rid, to=str(user)), None)
    assert isinstance(prepared, HttpRequest)
    return prepared


def test_perscom_updates_become_one_batch_update_and_422s_name_their_record() -> None:
    a = perscom()
    writes = [p_write(a, i, 100 + i) for i in (1, 2, 3)]
    assert {a.batch_group(w, True) for w in writes} == {"update"}
    assert a.batch_group(a.read(Assign(system="perscom", record=1, to="5")), False) is None
    move = MovePerson(system="perscom", record=7, to={"unit_id": 2})
    created = a.prepare(move, Current({"unit_id": 1, "updated_at": "t"}, "t"))
    assert isinstance(created, HttpRequest)
    assert a.batch_group(created, True) is None  # a move creates: it goes alone
    combined = a.combine(writes, True)
    assert (combined.method, combined.url) == (
        "PATCH",
        "https://p.example/v2/assignment-records/batch",
    )
    assert body(combined) == {"resources": {str(i): {"user_id": 100 + i} for i in (1, 2, 3)}}
    data = [{"id": i, "user_id": 100 + i, "updated_at": "v"} for i in (3, 1, 2)]
    parts = a.split(writes, True, HttpResponse.from_json(200, {"data": data}))
    assert parts is not None
    assert [p.json()["data"]["id"] if p else None for p in parts] == [1, 2, 3]
    invalid = {
        "error": {
            "message": "The selected user id is invalid.",
            "type": "ValidationException",
            "errors": {"resources.2.user_id": ["The selected user id is invalid."]},
        }
    }
    parts = a.split(writes, True, HttpResponse.from_json(422, invalid))
    assert parts is not None
    assert parts[0] is None
    assert parts[2] is None
    assert parts[1] is not None
    assert parts[1].status == 422
    own = parts[1].json()["error"]
    assert own["errors"] == {"user_id": ["The selected user id is invalid."]}
    not_found = HttpResponse.from_json(404, {"error": {"message": "Assignment record 2 ..."}})
    assert a.split(writes, True, not_found) is None  # says no record by its field: bisect


# -- the batcher, on MockTransport ---------------------------------------------------------


class FakeBatchPerscom:
    """PERSCOM's single and batch updates, all or nothing; user 999 names nobody; a
    record in ``gone`` answers 404 without saying which (the batcher must bisect)."""

    def __init__(self, gone: frozenset[int] = frozenset()) -> None:
        self.records: dict[int, int] = {}
        self.writes: Counter[int] = Counter()
        self.requests: list[tuple[str, int]] = []
        self.gone = gone

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = request.url.rsplit("/", 1)[1]
        resources = body(request)["resources"] if rid == "batch" else {rid: body(request)}
        self.requests.append((rid, len(resources)))
        if any(int(k) in self.gone for k in resources):
            return HttpResponse.from_json(404, {"error": {"message": "not found"}})
        bad = {f"resources.{k}.user_id": ["The selected user id is invalid."]
               for k, v in resources.items() if v.get("user_id") == 999}  # fmt: skip
        if bad:
            if rid != "batch":
                bad = {"user_id": next(iter(bad.values()))}
            return HttpResponse.from_json(422, {"error": {"message": "invalid", "errors": bad}})
        for k, v in resources.items():
            self.records[int(k)] = v["user_id"]
            self.writes[int(k)] += 1
        data = [{"id": int(k), "user_id": v["user_id"], "updated_at": "v"} for k, v in resources.items()]  # fmt: skip
        return HttpResponse.from_json(200, {"data": data if rid == "batch" else data[0]})


def plan(n: int, bad: frozenset[int] = frozenset()) -> list[Change]:
    return [
        Assign(system="perscom", record=i, to="999" if i in bad else str(100 + i), id=f"c{i}")
        for i in range(1, n + 1)
    ]


async def run(fake: Any, changes: list[Change], **limits: Any) -> list[Any]:
    lim = {"perscom": Limits(concurrency=4, **limits)}
    async with Dispatcher(
        [perscom()], transport=MockTransport(fake, record=False), limits=lim, retry=FAST
    ) as d:
        return await d.send_all(changes)


async def test_changes_go_in_batches_of_at_most_the_size_and_say_which() -> None:
    fake = FakeBatchPerscom()
    results = await run(fake, plan(10), batch=4)
    assert {r.status for r in results} == {"applied"}
    assert sorted(n for _, n in fake.requests) == [2, 4, 4]
    assert fake.writes == Counter(range(1, 11))
    batches = Counter(r.batch for r in results)
    assert sorted(batches.values()) == [2, 4, 4]
    assert all(r.batch.startswith("perscom-w") for r in results)
    for name in batches:
        assert sorted(r.position for r in results if r.batch == name) == list(range(batches[name]))


async def test_batch_0_sends_one_change_per_request() -> None:
    fake = FakeBatchPerscom()
    results = await run(fake, plan(6), batch=0)
    assert {r.status for r in results} == {"applied"}
    assert [n for _, n in fake.requests] == [1] * 6
    assert {r.batch for r in results} == {None}


async def test_a_batch_lingers_for_more_changes() -> None:
    fake = FakeBatchPerscom()

    async def trickle() -> Any:
        for c in plan(3):
            yield c
            await asyncio.sleep(0.05)

    lim = {"perscom": Limits(concurrency=4, linger=0.5)}
    async with Dispatcher(
        [perscom()], transport=MockTransport(fake, record=False), limits=lim, retry=FAST
    ) as d:
        results = await d.send_all(trickle())
    assert {r.status for r in results} == {"applied"}
    assert [n for _, n in fake.requests] == [3]  # one request, although they came apart


async def test_one_bad_change_fails_alone_and_the_others_are_sent_again() -> None:
    fake = FakeBatchPerscom()
    results = await run(fake, plan(8, bad=frozenset({3, 6})), batch=8)
    by = {r.id: r for r in results}
    assert by["c3"].status == by["c6"].status == "failed"
    assert "user_id" in (by["c3"].error or "")
    assert "invalid" in (by["c3"].error or "")
    assert {r.status for r in results if r.id not in ("c3", "c6")} == {"applied"}
    assert fake.writes == Counter(i for i in range(1, 9) if i not in (3, 6))  # once each
    assert fake.requests[0] == ("batch", 8)  # refused as a whole, then without the bad ones


async def test_a_failure_that_names_no_change_is_found_by_halving() -> None:
    fake = FakeBatchPerscom(gone=frozenset({5}))
    results = await run(fake, plan(8), batch=8)
    by = {r.id: r for r in results}
    assert by["c5"].status == "failed"
    assert by["c5"].http_status == 404
    assert {r.status for r in results if r.id != "c5"} == {"applied"}
    assert fake.writes == Counter(i for i in range(1, 9) if i != 5)
    assert len(fake.requests) <= 1 + 2 + 2 + 2 + 1  # 8 -> 4 -> 2 -> 1, and the rest


async def test_a_lost_batch_is_read_back_change_by_change() -> None:
    """No answer to a batch (a dropped connection after the server applied it): every
    change in it is in doubt and reads its record back; nothing is written twice."""
    fake = FakeBatchPerscom()
    dropped = 0

    def handler(request: HttpRequest) -> HttpResponse:
        nonlocal dropped
        if request.method == "GET":
            rid = int(request.url.rsplit("/", 1)[1])
            user = fake.records.get(rid, 1)
            return HttpResponse.from_json(200, {"data": {"id": rid, "user_id": user, "updated_at": "v"}})  # fmt: skip
        answer = fake(request)
        if request.url.endswith("/batch") and not dropped:
            dropped += 1
            raise ConnectionLost("connection reset after the request was sent", host="p:443")
        return answer

    results = await run(handler, plan(6), batch=6)
    assert dropped == 1
    assert {r.status for r in results} == {"applied"}
    assert fake.writes == Counter(range(1, 7))  # applied once, by the lost batch
    assert all(r.writes == 1 for r in results)


async def test_a_cancelled_change_waiting_for_its_batch_to_go_out_is_not_sent() -> None:
    """``asyncio.wait_for(d.send(...))`` gave up on changes whose batch was waiting for
    the lane: their writes went out anyway once the lane was free, and their records
    stayed locked for the settle time. Now they leave the batch; a change in a batch
    already in flight is in doubt, and its record waits, as before."""
    fake = FakeBatchPerscom()
    release = asyncio.Event()

    async def slow(request: HttpRequest) -> HttpResponse:
        await release.wait()
        return fake(request)

    lim = {"perscom": Limits(concurrency=1)}
    async with Dispatcher([perscom()], transport=MockTransport(slow), limits=lim, retry=FAST) as d:
        lane = d._lanes["perscom"]
        flying = [asyncio.create_task(d.send(c)) for c in plan(2)]
        await asyncio.sleep(0.1)  # their batch is in flight, holding the lane
        waiting = [asyncio.create_task(d.send(c)) for c in plan(4)[2:]]
        await asyncio.sleep(0.1)  # theirs waits for the lane
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert sorted(lane.keys._busy) == ["1", "2"]  # 3 and 4 are free at once
        release.set()
        assert [r.status for r in await asyncio.gather(*flying)] == ["applied", "applied"]
        await asyncio.sleep(0.1)
        assert fake.requests == [("batch", 2)]  # 3 and 4 were never sent
        again = await asyncio.wait_for(d.send(plan(3)[2]), 5)
    assert again.status == "applied"
    assert fake.writes == Counter({1: 1, 2: 1, 3: 1})


async def test_a_lane_finishes_the_changes_it_started_before_it_starts_others() -> None:
    """A batching lane has more workers than slots (enough to fill its batches). With
    one slot, and each change reading its record first (PERSCOM reads go one by one),
    the requests went in the order they were asked for: all twenty reads, then the
    writes, each change taking as long as all of them and its read going stale. A
    change's write (and any request of a change under way) now goes before the first
    requests of changes not yet under way, once its batch is full (here 4) or the lane
    is free: each write follows its read within a batch's worth of requests."""
    fake = FakeBatchPerscom()
    log: list[tuple[str, tuple[int, ...]]] = []

    async def answer(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(0.05)  # longer than a batch lingers: writes ask while reads go
        rid = request.url.rsplit("/", 1)[1]
        if request.method == "GET":
            log.append(("read", (int(rid),)))
            return HttpResponse.from_json(200, {"data": {"id": int(rid), "user_id": 1}})
        rids = [int(k) for k in body(request)["resources"]] if rid == "batch" else [int(rid)]
        log.append(("write", tuple(rids)))
        return fake(request)

    lim = {"perscom": Limits(concurrency=1, linger=0.01, batch=4)}
    async with Dispatcher(
        [perscom()], transport=MockTransport(answer, record=False), limits=lim, retry=FAST
    ) as d:
        results = [r async for r in d.run(plan(20), read_first=True)]
    assert {r.status for r in results} == {"applied"}
    assert fake.writes == Counter(range(1, 21))
    read_at = {rids[0]: i for i, (kind, rids) in enumerate(log) if kind == "read"}
    written_at = {r: i for i, (kind, rids) in enumerate(log) if kind == "write" for r in rids}
    gaps = [written_at[r] - read_at[r] for r in range(1, 21)]
    assert max(gaps) <= 5, gaps  # was 20: every read first
    assert [len(rids) for kind, rids in log if kind == "write"] == [4] * 5


async def test_at_a_rate_limit_reads_go_one_by_one_and_writes_fill_their_batches() -> None:
    """PERSCOM changes that read first, at a share of PERSCOM's limits (4 in flight,
    100 requests/s), a 1.5 s deadline. PERSCOM reads one record per request; its writes
    go 50 to a batch. Before, the lane started enough workers to fill 4 batches (200
    changes under way at once): every change's read waited behind all of theirs (2 s),
    past its deadline; and a write batch went at every linger, one write per request,
    which spent the rate on writes. Now a worker waiting in a batch rests (another takes
    a change), and a batch that is not full waits while the lane is busy."""
    fake = FakeBatchPerscom()
    log: list[str] = []

    def answer(request: HttpRequest) -> HttpResponse:
        rid = request.url.rsplit("/", 1)[1]
        log.append(request.method)
        if request.method == "GET":
            return HttpResponse.from_json(200, {"data": {"id": int(rid), "user_id": 1}})
        return fake(request)

    lim = {"perscom": Limits(concurrency=4, rate=100.0, burst=4)}
    policy = RetryPolicy(deadline=1.5, timeout=1.0, base=0.01, cap=0.05)
    async with Dispatcher(
        [perscom()], transport=MockTransport(answer, record=False), limits=lim, retry=policy
    ) as d:
        changes = [
            Assign(system="perscom", record=i, to=str(100 + i), expect="1") for i in range(1, 201)
        ]
        results = [r async for r in d.run(changes)]
    assert Counter(r.status for r in results) == {"applied": 200}, {r.error for r in results}
    assert fake.writes == Counter(range(1, 201))
    assert log.count("GET") == 200
    assert log.count("PATCH") <= 12, Counter(n for _, n in fake.requests)  # 4 of 50 at best


@pytest.mark.parametrize(
    ("answer", "freed"),
    [
        ("applied", True),  # its write landed
        ("refused", True),  # 422 for another change: not carried out, goes again without it
        ("502", False),  # may have applied: the record waits for the settle time
        ("lost", False),  # no answer at all: the same
    ],
)
async def test_a_change_cut_off_in_a_batch_in_flight_frees_its_record_on_the_answer(
    answer: str, freed: bool
) -> None:
    """``asyncio.wait_for(d.send(...))`` gave up on a change whose batch was in flight:
    its write may land, and PERSCOM has no version token to stop a late one, so its
    record waits. It waited for the settle time (a minute by default) even when the
    batch's answer came a moment later and said what became of the write. Now the answer
    frees it, unless it leaves the write in doubt."""
    fake = FakeBatchPerscom()
    release = asyncio.Event()

    async def slow(request: HttpRequest) -> HttpResponse:
        await release.wait()
        if request.url.endswith("/batch"):
            if answer == "502":
                return HttpResponse(502, {}, b"")
            if answer == "lost":
                raise ConnectionLost("connection reset", host="p:443")
        return fake(request)

    lim = {"perscom": Limits(concurrency=1)}
    settle = RetryPolicy(base=0.01, cap=0.05, timeout=30.0, settle=30.0)
    changes = plan(2, bad=frozenset({2} if answer == "refused" else ()))
    async with Dispatcher(
        [perscom()], transport=MockTransport(slow), limits=lim, retry=settle
    ) as d:
        lane = d._lanes["perscom"]
        cut, other = (asyncio.create_task(d.send(c)) for c in changes)
        await asyncio.sleep(0.1)  # their batch is in flight
        cut.cancel()
        await asyncio.gather(cut, return_exceptions=True)
        assert "1" in lane.keys._busy  # in doubt while the batch is out
        release.set()
        if answer in ("applied", "refused"):
            await other
        else:
            other.cancel()
            await asyncio.gather(other, return_exceptions=True)
        await asyncio.sleep(0.1)
        assert ("1" not in lane.keys._busy) is freed
        if freed:
            again = Assign(system="perscom", record=1, to="7", id="again")
            assert (await asyncio.wait_for(d.send(again), 5)).status == "applied"
            assert fake.records[1] == 7
    if answer == "applied":
        assert fake.writes == Counter({1: 2, 2: 1})


async def test_a_429_for_a_whole_batch_tells_the_lane_once() -> None:
    """Every change of a throttled batch retries, but the system said 429 once: its lane
    slows down as for one throttled request, not for eight."""
    fake = FakeBatchPerscom()
    throttled = 0

    def handler(request: HttpRequest) -> HttpResponse:
        nonlocal throttled
        if not throttled:
            throttled += 1
            return HttpResponse.from_json(429, {"error": {"message": "slow"}}, {"Retry-After": "0"})  # fmt: skip
        return fake(request)

    lim = {"perscom": Limits(concurrency=4, batch=8)}
    async with Dispatcher(
        [perscom()], transport=MockTransport(handler, record=False), limits=lim, retry=FAST
    ) as d:
        results = await d.send_all(plan(8))
        assert d.slowdowns() == {"perscom": 0}  # 1 in 20 recent answers, not 8 in 8
    assert {r.status for r in results} == {"applied"}
    assert all(r.http_status == 200 for r in results)
    assert fake.writes == Counter(range(1, 9))


# -- against the sandbox, faults on --------------------------------------------------------


@pytest.mark.parametrize("system", ["kintone", "perscom"])
async def test_batches_with_faults_apply_every_change_once(system: str) -> None:
    """429s, 503s, drops before and after applying, a concurrent editor, and a bad change
    in some batches: every change ends with one outcome, none applied twice, the records
    as planned but for the bad ones."""
    n = 600
    faults = Faults(throttle=0.05, retry_after=1, unavailable=0.05, drop=0.03, editor=0.1, seed=8)
    async with Sandbox(demo=n, systems=[system], faults={system: faults}) as sb:
        changes = list(demo_plan(n, [system]))
        bad = set(range(7, n, 97))  # one bad change in some batches
        if system == "kintone":
            sb.kintone.users = {f"user{i}" for i in range(100)} | {"ada", "bob", "cy", "dee", "eve", "fay", "gus", "hal"}  # fmt: skip
            for i in bad:
                changes[i - 1] = Assign(system="kintone", record=f"1:{i}", to=["nobody"], id=f"kintone-{i}")  # fmt: skip
        else:
            for i in bad:
                changes[i - 1] = Assign(system="perscom", record=i, to="5000", id=f"perscom-{i}")
        lim = {system: Limits(concurrency=8)}  # the sandbox has no per-minute limit
        policy = RetryPolicy(base=0.05, cap=1.0, timeout=3.0, attempts=8, settle=0.5, conflicts=20)
        async with Dispatcher(sb.adapters(), limits=lim, retry=policy, seed=3) as d:
            results = await d.send_all(changes)
        statuses = Counter(r.status for r in results)
        assert statuses == {"applied": n - len(bad), "failed": len(bad)}, statuses
        assert {int(str(r.record).split(":")[-1]) for r in results if r.status == "failed"} == bad
        server = sb.servers[system]
        assert max(server.stats.writes.values()) == 1  # nothing twice
        assert sum(server.stats.writes.values()) == n - len(bad)
        assert {i for i, _ in server.demo_mismatches(range(1, n + 1))} == bad
        assert sum(1 for r in results if r.batch) > n / 2  # most went in batches
        # The faults did happen, and far fewer requests than changes were sent: Kintone
        # batches reads and writes; PERSCOM batches writes only (its reads go one by one,
        # and the changes of a batch refused for a bad one read again before they go
        # again: how many batches hold a bad change depends on timing, 2 to 7 of them).
        assert server.stats.count(status=429) + server.stats.count(status=503) > 0
        if system == "kintone":
            # One by one: 2 per change (1,200). Batched: 114 to 178 in 24 runs; how many
            # depends on how the faults and the lingering batches meet (185 once, on a
            # busy machine).
            assert server.stats.count() < 0.5 * n, server.stats.requests
        else:
            writes = server.stats.count("batch") + server.stats.count("update")
            assert writes < 0.2 * n, server.stats.requests
            assert server.stats.count() < 2.5 * n, server.stats.requests
        assert sb.servers[system].stats.dropped
