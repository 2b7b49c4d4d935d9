"""The dispatcher's logic on MockTransport: lanes, fail-fast, deadlines, hooks, preflight."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from patchassign import (
    ConfigError,
    ConnectError,
    Dispatcher,
    Hooks,
    HttpRequest,
    HttpResponse,
    InvalidChange,
    Limits,
    MockTransport,
    ResponseTimeout,
    Result,
    RetryPolicy,
    SetupError,
)
from patchassign.changes import Assign, Change
from patchassign.systems import PerscomAdapter

from .fakes import (
    MAXSIGHT,
    PERSCOM,
    FakeMaxsight,
    FakePerscom,
    Route,
    to_maxsight,
    to_perscom,
)

if TYPE_CHECKING:
    from patchassign.hooks import RetryEvent, SlowdownEvent, StopEvent

FAST = RetryPolicy(base=0.01, cap=0.05, timeout=1.0, deadline=10.0)


def interleave(*plans: list[Any]) -> list[Any]:
    return [c for group in itertools.zip_longest(*plans) for c in group if c is not None]


def one_by_one(adapters: list[Any], limits: dict[str, Limits] | None = None) -> dict[str, Limits]:
    """Limits sending one change per request: the lanes' behaviour on its own (batching
    has tests of its own)."""
    out = dict(limits or {})
    for a in adapters:
        own = out.get(a.system, a.limits)
        if own.batch is None:
            out[a.system] = msgspec.structs.replace(own, batch=0)
    return out


def dispatcher(route: Route, **kw: Any) -> Dispatcher:
    adapters = [fake.adapter() for fake in route.fakes.values()]
    kw.setdefault("retry", FAST)
    kw.setdefault("seed", 1)
    kw["limits"] = one_by_one(adapters, kw.get("limits"))
    return Dispatcher(adapters, transport=MockTransport(route, record=False), **kw)


# -- lanes --------------------------------------------------------------------------------


async def test_a_slow_limited_system_does_not_hold_back_the_others() -> None:
    """Head-of-line blocking: a system limited to one request at a time, 50 ms each, and a
    fast one in the same plan. The fast one is done long before the slow one."""
    route = Route(perscom=FakePerscom(delay=0.05), maxsight=FakeMaxsight())
    plan = interleave(to_perscom(20), to_maxsight(200))
    limits = {"perscom": Limits(concurrency=1)}
    async with dispatcher(route, concurrency=2, limits=limits) as d:
        results = [r async for r in d.run(plan)]
    assert Counter(r.status for r in results) == {"applied": 220}
    last_fast = max(i for i, s in enumerate(route.order) if s == "maxsight")
    slow_before = route.order[:last_fast].count("perscom")
    # With one queue, every worker ends up waiting at the slow system's gate and the fast
    # system's answers trickle in between the slow ones.
    assert slow_before <= 3, slow_before


async def test_a_change_waiting_for_its_system_holds_no_overall_slot() -> None:
    """Overall concurrency 1: the slow system's waiting changes must not take it."""
    route = Route(perscom=FakePerscom(delay=0.02), maxsight=FakeMaxsight())
    plan = interleave(to_perscom(10), to_maxsight(50))
    limits = {"perscom": Limits(concurrency=1, rate=5.0)}  # one every 200 ms
    async with dispatcher(route, concurrency=1, limits=limits) as d:
        results = [r async for r in d.run(plan)]
    systems = [r.system for r in results]
    assert systems.index("perscom") < 5
    assert systems[:55].count("maxsight") == 50  # maxsight done before perscom's 6th


async def test_reading_pauses_only_for_a_full_buffer() -> None:
    """A stalled system fills its buffer; changes for others behind it still go."""
    gate = asyncio.Event()

    async def stalled(request: HttpRequest) -> HttpResponse:
        await gate.wait()
        return HttpResponse.from_json(200, {"data": {"id": 1}})

    route = Route(maxsight=FakeMaxsight())
    adapters = [FakePerscom().adapter(), route.fakes["maxsight"].adapter()]

    async def handler(request: HttpRequest) -> HttpResponse:
        if "perscom" in request.url:
            return await stalled(request)
        return await route(request)

    plan = [*to_perscom(30), *to_maxsight(40)]
    async with Dispatcher(
        adapters, transport=MockTransport(handler), buffer=50, retry=FAST, seed=1
    ) as d:
        run = d.run(plan)
        got: list[Result] = []
        async for r in run:
            got.append(r)
            if len(got) == 40:
                break
        await run.aclose()
        gate.set()
    assert {r.system for r in got} == {"maxsight"}


async def test_a_source_per_system_never_waits_for_another_systems_backlog() -> None:
    """With one input, a stalled system's full buffer stops the reading (the next change
    may be for it); with one source per system (a bulk run's journal), the other
    systems' changes all go, however many the stalled one has waiting."""
    gate = asyncio.Event()
    route = Route(maxsight=FakeMaxsight())
    adapters = [FakePerscom().adapter(), route.fakes["maxsight"].adapter()]

    async def handler(request: HttpRequest) -> HttpResponse:
        if "perscom" in request.url:
            await gate.wait()
            return HttpResponse.from_json(200, {"data": {"id": 1}})
        return await route(request)

    plan_perscom, plan_maxsight = to_perscom(200), to_maxsight(300)
    for sources in ("one", "per system"):
        gate.clear()
        async with Dispatcher(
            adapters,
            transport=MockTransport(handler),
            buffer=20,
            retry=FAST,
            seed=1,
            limits={"perscom": Limits(concurrency=32)},  # no per-minute rate here
        ) as d:
            if sources == "one":
                run = d.run([*plan_perscom, *plan_maxsight])
            else:
                run = d.run({"perscom": plan_perscom, "maxsight": iter(plan_maxsight)})
            got: list[Result] = []

            async def take(run: Any = run, got: list[Result] = got) -> None:
                async for r in run:
                    got.append(r)  # noqa: PERF401 - counted while it runs

            task = asyncio.create_task(take())
            await asyncio.sleep(0.5)
            maxsight = sum(r.system == "maxsight" for r in got)
            gate.set()
            await task
        if sources == "one":
            assert maxsight == 0  # held back behind perscom's 200
        else:
            assert maxsight == 300
            # indexes are positions in each system's own input
            assert sorted(r.index for r in got if r.system == "maxsight") == list(range(300))
        assert len(got) == 500


async def test_read_first_can_be_asked_per_change() -> None:
    """``read_first`` as a function of (system, index): only those changes are read."""
    route = Route(perscom=FakePerscom())
    asked: list[tuple[str, int]] = []

    def read_first(system: str, index: int) -> bool:
        asked.append((system, index))
        return index % 2 == 0

    changes = [Assign(system="perscom", record=i + 1, to="8") for i in range(6)]
    async with dispatcher(route) as d:
        results = [r async for r in d.run({"perscom": changes}, read_first=read_first)]
    assert sorted(asked) == [("perscom", i) for i in range(6)]
    # read (it holds user 7), then written; or written straight away
    assert {r.index: r.attempts for r in results} == {0: 2, 1: 1, 2: 2, 3: 1, 4: 2, 5: 1}
    assert {r.status for r in results} == {"applied"}


async def test_a_source_for_a_system_without_an_adapter_fails_its_changes() -> None:
    route = Route(perscom=FakePerscom())
    jira: list[Change] = [Assign(system="jira", record=i, to="7") for i in range(3)]
    sources: dict[str, list[Change]] = {
        "perscom": [*to_perscom(2), jira[0]],
        "jira": jira,
        "kintone": to_perscom(1),
    }
    async with dispatcher(route) as d:
        results = [r async for r in d.run(sources)]
    assert Counter((r.system, r.status) for r in results) == {
        ("perscom", "applied"): 2,
        ("jira", "failed"): 4,
        ("perscom", "failed"): 1,
    }
    errors = Counter(r.error for r in results if r.status == "failed")
    assert errors["no adapter configured for system 'jira'"] == 3
    assert errors["a change for 'jira' in the input of 'perscom': not sent"] == 1
    assert errors["a change for 'perscom' in the input of 'kintone': not sent"] == 1


# -- fail fast ----------------------------------------------------------------------------


async def _every_maxsight_answer(answer: HttpResponse) -> tuple[str, Counting, dict[str, str]]:
    """400 Maxsight changes beside 100 PERSCOM ones, every Maxsight answer ``answer``:
    Maxsight must stop after a few requests, its changes all ``failed``, most unsent.
    The reason they were given, the hooks' record, and the systems' states."""
    maxsight = FakeMaxsight(fault=lambda r: answer)
    route = Route(maxsight=maxsight, perscom=FakePerscom())
    hooks = Counting()
    async with dispatcher(route, hooks=[hooks]) as d:
        results = [r async for r in d.run(interleave(to_maxsight(400), to_perscom(100)))]
        states = d.states()
    sent = sum(maxsight.requests.values())
    assert sent <= 8, sent  # a few in flight while the first answers came back
    by = Counter((r.system, r.status) for r in results)
    assert by == {("maxsight", "failed"): 400, ("perscom", "applied"): 100}
    stopped = [r for r in results if r.system == "maxsight" and r.attempts == 0]
    assert len(stopped) >= 390
    assert stopped[0].error is not None
    return stopped[0].error, hooks, states


async def test_refused_credentials_stop_the_system_after_three_records() -> None:
    error, _, states = await _every_maxsight_answer(
        HttpResponse.from_json(401, {"message": "bad api key"})
    )
    assert "maxsight (maxsight.example:443)" in error
    assert "401" in error
    assert "not sent" in error
    assert states == {"maxsight": "stopped", "perscom": "running"}


async def test_redirects_stop_the_system_after_three_records_and_say_where_they_point() -> None:
    """A URL that is not the API's (http:// for https://, a sign-on page in the way): every
    answer is a redirect, which is not followed. Like refused credentials, it is the
    system's configuration, not the changes: after three records in a row the system
    stops, its other changes not sent, and the reason says where the redirects point."""
    moved = HttpResponse(301, {"Location": "https://maxsight.example/api/?session=s3cret"}, b"")
    error, hooks, states = await _every_maxsight_answer(moved)
    assert error.startswith("maxsight (maxsight.example:443): stopped: ")
    assert "HTTP 301, redirected to https://maxsight.example/api/?..." in error
    assert "for 3 records in a row; its other changes were not sent" in error
    assert "s3cret" not in error
    assert [(s.system, s.cause) for s in hooks.stops] == [("maxsight", "redirected")]
    assert states == {"maxsight": "stopped", "perscom": "running"}


async def test_a_redirect_for_one_record_among_answers_does_not_stop_the_system() -> None:
    """One record that redirects (moved elsewhere) fails alone: the others' answers
    break the streak."""

    def one_moved(request: HttpRequest) -> HttpResponse | None:
        if re.search(r"/t3(?:[/?]|$)", request.url):
            return HttpResponse(308, {"Location": "/tasks/t33"}, b"")
        return None

    route = Route(maxsight=FakeMaxsight(fault=one_moved), perscom=FakePerscom())
    async with dispatcher(route) as d:
        results = [r async for r in d.run(to_maxsight(30))]
    failed = [r for r in results if r.status == "failed"]
    assert [r.record for r in failed] == ["t3"]
    assert "HTTP 308, redirected to /tasks/t33" in (failed[0].error or "")
    assert d.states() == {"maxsight": "running", "perscom": "running"}


class _SeeOtherMaxsight(FakeMaxsight):
    """Maxsight behind a front that takes each write and answers ``303 See Other`` to
    the task (the Post/Redirect/Get of many web frameworks)."""

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        answer = await super().__call__(request)
        if request.method == "PUT" and answer.status == 200:
            task = request.url.removeprefix(MAXSIGHT).split("/")[3]
            return HttpResponse(303, {"Location": f"{MAXSIGHT}/v5/tasks/{task}?s=x"}, b"")
        return answer


async def test_a_see_other_to_a_write_is_read_back_not_a_redirect() -> None:
    """A 303 to a write says the server took it and put its answer elsewhere: not a
    wrong URL (no stop, however many in a row), and not a failure. The record is read
    back: every change ends applied, each task written once."""
    fake = _SeeOtherMaxsight()
    hooks = Counting()
    async with dispatcher(Route(maxsight=fake), hooks=[hooks]) as d:
        results = [r async for r in d.run(to_maxsight(20))]
        states = d.states()
    assert {r.status for r in results} == {"applied"}, {r.error for r in results}
    assert all(fake.tasks[str(r.record)]["assignment"]["assigned_to_id"] == "eve" for r in results)
    assert set(fake.writes.values()) == {1}
    assert states == {"maxsight": "running"}
    assert hooks.stops == []
    assert {r.attempts for r in results} == {3}  # the read, the write, the read back


class _RaisingMaxsight(FakeMaxsight):
    """Maxsight whose adapter raises where ``bad`` says (a bug in a user's adapter)."""

    def __init__(self, bad: Any) -> None:
        super().__init__()
        self.bad = bad

    def adapter(self) -> Any:
        bad = self.bad

        class Raising(type(super().adapter())):  # type: ignore[misc]
            def outcome(self, change: Change, response: HttpResponse) -> Any:
                if bad(change):
                    raise KeyError("assignment")
                return super().outcome(change, response)

        return Raising(MAXSIGHT, "key", assigned_by="admin")


async def test_an_adapter_that_keeps_raising_stops_its_system_not_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    maxsight = _RaisingMaxsight(bad=lambda change: True)
    route = Route(maxsight=maxsight, perscom=FakePerscom())
    stops: list[StopEvent] = []

    class Heard(Hooks):
        def on_stop(self, event: StopEvent) -> None:
            stops.append(event)

    caplog.set_level(logging.WARNING, "patchassign.dispatch")
    async with dispatcher(route, hooks=Heard(), limits={"maxsight": Limits(concurrency=2)}) as d:
        results = [r async for r in d.run(interleave(to_maxsight(200), to_perscom(100)))]
    by = Counter((r.system, r.status) for r in results)
    assert by[("perscom", "applied")] == 100  # the other system went on
    raised = [r for r in results if r.error and "the Raising raised KeyError" in r.error]
    assert 3 <= len(raised) <= 4  # three records in a row, and one in flight beside them
    for r in raised:
        # The write was sent and answered, and nothing could say how: in doubt.
        assert (r.status, r.unconfirmed, r.writes) == ("failed", True, 1)
    rest = [r for r in results if r.system == "maxsight" and r not in raised]
    assert {r.status for r in rest} == {"unsent"}  # a resume sends them
    assert all(r.attempts == 0 for r in rest)
    assert rest[0].error is not None
    assert "maxsight (maxsight.example:443): stopped: its adapter (Raising) raised KeyError" in (
        rest[0].error
    )
    assert sum(maxsight.writes.values()) == len(raised)
    assert d.states()["maxsight"] == "stopped"
    assert [(e.system, e.cause, e.status) for e in stops] == [("maxsight", "adapter", "unsent")]
    tracebacks = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(tracebacks) == 1  # once, not once per change
    assert "Traceback" in tracebacks[0].getMessage()
    assert "KeyError: 'assignment'" in tracebacks[0].getMessage()


async def test_an_adapter_raising_on_one_odd_record_fails_only_that_change() -> None:
    maxsight = _RaisingMaxsight(bad=lambda change: change.record == "t7")
    route = Route(maxsight=maxsight)
    async with dispatcher(route) as d:
        results = [r async for r in d.run(to_maxsight(50))]
    by = Counter(r.status for r in results)
    assert by == {"applied": 49, "failed": 1}
    [odd] = [r for r in results if r.status == "failed"]
    assert odd.record == "t7"
    assert odd.unconfirmed
    assert d.states()["maxsight"] == "running"


async def test_an_adapter_that_cannot_combine_a_batch_sends_nothing_of_it() -> None:
    perscom = FakePerscom()

    class NoCombine(type(perscom.adapter())):  # type: ignore[misc]
        def combine(self, requests: list[HttpRequest], write: bool) -> HttpRequest:
            raise TypeError("cannot combine")

    adapter = NoCombine(PERSCOM, "tok", notifications=False)
    handler = Route(perscom=perscom)
    limits = {"perscom": Limits(concurrency=4, batch=10, linger=0.05)}
    async with Dispatcher(
        [adapter], transport=MockTransport(handler), limits=limits, retry=FAST, seed=1
    ) as d:
        results = [r async for r in d.run(to_perscom(60))]
    assert len(results) == 60
    raised = [r for r in results if r.error and "raised TypeError: cannot combine" in r.error]
    assert raised
    assert all(r.status == "failed" and not r.unconfirmed for r in raised)
    assert d.states()["perscom"] == "stopped"
    # Only a batch of one goes without combining: nothing else reached the server.
    assert sum(perscom.writes.values()) == sum(r.status == "applied" for r in results)


class _LatePerscom:
    """PERSCOM records (no version token) whose writes to ``late`` records are held past
    the client's timeout and applied afterwards, as a slow backend does; other writes are
    answered after ``delay``, reads at once."""

    def __init__(self, late: set[int], hold: float, delay: float) -> None:
        self.users = {i: 100 + i for i in range(1, 10)}
        self.writes: Counter[int] = Counter()
        self.late = late
        self.hold = hold
        self.delay = delay
        self.tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        last = request.url.rsplit("/", 1)[1]
        body = msgspec.json.decode(request.body or b"{}")
        if last == "batch":  # {"resources": {id: fields}}: a batch of one here
            writes = {int(k): v["user_id"] for k, v in body["resources"].items()}
        else:
            writes = {int(last): body["user_id"]} if request.method == "PATCH" else {}

        async def apply(after: float) -> None:
            await asyncio.sleep(after)
            for record, user in writes.items():
                self.users[record] = user
                self.writes[record] += 1

        if writes and self.late & set(writes):
            self.late -= set(writes)
            task = asyncio.create_task(apply(self.hold))  # lands, answered or not
            self.tasks.add(task)
            await asyncio.shield(task)
        elif writes:
            await apply(self.delay)
        records = [
            {"id": r, "user_id": self.users[r], "updated_at": "t"} for r in (writes or [int(last)])
        ]
        return HttpResponse.from_json(200, {"data": records if last == "batch" else records[0]})


@pytest.mark.parametrize("batch", [0, 2])
async def test_a_write_held_past_its_timeout_is_not_sent_again_after_a_wait_at_the_gate(
    batch: int,
) -> None:
    """A write without a version token may land until ``settle`` past its own request's
    timeout. The change's step was made before it waited for its system's only slot:
    the read-back must wait from when the write went out, or it finds the record as it
    was, and the write goes a second time (found in the chaos benchmark: 5 records)."""
    server = _LatePerscom(late={2}, hold=0.45, delay=0.25)
    adapter = PerscomAdapter(PERSCOM, "tok", notifications=False)
    policy = RetryPolicy(timeout=0.3, settle=0.3, base=0.01, cap=0.02, deadline=10.0)
    # Four requests/s, one at a time: record 2's write (alone, or in a batch of its own
    # behind records 1 and 3) waits a quarter of a second at the gate.
    limits = {"perscom": Limits(concurrency=2, rate=4.0, burst=1, batch=batch, linger=0.001)}
    changes = [Assign(system="perscom", record=r, to=str(200 + r)) for r in (1, 3, 2)]
    async with Dispatcher(
        [adapter], transport=MockTransport(server), limits=limits, retry=policy, seed=1
    ) as d:
        results = {r.record: r for r in await d.send_all(changes)}
    await asyncio.sleep(0.5)
    assert server.writes == {1: 1, 2: 1, 3: 1}, server.writes  # not 2 for record 2
    assert results[2].status == "applied"
    assert results[2].writes == 1
    assert server.users[2] == 202


async def test_states_show_a_throttled_system_while_it_runs() -> None:
    throttled = HttpResponse.from_json(429, {"message": "slow down"}, {"Retry-After": "1"})
    maxsight = FakeMaxsight(fault=lambda r: throttled)
    route = Route(maxsight=maxsight, perscom=FakePerscom())
    seen: set[str] = set()
    async with dispatcher(route, retry=RetryPolicy(deadline=3.0, base=0.01, cap=0.05)) as d:
        async for r in d.run(interleave(to_maxsight(20), to_perscom(5))):
            seen.add(d.states()["maxsight"])
            assert r.system == "maxsight" or r.status == "applied"
    assert seen & {"throttled", "paused"}, seen


async def test_an_unreachable_system_stops_after_the_outage_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def down(request: HttpRequest) -> HttpResponse:
        raise ConnectError("cannot connect: [Errno 111] Connection refused", host="m:443")

    route = Route(maxsight=FakeMaxsight(fault=down), perscom=FakePerscom())
    policy = RetryPolicy(base=0.01, timeout=1.0, deadline=300.0, outage=0.8)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, "patchassign.dispatch"):
        async with dispatcher(route, retry=policy) as d:
            results = [r async for r in d.run(interleave(to_maxsight(200), to_perscom(50)))]
            assert "maxsight" in d.stopped()
    elapsed = time.monotonic() - t0
    # The pause names the system and its host once, and says it once.
    assert (
        "maxsight (maxsight.example:443): cannot connect: [Errno 111] Connection refused; "
        "pausing its requests for"
    ) in caplog.text
    by = Counter((r.system, r.status) for r in results)
    assert by == {("maxsight", "unsent"): 200, ("perscom", "applied"): 50}
    assert elapsed < 30  # the outage budget, not the 300 s deadline
    error = next(r.error for r in results if r.system == "maxsight")
    assert error is not None
    assert "unreachable" in error
    assert "maxsight.example:443" in error


async def test_counts_are_answers_per_system_and_status() -> None:
    """``d.counts[(system, status)]``: every request once, by its answer; 0 is none."""
    tries: Counter[str] = Counter()

    def first_lost(request: HttpRequest) -> HttpResponse | None:
        record = request.url.rsplit("/", 1)[1]
        tries[record] += 1
        if record in {"1", "2"} and tries[record] == 1:
            raise ResponseTimeout("no answer within 1s", host="perscom.example:443")
        if record == "3" and tries[record] == 1:
            return HttpResponse.from_json(503, {})
        return None

    route = Route(perscom=FakePerscom(fault=first_lost), maxsight=FakeMaxsight())
    async with dispatcher(route) as d:
        results = [r async for r in d.run(interleave(to_perscom(5), to_maxsight(4)))]
        counts = d.counts
    assert Counter(r.status for r in results) == {"applied": 9}
    # PERSCOM: writes 3 (after its 503), 4 and 5 answered 200; the writes of 1 and 2 got
    # no answer, and their read-backs (200) found them in place: nothing resent
    assert counts == {
        ("perscom", 200): 3 + 2,
        ("perscom", 503): 1,
        ("perscom", 0): 2,
        ("maxsight", 200): 8,  # a read and a write each
    }


async def test_a_dns_or_tls_failure_stops_the_system_at_once() -> None:
    calls = 0

    def bad_tls(request: HttpRequest) -> HttpResponse:
        nonlocal calls
        calls += 1
        raise SetupError("TLS failed: certificate verify failed", host="m:443")

    route = Route(maxsight=FakeMaxsight(fault=bad_tls), perscom=FakePerscom())
    async with dispatcher(route) as d:
        results = [r async for r in d.run(interleave(to_maxsight(100), to_perscom(10)))]
    assert calls <= 4  # the first window, not one per change
    by = Counter((r.system, r.status) for r in results)
    assert by == {("maxsight", "failed"): 100, ("perscom", "applied"): 10}
    assert all("certificate" in (r.error or "") for r in results if r.system == "maxsight")


async def test_a_retry_after_of_an_hour_ends_that_systems_changes_unsent() -> None:
    throttled = HttpResponse.from_json(429, {"message": "slow down"}, {"Retry-After": "3600"})
    route = Route(maxsight=FakeMaxsight(fault=lambda r: throttled), perscom=FakePerscom())
    async with dispatcher(route, retry=RetryPolicy(deadline=60.0)) as d:
        results = [r async for r in d.run(interleave(to_maxsight(100), to_perscom(100)))]
    by = Counter((r.system, r.status) for r in results)
    assert by == {("maxsight", "unsent"): 100, ("perscom", "applied"): 100}


async def test_a_deadline_bounds_the_wait_for_a_paused_system() -> None:
    """Most answers 429 with Retry-After 2 s: the system pauses; a change with a 0.5 s
    deadline ends by then (plus at most one request timeout), unsent."""
    throttled = HttpResponse.from_json(429, {"message": "slow down"}, {"Retry-After": "2"})
    route = Route(maxsight=FakeMaxsight(fault=lambda r: throttled))
    policy = RetryPolicy(deadline=0.5, timeout=0.2, base=0.01)
    async with dispatcher(route, retry=policy) as d:
        results = [r async for r in d.run(to_maxsight(50))]
    assert {r.status for r in results} == {"unsent"}
    assert max(r.elapsed for r in results) <= 0.5 + 0.2 + 0.1


class _SlowReadsAndWrites(FakeMaxsight):
    """Maxsight answering a read after ``read`` seconds and a write after ``write``."""

    def __init__(self, read: float, write: float) -> None:
        super().__init__()
        self.pauses = {"GET": read, "PUT": write}

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(self.pauses[request.method])
        return await super().__call__(request)


async def test_a_write_sent_near_the_deadline_keeps_its_whole_timeout() -> None:
    """A read takes 0.25 s of a 0.35 s deadline; the write goes with 0.1 s left and the
    server answers it in 0.15 s. Its timeout was cut to what was left: it timed out by
    our own doing, the change failed with its write unconfirmed. A write keeps its whole
    timeout (a change ends by its deadline plus one request timeout); a read near the
    deadline is still cut to what is left."""
    fake = _SlowReadsAndWrites(read=0.25, write=0.15)
    policy = RetryPolicy(deadline=0.35, timeout=1.0, base=0.01)
    async with dispatcher(Route(maxsight=fake), retry=policy) as d:
        r = await d.send(to_maxsight(1)[0])
    assert r.status == "applied", r.error
    assert not r.unconfirmed
    assert fake.writes == Counter({"t0": 1})
    assert r.elapsed < 0.35 + 1.0

    slow_read = _SlowReadsAndWrites(read=0.5, write=0.0)
    async with dispatcher(Route(maxsight=slow_read), retry=policy) as d:
        r = await d.send(to_maxsight(1)[0])
    assert r.status == "unsent"  # nothing was written: a resume sends it
    assert r.error is not None
    assert "deadline" in r.error
    assert r.elapsed < 0.35 + 0.1  # the read's timeout was what was left: 0.35 s
    assert not slow_read.writes


async def test_every_write_answered_500_is_tried_at_most_attempts_times() -> None:
    """Reads succeed, writes fail: a successful read does not reset the count."""

    def broken_writes(request: HttpRequest) -> HttpResponse | None:
        if request.method == "PUT":
            return HttpResponse.from_json(500, {"message": "oops"})
        return None

    maxsight = FakeMaxsight(fault=broken_writes)
    route = Route(maxsight=maxsight)
    policy = RetryPolicy(attempts=4, base=0.001, cap=0.002, deadline=30.0)
    async with dispatcher(route, retry=policy) as d:
        results = [r async for r in d.run(to_maxsight(10))]
    assert {r.status for r in results} == {"failed"}
    assert all(r.unconfirmed for r in results)  # a 500 may have applied
    for task in (f"t{i}" for i in range(10)):
        assert maxsight.requests["PUT", task] == 4


# -- hooks ----------------------------------------------------------------------------------


class Counting(Hooks):
    def __init__(self) -> None:
        self.results: Counter[str] = Counter()
        self.retries: list[RetryEvent] = []
        self.slowdowns: list[SlowdownEvent] = []
        self.stops: list[StopEvent] = []

    def on_result(self, result: Result) -> None:
        self.results[result.status] += 1

    def on_retry(self, event: RetryEvent) -> None:
        self.retries.append(event)

    def on_slowdown(self, event: SlowdownEvent) -> None:
        self.slowdowns.append(event)

    def on_stop(self, event: StopEvent) -> None:
        self.stops.append(event)


class Broken(Hooks):
    def on_result(self, result: Result) -> None:
        raise RuntimeError("a metrics backend is down")


async def test_hooks_hear_of_results_retries_slowdowns_and_stops() -> None:
    n = 0

    def flaky(request: HttpRequest) -> HttpResponse | None:
        nonlocal n
        n += 1
        if n <= 30:
            return HttpResponse.from_json(429, {"message": "busy"}, {"Retry-After": "0"})
        return None

    refused = HttpResponse.from_json(401, {"message": "no"})
    route = Route(maxsight=FakeMaxsight(fault=flaky), perscom=FakePerscom(fault=lambda r: refused))
    hooks = Counting()
    async with dispatcher(route, hooks=[hooks, Broken()]) as d:
        results = [r async for r in d.run([*to_maxsight(20), *to_perscom(20)])]
    assert sum(hooks.results.values()) == len(results) == 40
    assert hooks.results == {"applied": 20, "failed": 20}
    assert hooks.retries
    assert all(e.system == "maxsight" and e.wait >= 0 for e in hooks.retries)
    assert hooks.slowdowns
    assert hooks.slowdowns[0].host == "maxsight.example:443"
    assert [(s.system, s.cause, s.status) for s in hooks.stops] == [("perscom", "auth", "failed")]


def test_an_async_hook_is_refused_not_left_unawaited() -> None:
    # Called and never awaited, an ``async def on_result`` counted nothing, silently.
    class Async(Hooks):
        async def on_result(self, result: Result) -> None:  # type: ignore[override]
            pass

    with pytest.raises(ConfigError, match=r"hooks: Async.on_result is async"):
        Dispatcher([FakePerscom().adapter()], hooks=Async())


# -- preflight ------------------------------------------------------------------------------


async def test_preflight_reads_one_record_per_system_and_says_what_is_wrong() -> None:
    def refuse(request: HttpRequest) -> HttpResponse:
        return HttpResponse.from_json(401, {"error": {"message": "Unauthenticated"}})

    maxsight = FakeMaxsight()
    route = Route(maxsight=maxsight, perscom=FakePerscom(fault=refuse))
    async with dispatcher(route) as d:
        checks = await d.check(to_maxsight(3, first=7))
    assert checks["maxsight"].ok
    assert checks["maxsight"].latency is not None
    assert maxsight.requests == {("GET", "t7"): 1}  # the plan's first record, read only
    assert not checks["perscom"].ok
    assert checks["perscom"].authenticated is False
    assert checks["perscom"].error is not None
    assert "credentials refused" in checks["perscom"].error


async def test_preflight_takes_one_system_by_name_and_refuses_what_is_not_changes() -> None:
    route = Route(maxsight=FakeMaxsight(), perscom=FakePerscom())
    async with dispatcher(route) as d:
        # one name by itself: it was read letter by letter ("p", "e", ... not configured)
        assert list(await d.check(systems="perscom")) == ["perscom"]
        with pytest.raises(InvalidChange, match=r"the input is not changes \(got int"):
            await d.check(5)  # type: ignore[arg-type]
        with pytest.raises(InvalidChange, match="item 1 of the input is not a change but a dict"):
            await d.check([to_perscom(1)[0], {"system": "perscom"}])  # type: ignore[list-item]


async def test_a_system_whose_limits_allow_nothing_now_is_not_checked_and_not_failed() -> None:
    # (With limits shared by more workers than a system's slots, a worker may have none.)
    route = Route(maxsight=FakeMaxsight(), perscom=FakePerscom())
    async with dispatcher(route) as d:
        d.resize("perscom", 0, None)
        checks = await asyncio.wait_for(d.check(), 5)  # at once, not after a minute
    assert checks["maxsight"].ok
    perscom = checks["perscom"]
    assert not perscom.ok
    assert perscom.error is None
    assert perscom.skipped is not None
    assert "its limits give this process no request now" in perscom.skipped
    assert "perscom" not in route.order  # nothing was sent to it


async def test_preflight_of_an_unreachable_system() -> None:
    def down(request: HttpRequest) -> HttpResponse:
        raise ConnectError("cannot connect: refused", host="m:443")

    route = Route(maxsight=FakeMaxsight(fault=down))
    async with dispatcher(route) as d:
        checks = await d.check()
    assert not checks["maxsight"].reachable
    assert "refused" in (checks["maxsight"].error or "")


# -- MockTransport itself ---------------------------------------------------------------------


async def test_mock_transport_times_out_a_slow_async_handler() -> None:
    async def slow(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(5)
        raise AssertionError("not reached")

    t = MockTransport(slow)
    req = HttpRequest("GET", "https://x.example/a", {})
    with pytest.raises(ResponseTimeout) as e:
        await t.send(req, timeout=0.05)
    assert e.value.sent
    assert t.requests == [req]


async def test_mock_transport_refuses_a_handler_that_returns_something_else() -> None:
    t = MockTransport(lambda r: {"status": 200})  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="must return an HttpResponse"):
        await t.send(HttpRequest("GET", "https://x.example/a", {}), timeout=1)


async def test_a_timeout_on_a_write_is_read_back_before_any_resend() -> None:
    """The write went out and its answer was lost; the read shows it applied."""
    maxsight = FakeMaxsight()
    lost = 0

    async def handler(request: HttpRequest) -> HttpResponse:
        nonlocal lost
        answer = await maxsight(request)
        if request.method == "PUT" and not lost:
            lost += 1
            raise ResponseTimeout("no answer", host="m:443")
        return answer

    async with Dispatcher([maxsight.adapter()], transport=MockTransport(handler), retry=FAST) as d:
        r = await d.send(to_maxsight(1)[0])
    assert r.status == "applied"
    assert not r.unconfirmed
    assert maxsight.writes["t0"] == 1  # applied once, found in place, not resent


async def test_one_record_written_two_ways_keeps_plan_order() -> None:
    """Kintone's "1:5" and 5 (with app 1 configured), PERSCOM's 5 and "05": one record,
    so the second change waits for the first and the last line wins."""
    from patchassign import Assign
    from patchassign.systems import KintoneAdapter

    seen: list[tuple[str, Any]] = []

    async def handler(request: HttpRequest) -> HttpResponse:
        import msgspec

        if "kintone" in request.url:
            if request.method == "GET":
                await asyncio.sleep(0.01)
                rec = {"$revision": {"value": "1"}, "A": {"type": "STATUS_ASSIGNEE", "value": []}}
                return HttpResponse.from_json(200, {"record": rec})
            body = msgspec.json.decode(request.body or b"{}")
            seen.append(("kintone", body["assignees"][0]))
            return HttpResponse.from_json(200, {"revision": "2"})
        await asyncio.sleep(0.01 if request.url.endswith("/5") else 0)
        seen.append(("perscom", msgspec.json.decode(request.body or b"{}")["user_id"]))
        return HttpResponse.from_json(200, {"data": {"id": 5}})

    kintone = KintoneAdapter("https://kintone.example", api_token="t", app=1)
    perscom = FakePerscom().adapter()
    plan = [
        Assign(system="kintone", record="1:5", to=["first"]),
        Assign(system="kintone", record=5, to=["second"]),
        Assign(system="perscom", record=5, to="1"),
        Assign(system="perscom", record="05", to="2"),
    ]
    async with Dispatcher([kintone, perscom], transport=MockTransport(handler), retry=FAST) as d:
        results = [r async for r in d.run(plan)]
    assert {r.status for r in results} == {"applied"}
    assert [v for s, v in seen if s == "kintone"] == ["first", "second"]
    assert [v for s, v in seen if s == "perscom"] == [1, 2]


async def test_a_204_after_an_applied_write_is_read_back_and_reported_applied() -> None:
    maxsight = FakeMaxsight()

    async def handler(request: HttpRequest) -> HttpResponse:
        answer = await maxsight(request)
        if request.method == "PUT" and answer.status == 200:
            return HttpResponse(204, {})  # applied, but no body to prove it
        return answer

    async with Dispatcher([maxsight.adapter()], transport=MockTransport(handler), retry=FAST) as d:
        r = await d.send(to_maxsight(1)[0])
    assert r.status == "applied"  # found in place by the read-back, not "failed"
    assert r.writes == 1
    assert maxsight.writes["t0"] == 1


async def test_stopped_twice_with_writes_in_flight_every_change_is_accounted_for() -> None:
    """Issue: a second SIGINT while writes were in flight left them out of the results
    (and so out of the journal and the report)."""
    started = asyncio.Event()
    release = asyncio.Event()
    maxsight = FakeMaxsight()

    puts = 0

    async def handler(request: HttpRequest) -> HttpResponse:
        nonlocal puts
        if request.method == "PUT":
            puts += 1
            started.set()
            await release.wait()  # the write hangs
        return await maxsight(request)

    async with Dispatcher(
        [maxsight.adapter()], transport=MockTransport(handler), retry=FAST, concurrency=4
    ) as d:
        run = d.run(to_maxsight(20))

        async def consume() -> None:
            async for _ in run:
                pass

        task = asyncio.create_task(consume())
        await started.wait()
        await asyncio.sleep(0.05)  # the first window's writes are in flight
        task.cancel()  # Ctrl-C: the run waits for the requests in flight...
        await asyncio.sleep(0.05)
        task.cancel()  # ...and Ctrl-C again
        with pytest.raises(asyncio.CancelledError):
            await task
        release.set()
    in_flight = [r for r in run.stopped if r.writes or r.unconfirmed]
    assert in_flight, run.stopped
    assert all(r.status == "cancelled" for r in in_flight)
    assert all(r.unconfirmed for r in in_flight)  # written, not confirmed: resume reads them
    assert len(in_flight) == puts == 4  # the lane's first window


async def test_resize_changes_a_lanes_limits_while_it_runs() -> None:
    """The seam shared limits use: 0 sends nothing, a raised limit is used at once, a
    lowered one lets what is in flight finish and starts nothing above it."""
    gate = asyncio.Event()
    seen: list[int] = []
    route = Route(perscom=FakePerscom(), maxsight=FakeMaxsight())

    async def handler(request: HttpRequest) -> HttpResponse:
        seen.append(d.in_flight("maxsight"))
        await gate.wait()
        return await route(request)

    d = Dispatcher(
        [f.adapter() for f in route.fakes.values()],
        transport=MockTransport(handler, record=False),
        retry=FAST,
        limits={"maxsight": Limits(concurrency=6)},
    )
    async with d:
        d.resize("maxsight", 0, None)
        run = d.run(to_maxsight(12))
        results: list[Result] = []
        reader = asyncio.ensure_future(_collect(run, results))
        await asyncio.sleep(0.05)
        assert seen == []  # nothing may go
        assert d.in_flight("maxsight") == 0
        d.resize("maxsight", 3, None)
        await asyncio.sleep(0.05)
        assert len(seen) == 3  # three at once, no more
        assert max(seen) <= 3
        d.resize("maxsight", 1, 50.0)  # lower while three are in flight
        gate.set()
        await asyncio.wait_for(reader, 5)
        await run.aclose()
    assert [r.status for r in results] == ["applied"] * 12
    assert max(seen[3:]) <= 1  # after the three, one at a time
    with pytest.raises(ConfigError):
        d.resize("maxsight", -1, None)
    # NaN passed every "<= 0" check and paced the lane at NaN; a name it has no lane
    # for was a KeyError, a string a TypeError.
    bad: list[tuple[Any, Any]] = [(4, float("nan")), (4, float("inf")), ("4", None), (True, None)]
    for args in bad:
        with pytest.raises(ConfigError, match="limits of 'maxsight': concurrency 0 to 10000"):
            d.resize("maxsight", *args)
    with pytest.raises(ConfigError, match=r"no system 'jira' here \(systems: maxsight, "):
        d.resize("jira", 4, None)
    with pytest.raises(ConfigError, match=r"no system 'jira' here"):
        d.in_flight("jira")


async def _collect(run: Any, out: list[Result]) -> None:
    out.extend([r async for r in run])


async def test_results_finished_but_not_taken_when_the_consumer_stops_are_in_stopped() -> None:
    """A consumer that stops early (``break``) after the first result: the changes that
    finished meanwhile (applied, but never handed over) are in ``run.stopped``, so every
    change that was sent is accounted for, as the consumer saw it or in ``stopped``."""
    route = Route(perscom=FakePerscom())
    plan = to_perscom(200)
    async with dispatcher(route, concurrency=16) as d:
        async with d.run(plan) as run:
            seen = []
            async for r in run:
                seen.append(r)
                await asyncio.sleep(0.05)  # a slow consumer: results pile up meanwhile
                if len(seen) == 2:
                    break
        sent = set(route.fakes["perscom"].writes)
    reported = {int(r.record) for r in seen} | {int(r.record) for r in run.stopped}
    assert len(sent) > 2  # more finished than the consumer took
    assert sent <= reported, sorted(sent - reported)
    assert all(r.status == "applied" for r in run.stopped if r.attempts)


class Bucket:
    """A server's own rate limit: a token bucket answering 429 with ``Retry-After: 1``
    (whole seconds, as HTTP gives them) when it is empty."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.refused = 0

    def __call__(self, request: HttpRequest) -> HttpResponse | None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None  # the fake answers
        self.refused += 1
        return HttpResponse.from_json(429, {"message": "slow down"}, {"Retry-After": "1"})


async def test_a_lane_learns_the_rate_a_server_allows() -> None:
    """Against a server's own limit (200 requests/s), halving the requests in flight is not
    enough: the lane paces itself under the rate that got through. Without it, 4 in
    flight to an instant server is still thousands a second: most answers were 429 and
    the lane paused for a second after every burst."""
    bucket = Bucket(rate=200.0, burst=10)
    route = Route(maxsight=FakeMaxsight(fault=bucket))  # no rate of its own configured
    hooks = Counting()
    async with dispatcher(route, retry=RetryPolicy(deadline=60.0), hooks=[hooks]) as d:
        assert d.paces() == {}
        results = [r async for r in d.run(to_maxsight(300))]  # a read and a write each
        lane = d._lanes["maxsight"]
        slowdowns = d.slowdowns()["maxsight"]
        answered = sum(d.counts.values())
        paces = d.paces()
    assert Counter(r.status for r in results) == {"applied": 300}
    assert lane.learned > 0  # it paced itself
    assert paces == {"maxsight": pytest.approx(lane.learned)}
    # The slowdown that learned it says the pace (a first one may have had nothing to go by)
    assert hooks.slowdowns[-1].rate is not None
    assert hooks.slowdowns[-1].rate > 0
    assert slowdowns <= 5, slowdowns
    assert bucket.refused < 0.25 * answered, (bucket.refused, answered)


async def test_a_pace_from_an_earlier_run_starts_the_lane_paced() -> None:
    """A resumed run learned its system's rate again from a burst of 429s and a pause.
    Given the pace an earlier run ended with, the lane starts at it, with no slowdown,
    and still climbs to what the server takes now (here more than that pace)."""
    runs = []
    for paces in ({}, {"maxsight": 150.0}):
        bucket = Bucket(rate=200.0, burst=10)
        route = Route(maxsight=FakeMaxsight(fault=bucket))
        async with dispatcher(route, retry=RetryPolicy(deadline=60.0), paces=paces) as d:
            assert d.paces() == paces  # said from the start
            results = [r async for r in d.run(to_maxsight(300))]
            runs.append((d.slowdowns()["maxsight"], bucket.refused, d.paces()["maxsight"]))
            # What to keep for the next run: never past what got through (the server's
            # 200/s and its burst of 10, over 2 s), nor past the pace.
            settled = d.settled_paces()["maxsight"]
            assert settled <= min(205.0, d.paces()["maxsight"]), (settled, d.paces())
            assert settled > 100.0
        assert Counter(r.status for r in results) == {"applied": 300}
    (cold_slowdowns, _, _), (slowdowns, refused, pace) = runs
    assert cold_slowdowns >= 1  # without it: a burst, 429s, a pause for the Retry-After
    assert slowdowns == 0, runs  # no pause
    assert refused < 0.05 * 600, runs  # (the climb's last step, and the slow climb's)
    assert pace > 170.0, runs  # it climbed from 150 towards the server's 200


async def test_paced_requests_woken_late_by_a_stall_take_new_turns() -> None:
    """This process held up (a stall of the event loop) wakes every paced request whose
    turn came meanwhile at once: together they reach the server as a burst, and a small
    bucket refuses most of it, every stall. Each such request takes a new turn instead,
    at the pace, once."""
    bucket = Bucket(rate=400.0, burst=4)
    route = Route(maxsight=FakeMaxsight(fault=bucket))

    async def stalls() -> None:
        while True:
            await asyncio.sleep(0.2)
            time.sleep(0.03)  # the event loop held up 30 ms (a GC pause, a neighbour)

    async with dispatcher(route, retry=RetryPolicy(deadline=60.0), paces={"maxsight": 300.0}) as d:
        lane = d._lanes["maxsight"]
        lane._climbing = False  # a settled pace: 300 a second, under the server's 400
        stalling = asyncio.create_task(stalls())
        try:
            results = [r async for r in d.run(to_maxsight(300))]  # 600 requests: 2 s
        finally:
            stalling.cancel()
    assert Counter(r.status for r in results) == {"applied": 300}
    assert d.slowdowns()["maxsight"] == 0
    assert bucket.refused <= 6, bucket.refused  # 48 before: a burst of 429s per stall


async def test_a_seeded_pace_climbs_only_as_fast_as_the_answers_follow() -> None:
    """Requests waiting their turn keep the pace they got: a step of the climb shows in
    the answers only after them. Climbing while the answers came at half the pace ran it
    far past the server's limit (50 to 94 requests/s against 60) before the first 429,
    and the resumed run met a burst of them and a slowdown it had its pace to avoid."""
    bucket = Bucket(rate=60.0, burst=5)
    route = Route(maxsight=FakeMaxsight(fault=bucket))
    async with dispatcher(route, retry=RetryPolicy(deadline=60.0), paces={"maxsight": 50.0}) as d:
        results = [r async for r in d.run(to_maxsight(120))]  # a read and a write each
        slowdowns = d.slowdowns()["maxsight"]
        pace = d.paces()["maxsight"]
    assert Counter(r.status for r in results) == {"applied": 120}
    assert slowdowns == 0, (slowdowns, bucket.refused, pace)
    assert bucket.refused <= 10, (bucket.refused, pace)  # the climb's last step (16 before)
    assert 55.0 < pace < 75.0, pace  # it climbed to about the server's 60


async def test_a_system_with_little_work_left_keeps_its_pace_for_the_next_run() -> None:
    """The answers of the last 2 s say what got through only while 429s came: a system
    whose work ran out (its answers a trickle, as at the end of a run, or none) keeps
    the pace it learned. Taking the trickle for the rate made a resume start at a few
    requests/s, or unpaced when nothing had come for 2 s."""
    bucket = Bucket(rate=200.0, burst=10)
    route = Route(maxsight=FakeMaxsight(fault=bucket))
    async with dispatcher(route, retry=RetryPolicy(deadline=60.0)) as d:
        results = await d.send_all(to_maxsight(300))
        assert d._lanes["maxsight"].learned > 0  # it paced itself
        for i in range(300, 312):  # the tail: one change now and then
            results.append(await d.send(to_maxsight(1, first=i)[0]))
            await asyncio.sleep(0.15)
        pace = d.paces()["maxsight"]
        assert d.settled_paces() == {"maxsight": pytest.approx(pace)}
        await asyncio.sleep(2.1)
        assert d.settled_paces() == {"maxsight": pytest.approx(pace)}  # none for 2 s
    assert Counter(r.status for r in results) == {"applied": 312}
    assert pace > 100.0


@pytest.mark.parametrize("pace", [0.0, -1.0, float("nan"), float("inf"), "fast"])
def test_a_pace_that_is_not_a_rate_is_refused(pace: Any) -> None:
    with pytest.raises(ConfigError, match=r"paces\['maxsight'\] must be requests/s above 0"):
        Dispatcher([FakeMaxsight().adapter()], paces={"maxsight": pace})


class Unlucky:
    """429s at random, on a share of the requests whatever the rate (``Retry-After: 0``):
    sending slower lets no larger share through."""

    def __init__(self, share: float, seed: int) -> None:
        self.share = share
        self.random = random.Random(seed)
        self.refused = 0

    def __call__(self, request: HttpRequest) -> HttpResponse | None:
        if self.random.random() >= self.share:
            return None
        self.refused += 1
        return HttpResponse.from_json(429, {"message": "busy"}, {"Retry-After": "0"})


async def test_a_lane_drops_a_pace_that_429s_do_not_follow() -> None:
    """Half the answers refused at random: each slowdown would measure half of the rate it
    sent at and pace slower again, down to one request a second (300 changes: minutes,
    past their deadline). Once pacing slower lets no larger share through, the lane
    stops pacing and only halves what it has in flight."""
    unlucky = Unlucky(share=0.5, seed=5)
    route = Route(maxsight=FakeMaxsight(fault=unlucky))
    retry = RetryPolicy(deadline=30.0, attempts=50, base=0.001, cap=0.01)
    async with dispatcher(route, retry=retry) as d:
        results = [r async for r in d.run(to_maxsight(300))]
        lane = d._lanes["maxsight"]
        slowdowns = d.slowdowns()["maxsight"]
    assert Counter(r.status for r in results) == {"applied": 300}
    assert unlucky.refused > 300  # it was a storm
    assert slowdowns >= 2  # the pace was tried, and dropped
    assert lane.learned == 0.0


def _lane_against(
    lane: Any, seconds: float, answer: Any, gap: float = 0.0005
) -> list[tuple[float, bool]]:
    """Drive a lane in virtual time, as the dispatcher does with an instant server and
    always more work: each request goes as soon as the lane's pace and pauses let it (at
    most one each ``gap`` seconds: 2,000 a second); ``answer(now)`` says whether the
    server took it. Returns ``(time, refused)`` per request."""
    now, sent = 0.0, []
    while now < seconds:
        now = max(now + max(lane._interval, gap), lane.paused_until)
        if answer(now):
            if not lane.calm:
                lane.answered(now)
            sent.append((now, False))
        else:
            lane.throttled(1.0, now)
            sent.append((now, True))
    return sent


def _burst_of_429s(at: float, n: int, then: Any) -> Any:
    """``then``'s answers, but the ``n`` requests in a row from ``at`` seconds on are
    refused: a burst that reached the server together after a stall."""
    refused = 0

    def answer(now: float) -> bool:
        nonlocal refused
        if now >= at and refused < n:
            refused += 1
            return False
        return bool(then(now))

    return answer


def _token_bucket(rate: float, burst: int = 10) -> Any:
    state = {"tokens": float(burst), "last": 0.0}

    def take(now: float) -> bool:
        state["tokens"] = min(burst, state["tokens"] + (now - state["last"]) * rate)
        state["last"] = now
        if state["tokens"] >= 1.0:
            state["tokens"] -= 1.0
            return True
        return False

    return take


def _new_lane() -> Any:
    from patchassign.dispatch import _Lane

    return _Lane(FakeMaxsight().adapter(), Limits(concurrency=16), RetryPolicy().slowdown)


@pytest.mark.parametrize("rate", [200.0, 1000.0])
def test_a_rate_measured_in_a_hurry_climbs_to_the_servers_limit(rate: float) -> None:
    """The first slowdown measures the rate within milliseconds of the first 429s: 99
    requests/s against a limit of 200, 180 against 1,000. Climbing two requests/s per
    second from there took minutes (1,000/s: still 200 after 11 s). Until the next 429,
    the pace climbs by a tenth every quarter second; the first 429 steps it back."""
    lane = _new_lane()
    sent = _lane_against(lane, 8.0, _token_bucket(rate))
    last = [refused for t, refused in sent if t >= 7.0]
    assert lane.slowdowns == 1
    assert last.count(False) >= 0.95 * rate  # the server's whole rate, within seconds
    assert lane.learned < 1.2 * rate  # not far past it


def test_the_fast_climb_ends_at_the_first_429_one_step_back() -> None:
    lane = _new_lane()
    # 200 answers a second, then a storm of 429s within 10 ms: a measure in a hurry.
    t = 0.0
    for _ in range(10):
        t += 0.001
        lane.answered(t)
    while not lane.slowdowns:
        t += 0.0005
        lane.throttled(1.0, t)
    measured = lane.learned
    assert lane._climbing
    assert measured > 0
    t = lane.paused_until
    for _ in range(int(2.0 * measured)):  # two seconds at the pace: it climbs
        t += lane._interval
        lane.answered(t)
    before_step = lane._climbed_from
    assert lane.learned > 1.5 * measured
    assert lane.learned == pytest.approx(before_step * 1.1, rel=0.01)
    lane.throttled(1.0, t + 0.001)  # the limit: back one step, then the slow climb only
    assert not lane._climbing
    assert lane.learned == before_step
    for _ in range(100):
        t += lane._interval
        lane.answered(t)
    assert lane.learned == pytest.approx(before_step + 100 * 2.0 / before_step, rel=0.02)


def test_a_climb_stopped_by_a_lone_burst_of_429s_goes_on() -> None:
    """A burst of requests that reached the server together (it, or this process, held up
    for some milliseconds) is refused by a small bucket far under its rate. The climb
    stopped there for good, and the lane stayed at a quarter of the server's rate (261
    against 1,000/s); it now goes on after 2 s without 429s, and ends once a 429 comes
    again at a pace one came at before."""
    lane = _new_lane()
    sent = _lane_against(lane, 12.0, _burst_of_429s(2.0, 15, _token_bucket(1000.0)))
    late = [refused for t, refused in sent if t >= 10.5]
    assert late.count(False) >= 0.9 * 1000 * 1.5
    assert sum(refused for t, refused in sent if t >= 2.1) < 30  # the limit, met once more
    assert not lane._climbing
    assert lane._ceiling == 0.0  # ... at a pace it met a 429 at before: the end


def test_a_bucket_of_a_seconds_worth_is_measured_once_it_runs_dry() -> None:
    """A server whose bucket holds a second's worth of its 1,000 requests/s lets the
    lane's first 1,700 a second through for about a second and a half: the lane is calm
    by then and notes nothing. The first slowdown measured the answers it had noted,
    those of its slow start a second before, over all that time: 38 requests/s, and the
    lane stayed at a tenth of the server's rate. It measures what gets through once the
    429s come (the bucket is dry: its rate)."""
    lane = _new_lane()
    sent = _lane_against(lane, 12.0, _token_bucket(1000.0, burst=1000), gap=1 / 1700)
    late = [refused for t, refused in sent if t >= 6.0]
    assert lane.slowdowns == 1
    assert 900.0 <= lane.learned <= 1050.0
    assert late.count(False) >= 0.9 * 1000 * 6
    assert sum(late) < 0.01 * len(late)


@pytest.mark.parametrize("rate", [20.0, 50.0, 100.0])
def test_a_bucket_refilled_during_a_pause_is_measured_over_the_pause(rate: float) -> None:
    """A bucket of a second's worth refills during the pause of a slowdown (``Retry-After:
    1``); right after it, a burst of the pause's worth gets through within milliseconds.
    Measured from when the pause ended, that was 108 requests/s against 50 (20: 108), and
    it took four or five slowdowns, each a pause, to come down. Measured from when the
    pause began, it is about the server's rate at the first try. (The fast climb from a
    measure taken in a hurry then runs past the limit once, as far as the bucket, full
    again after the pause, hides it.)"""
    lane = _new_lane()
    learned: list[float] = []
    bucket = _token_bucket(rate, burst=int(rate))

    def answer(now: float) -> bool:
        if len(learned) < lane.slowdowns:
            learned.append(lane.learned)
        return bool(bucket(now))

    sent = _lane_against(lane, 12.0, answer)
    measured = next(x for x in learned if x)
    assert 0.8 * rate <= measured <= 1.05 * rate, learned
    assert lane.slowdowns <= 4, learned
    assert sum(not refused for t, refused in sent if t >= 6.0) >= 0.9 * rate * 6


def test_a_paced_lane_takes_a_burst_of_429s_as_a_share_of_its_quarter_second() -> None:
    """Seventeen 429s in a row at 700 requests/s (a stall of some 25 ms) after seconds
    without one were a share of twenty answers: two slowdowns, pauses, and the pace cut
    to 630. They are a share of the quarter second's 175: no slowdown."""
    lane = _new_lane()
    lane.seed(700.0)
    lane._climbing = False  # a settled pace
    _lane_against(lane, 5.0, _burst_of_429s(3.0, 17, lambda now: True))
    assert lane.slowdowns == 0
    assert lane.learned >= 700.0


def test_a_lane_past_a_limit_by_less_than_the_slowdowns_share_learns_a_pace() -> None:
    """An unpaced lane sending 1,200 requests/s to a server that takes 1,000: a sixth of
    the answers are 429s, steadily under the slowdown's threshold (30%), so no pace was
    ever learned and 200 requests a second were refused for the whole run (each change
    among them waiting out its ``Retry-After``). The lane tries a pace under what got
    through, and keeps it as the 429s stop."""
    lane = _new_lane()
    sent = _lane_against(lane, 30.0, _token_bucket(1000.0), gap=1 / 1200)
    late = [refused for t, refused in sent if t >= 10.0]
    assert lane.slowdowns == 0
    assert 900.0 <= lane.learned <= 1100.0
    assert sum(late) < 0.01 * len(late)  # against 16.7% before
    assert late.count(False) >= 0.95 * 1000 * 20  # as much got through


def test_a_pace_ending_in_429s_keeps_the_rate_before_the_last_of_them() -> None:
    """The last changes of a run whose last requests met 429s wait out the
    ``Retry-After`` with nothing else to send: the answers of the last 2 s are a
    second of work and a second of waiting. The rate before the last 429 is what got
    through; over the last 2 s, half of it (a resume then started at 100 against 200)."""
    lane = _new_lane()
    lane.seed(250.0)
    t = 0.0
    while t < 3.0:  # the server takes 200/s of the lane's 250: the rest are 429s
        t += 1 / 250
        if int(t * 250) % 5:
            lane.answered(t)
        else:
            lane.throttled(1.0, t)
    kept = lane.held(t)
    assert kept == pytest.approx(200.0, rel=0.05)
    for _ in range(3):  # the retries, after a second's wait
        t += 0.3
        lane.answered(t)
    assert lane.held(t) == pytest.approx(kept)
    assert lane.held(t + 2.1) == lane.pace  # no 429 for 2 s: its pace


def test_429s_at_random_get_no_fast_climb() -> None:
    """Random 429s (10% of answers, whatever the rate) end a climb at its first step: the
    pace moves by two requests/s per second, as it did before the climb existed."""
    rng = random.Random(3)
    lane = _new_lane()
    paces: list[float] = []

    def answer(now: float) -> bool:
        paces.append(lane.learned)
        return rng.random() >= (0.6 if now < 0.1 else 0.1)  # a storm first: a rate learned

    _lane_against(lane, 10.0, answer)
    assert lane.slowdowns  # a burst of them made it pace itself
    assert max(paces) > 0
    # Never a tenth at once past any pace it had (a trial of a slower pace that ends
    # goes back to the pace before it, not beyond):
    for i, (a, b) in enumerate(itertools.pairwise(paces)):
        if a and b > 1.01 * a:
            assert b <= 1.01 * max(paces[: i + 1])


@pytest.mark.parametrize("rate", [200.0, 1000.0])
def test_past_the_limit_a_paced_lane_settles_with_few_429s(rate: float) -> None:
    """Past the server's limit, the slow climb went on until a third of the answers were
    429s (13-14% of them over a minute, simulated). A paced lane with more than 5% of
    429s tries the pace that got through, less 5%, and keeps it when they fall."""
    lane = _new_lane()
    sent = _lane_against(lane, 60.0, _token_bucket(rate))
    late = [refused for t, refused in sent if t >= 20.0]
    assert late.count(False) >= 0.95 * rate * 40  # the server's rate, all the same
    assert sum(late) < 0.05 * len(late)


def test_a_trial_pace_goes_back_when_429s_come_at_random() -> None:
    """429s on 10% of the answers whatever the rate: a slower pace leaves the share as
    it was, so the pace goes back, and the next trial waits 30 s."""
    rng = random.Random(3)
    lane = _new_lane()
    paces: list[tuple[float, float]] = []

    def answer(now: float) -> bool:
        paces.append((now, lane.learned))
        return rng.random() >= (0.6 if now < 0.1 else 0.1)  # a storm first: a rate learned

    _lane_against(lane, 42.0, answer)
    # Trials: the pace cut by the share of 429s and 5% (slowdowns cut it by 20% or more).
    tried = [(t, a) for (t, a), (_, b) in itertools.pairwise(paces) if a and 0.8 * a < b < 0.9 * a]
    assert len(tried) == 2  # at about 1.5 s, then not again for 30 s
    assert tried[1][0] - tried[0][0] >= 30.0
    for when, before in tried:
        after = next(pace for t, pace in paces if t >= when + 1.5)
        assert after >= before  # the 429s did not follow: the pace is back


def test_the_next_slowdown_takes_fresh_429s() -> None:
    """The share of 429s that made a slowdown stays over the threshold after the pause
    for want of new answers: one 429 among the first few answers after it paused the
    lane again (at 1,000 requests/s with 15% of 429s at random, once a second)."""
    lane = _new_lane()
    t = 0.0
    while not lane.slowdowns:
        t += 0.001
        lane.answered(t)
        t += 0.001
        lane.throttled(1.0, t)
    t = lane.paused_until
    for _ in range(3):
        t += 0.001
        lane.answered(t)
    assert lane.throttled(1.0, t + 0.001) is None
    assert lane.slowdowns == 1


@pytest.mark.parametrize(("share", "rate"), [(0.1, 2_000), (0.15, 500)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_429s_at_random_at_a_high_rate_make_no_slowdown(share: float, rate: int, seed: int) -> None:
    """10% of the answers 429 at random, 2,000 requests/s: the share of the last twenty
    answers went over the 30% threshold by chance every few seconds, and each slowdown
    paused the lane and paced it at 90% of what got through, and the next under that (a
    minute in, 7-12 slowdowns and the pace at a third to half of the rate, simulated).
    15% at 500/s: 50-341 answers/s got through of 425. The share is now of the answers of
    the last quarter of a second when more than twenty came in it."""
    rng = random.Random(seed)
    lane = _new_lane()
    sent = _lane_against(lane, 60.0, lambda now: rng.random() >= share, gap=1.0 / rate)
    assert lane.slowdowns == 0
    assert lane.learned == 0.0
    late = sum(not refused for t, refused in sent if t >= 30.0) / 30.0
    assert late >= 0.95 * (1 - share) * rate, late


# -- the run's edges: a broken input, a consumer that stops, items that are not changes ---


def _alive() -> list[asyncio.Task[Any]]:
    return [
        t for t in asyncio.all_tasks() if not t.done() and t.get_name().startswith("patchassign-")
    ]


async def test_a_broken_input_leaves_no_worker_behind() -> None:
    # PERSCOM's writes go in batches: hundreds of workers, more than the result channel
    # holds. When the input broke, the workers past the channel's room waited for ever to
    # hand in their end marker (544 tasks left running per run).
    def broken() -> Any:
        yield from to_perscom(3)
        raise ValueError("plan file vanished")

    route = Route(perscom=FakePerscom())
    adapter = route.fakes["perscom"].adapter()
    async with Dispatcher([adapter], transport=MockTransport(route), retry=FAST) as d:
        with pytest.raises(ValueError, match="plan file vanished"):
            async for _ in d.run(broken()):
                pass
    await asyncio.sleep(0)
    assert _alive() == []


async def test_a_consumer_that_stops_early_gets_every_finished_change_accounted() -> None:
    route = Route(perscom=FakePerscom())
    async with dispatcher(route, concurrency=64) as d:
        got: list[Result] = []
        async with d.run(to_perscom(2_000)) as run:
            async for r in run:
                got.append(r)
                if len(got) == 10:
                    await asyncio.sleep(0.05)  # let the channel fill behind us
                    break
        stopped = run.stopped
    await asyncio.sleep(0)
    assert _alive() == []
    # Every change whose write was sent is a result the consumer took or one in stopped.
    fake = route.fakes["perscom"]
    assert isinstance(fake, FakePerscom)
    written = {str(rec) for rec in fake.writes}
    accounted = {str(r.record) for r in got + stopped}
    assert written <= accounted, sorted(written - accounted)[:5]
    assert len(stopped) > 0


@pytest.mark.parametrize(
    "source",
    [
        [to_perscom(1)[0], {"system": "perscom", "record": 2}],
        {"perscom": [to_perscom(1)[0], "a plan line"]},
    ],
)
async def test_an_item_that_is_not_a_change_is_an_invalid_change(source: Any) -> None:
    route = Route(perscom=FakePerscom())
    async with dispatcher(route) as d:
        with pytest.raises(InvalidChange, match=r"item 1 of the input is not a change but a"):
            async for _ in d.run(source):
                pass
    await asyncio.sleep(0)
    assert _alive() == []


@pytest.mark.parametrize("source", [5, None, "perscom", {"perscom": 5}])
async def test_an_input_that_is_not_changes_at_all_is_an_invalid_change(source: Any) -> None:
    """``send_all(5)`` raised ``TypeError: 'int' object is not iterable`` from inside the
    reader; a string was read as one-letter "changes"."""
    route = Route(perscom=FakePerscom())
    async with dispatcher(route) as d:
        with pytest.raises(InvalidChange, match=r"the input is not changes \(got "):
            await d.send_all(source)
        with pytest.raises(InvalidChange, match=r"the input is not changes \(got "):
            d.run(source)  # said when the run is asked for, before anything is read
    assert route.order == []


async def test_send_of_something_that_is_not_a_change_is_an_invalid_change() -> None:
    """``d.send({...})`` raised a bare ``AttributeError`` ('dict' object has no attribute
    'system'), where ``run`` says what is wrong."""
    route = Route(perscom=FakePerscom())
    async with dispatcher(route) as d:
        with pytest.raises(InvalidChange, match=r"is not a change but a dict: \{'system'"):
            await d.send({"system": "perscom", "record": 2})  # type: ignore[arg-type]
    assert route.order == []


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"limits": {"perscom": Limits(concurrency=0)}}, "limits['perscom']: Expected `int` >= 1"),
        (
            {"limits": {"perscom": Limits(rate=-1.0)}},
            "limits['perscom']: Expected `float` >= 0.0001",
        ),
        ({"limits": {"perscom": Limits(rate=float("inf"))}}, "Expected `float` <= 1000000.0"),
        ({"retry": RetryPolicy(attempts=0)}, "retry: Expected `int` >= 1 - at `$.attempts`"),
        ({"retry": RetryPolicy(deadline=0.0)}, "retry: Expected `float` > 0.0 - at `$.deadline`"),
        # a number of the wrong type is a ConfigError too, not a TypeError from a comparison
        ({"concurrency": "8"}, "concurrency must be between 1 and 10000, got '8'"),
        ({"concurrency": True}, "concurrency must be between 1 and 10000, got True"),
        ({"buffer": 2.5}, "buffer must be between 1 and 10000000, got 2.5"),
        # a truthy string is not a yes: "false" would have turned a dry run into writes
        ({"dry_run": "false"}, "dry_run must be True or False, got 'false'"),
        ({"verify_tls": 0}, "verify_tls must be True or False, got 0"),
        ({"transport": object()}, "transport: not a Transport (it has no send method)"),
    ],
)
def test_limits_and_policies_built_in_python_are_held_to_their_bounds(
    kw: dict[str, Any], words: str
) -> None:
    # msgspec checks the declared bounds when it decodes a TOML file, not when Python
    # builds the struct: Limits(concurrency=0) stalled its system until every deadline.
    adapter = FakePerscom().adapter()
    with pytest.raises(ConfigError, match=re.escape(words)):
        Dispatcher([adapter], **kw)


def test_limits_for_a_system_without_an_adapter_are_said_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One table of limits may serve several dispatchers; a misspelt name is said.
    with caplog.at_level(logging.WARNING, "patchassign.dispatch"):
        d = Dispatcher([FakePerscom().adapter()], limits={"persom": Limits(concurrency=1)})
    assert "limits for 'persom' ignored: no adapter for that system here (systems: perscom)" in (
        caplog.text
    )
    assert set(d.limits) == {"perscom"}


def test_two_adapters_for_one_system_are_refused() -> None:
    one, other = FakePerscom().adapter(), FakePerscom().adapter()
    with pytest.raises(ConfigError, match="two adapters for the system 'perscom'"):
        Dispatcher([one, other])
    Dispatcher([one, one])  # the same one twice is one
    with pytest.raises(ConfigError, match="not an adapter"):
        Dispatcher(["perscom"])  # type: ignore[list-item]


def test_adapters_may_be_one_a_list_or_a_mapping_by_their_own_system() -> None:
    perscom, maxsight = FakePerscom().adapter(), FakeMaxsight().adapter()
    assert list(Dispatcher(perscom).adapters) == ["perscom"]  # one, by itself
    assert list(Dispatcher({"perscom": perscom, "maxsight": maxsight}).adapters) == [
        "perscom",
        "maxsight",
    ]
    # A key that is not the adapter's system would send one system's changes to another.
    with pytest.raises(ConfigError, match=r"adapters\['kintone'\]: not an adapter for 'kintone'"):
        Dispatcher({"kintone": perscom})
    with pytest.raises(ConfigError, match="adapters must be adapters"):
        Dispatcher("perscom")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="adapters must be adapters"):
        Dispatcher(5)  # type: ignore[arg-type]
