"""The dispatcher over real aiohttp requests answered by aioresponses (no server).

Backoff, Retry-After, attempt limits, the deadline, conflicts, ambiguous failures,
ordering, backpressure, cancellation and the slowdown on many 429s.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from email.utils import formatdate
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from yarl import URL

from patchassign import errors as pa_errors
from patchassign.changes import Assign, Change, Delegate, Merge
from patchassign.dispatch import Dispatcher, Limits, Result, RetryPolicy, backoff_delay
from patchassign.errors import ConfigError
from patchassign.systems import (
    Adapter,
    Current,
    FindableAdapter,
    HttpRequest,
    HttpResponse,
    MaxsightAdapter,
    PerscomAdapter,
)

from ..http_mock import CallbackResult, aioresponses

BASE = "https://api.example.test"
FAST = RetryPolicy(base=0.01, cap=0.05, timeout=2.0, deadline=20.0)
TASK = f"{BASE}/v5/tasks/t1"
TASK_PUT = f"{TASK}/update-assignment"
ASG = f"{BASE}/assignments/a1"


def perscom(n: int = 1) -> PerscomAdapter:
    return PerscomAdapter(BASE, "tok", notifications=False)


def assign_p(record: int = 1, to: str = "7", **kw: Any) -> Assign:
    return Assign(system="perscom", record=record, to=to, **kw)


def assign_m(**kw: Any) -> Assign:
    return Assign(system="maxsight", record="t1", to="eve", by="admin", **kw)


def delegate(**kw: Any) -> Delegate:
    return Delegate(system="findable", record="a1", to="eve@example.com", **kw)


def p_url(record: int | str = 1) -> str:
    return f"{BASE}/v2/assignment-records/{record}"


def p_ok(record: int = 1, user: int = 7) -> dict[str, Any]:
    return {"data": {"id": record, "user_id": user, "updated_at": "v2"}}


def task(holder: str | None, version: str = "v1") -> dict[str, Any]:
    assignment = None
    if holder is not None:
        assignment = {"assigned_to_id": holder, "assigned_to_type": "USER"}
    return {"id": "t1", "updated_at": version, "assignment": assignment}


def calls(m: aioresponses, method: str, url: str) -> int:
    return len(m.requests.get((method, URL(url)), []))


@pytest_asyncio.fixture
async def mocked() -> AsyncIterator[aioresponses]:
    with aioresponses() as m:
        yield m


def dispatcher(*adapters: Adapter, **kw: Any) -> Dispatcher:
    """A dispatcher sending one change per request (batching has tests of its own)."""
    kw.setdefault("retry", FAST)
    kw.setdefault("seed", 1)
    chosen = list(adapters) or [perscom()]
    limits = dict(kw.pop("limits", None) or {})
    for a in chosen:
        own = limits.get(a.system, getattr(a, "limits", Limits()))
        if own.batch is None:
            limits[a.system] = msgspec.structs.replace(own, batch=0)
    return Dispatcher(chosen, limits=limits, **kw)


# -- backoff ------------------------------------------------------------------------------


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0)
    rng = random.Random(7)
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        draws = [backoff_delay(failures, None, policy, rng) for _ in range(2000)]
        assert all(0 <= d <= ceiling for d in draws)
        # full jitter spreads over the whole range, not around one value
        assert min(draws) < ceiling * 0.05
        assert max(draws) > ceiling * 0.95


def test_retry_after_is_a_floor_with_a_little_spread() -> None:
    policy = RetryPolicy(base=0.1, cap=1.0)
    rng = random.Random(3)
    draws = [backoff_delay(1, 10.0, policy, rng) for _ in range(500)]
    assert all(10.0 <= d <= 11.0 for d in draws)
    assert len({round(d, 3) for d in draws}) > 100


# -- retries ------------------------------------------------------------------------------


async def test_503_then_success_is_retried(mocked: aioresponses) -> None:
    mocked.patch(p_url(), status=503, payload={"message": "busy"})
    mocked.patch(p_url(), status=503, payload={"message": "busy"})
    mocked.patch(p_url(), status=200, payload=p_ok())
    async with dispatcher() as d:
        r = await d.send(assign_p())
    assert (r.status, r.attempts, r.writes, r.http_status, r.version) == (
        "applied",
        3,
        3,
        200,
        "v2",
    )
    assert r.error is None
    assert not r.unconfirmed
    assert calls(mocked, "PATCH", p_url()) == 3


async def test_attempts_are_bounded(mocked: aioresponses) -> None:
    mocked.patch(p_url(), status=503, payload={"message": "down for maintenance"}, repeat=True)
    async with dispatcher(retry=RetryPolicy(attempts=3, base=0.01)) as d:
        r = await d.send(assign_p())
    assert r.status == "failed"
    assert r.attempts == 3 == calls(mocked, "PATCH", p_url())
    assert r.error is not None
    assert "gave up after 3 attempts" in r.error
    assert "down for maintenance" in r.error
    assert r.http_status == 503


async def test_retry_after_seconds_is_honoured(mocked: aioresponses) -> None:
    seen: list[float] = []

    def at(url: URL, **kw: Any) -> None:
        seen.append(time.monotonic())

    mocked.patch(p_url(), status=429, headers={"Retry-After": "1"}, callback=at)
    mocked.patch(p_url(), status=200, payload=p_ok(), callback=at)
    async with dispatcher() as d:
        r = await d.send(assign_p())
    assert r.status == "applied"
    assert r.attempts == 2
    assert seen[1] - seen[0] >= 1.0


async def test_retry_after_http_date_is_honoured(mocked: aioresponses) -> None:
    seen: list[float] = []

    def at(url: URL, **kw: Any) -> None:
        seen.append(time.time())

    # An HTTP-date has whole seconds: two seconds ahead is at least one second of wait.
    when = formatdate(time.time() + 2, usegmt=True)
    mocked.patch(p_url(), status=503, headers={"Retry-After": when}, callback=at)
    mocked.patch(p_url(), status=200, payload=p_ok(), callback=at)
    async with dispatcher() as d:
        r = await d.send(assign_p())
    assert r.status == "applied"
    assert seen[1] - seen[0] >= 1.0


async def test_a_retry_after_beyond_the_deadline_ends_the_change_unsent_now(
    mocked: aioresponses,
) -> None:
    mocked.patch(p_url(), status=429, headers={"Retry-After": "3600"})
    async with dispatcher(retry=RetryPolicy(deadline=30.0)) as d:
        t = time.monotonic()
        r = await d.send(assign_p())
    assert time.monotonic() - t < 5  # it did not sleep an hour, nor 30 s
    assert r.status == "unsent"  # nothing was applied: a resume sends it
    assert r.error is not None
    assert "asked to wait 3600s" in r.error
    assert "throttled" in r.error


async def test_a_dropped_connection_is_read_back_before_a_resend(mocked: aioresponses) -> None:
    open_ = {"id": "a1", "status": "pending", "assigneeEmail": "ada@example.com", "_etag": '"1"'}
    mocked.get(ASG, status=200, payload=open_, repeat=True)  # the same _etag: it did not land
    mocked.post(f"{ASG}/delegate", exception=aiohttp.ServerDisconnectedError())
    mocked.post(f"{ASG}/delegate", status=201, payload={"id": "a1~d1", "_etag": '"e"'})
    async with dispatcher(FindableAdapter(BASE, "t")) as d:
        r = await d.send(delegate())
    assert r.status == "applied"
    assert r.version == '"e"'
    assert r.record_after == {"id": "a1~d1", "_etag": '"e"'}
    assert calls(mocked, "GET", ASG) == 2  # before the first try, and before the resend
    assert calls(mocked, "POST", f"{ASG}/delegate") == 2


async def test_a_connect_error_is_resent_without_a_read(mocked: aioresponses) -> None:
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, True, True, None, None, None),
        OSError(111, "Connection refused"),
    )
    mocked.patch(p_url(), exception=refused)
    mocked.patch(p_url(), status=200, payload=p_ok())
    async with dispatcher() as d:
        r = await d.send(assign_p())
    assert r.status == "applied"
    assert r.attempts == 2
    assert not r.unconfirmed
    assert calls(mocked, "GET", p_url()) == 0


# -- conflicts ------------------------------------------------------------------------------


async def test_a_version_conflict_is_recovered_by_re_reading(mocked: aioresponses) -> None:
    mocked.get(TASK, status=200, payload=task("ada", "v1"))
    mocked.put(TASK_PUT, status=409, payload={"message": "version mismatch"})
    mocked.get(TASK, status=200, payload=task("ada", "v2"))
    mocked.put(TASK_PUT, status=200, payload={**task("eve", "v3")})
    async with dispatcher(MaxsightAdapter(BASE, "k")) as d:
        r = await d.send(assign_m(expect="ada"))
    assert (r.status, r.version, r.writes, r.attempts) == ("applied", "v3", 2, 4)
    puts = mocked.requests[("PUT", URL(TASK_PUT))]
    assert [c.kwargs["headers"]["If-Match"] for c in puts] == ["v1", "v2"]


async def test_conflicts_are_bounded(mocked: aioresponses) -> None:
    mocked.get(TASK, status=200, payload=task("ada"), repeat=True)
    mocked.put(TASK_PUT, status=409, payload={"message": "version mismatch"}, repeat=True)
    async with dispatcher(MaxsightAdapter(BASE, "k"), retry=RetryPolicy(conflicts=2)) as d:
        r = await d.send(assign_m())
    assert r.status == "conflict"
    assert r.error is not None
    assert "after 3 re-reads" in r.error
    assert calls(mocked, "PUT", TASK_PUT) == 3


async def test_a_change_that_no_longer_applies_is_a_conflict_not_forced(
    mocked: aioresponses,
) -> None:
    mocked.get(TASK, status=200, payload=task("ada", "v1"))
    mocked.put(TASK_PUT, status=409, payload={"message": "version mismatch"})
    mocked.get(TASK, status=200, payload=task("zed", "v2"))  # someone moved it meanwhile
    async with dispatcher(MaxsightAdapter(BASE, "k")) as d:
        r = await d.send(assign_m(expect="ada"))
    assert r.status == "conflict"
    assert r.error is not None
    assert "zed" in r.error
    assert calls(mocked, "PUT", TASK_PUT) == 1


async def test_already_in_place_is_unchanged_and_sends_nothing(mocked: aioresponses) -> None:
    mocked.get(TASK, status=200, payload=task("eve", "v9"))
    async with dispatcher(MaxsightAdapter(BASE, "k")) as d:
        r = await d.send(assign_m())
    assert (r.status, r.version, r.writes) == ("unchanged", "v9", 0)


# -- permanent failures and bad input ----------------------------------------------------------


async def test_a_permanent_error_is_not_retried(mocked: aioresponses) -> None:
    mocked.patch(p_url(), status=404, payload={"message": "No query results for model"})
    async with dispatcher() as d:
        r = await d.send(assign_p())
    assert (r.status, r.attempts, r.http_status) == ("failed", 1, 404)
    assert r.error == "No query results for model"


async def test_bad_changes_become_failed_results_without_a_request(
    mocked: aioresponses,
) -> None:
    bad: list[Change] = [
        Assign(system="perscom", record=1, to="not-a-number", id="x"),
        Merge(system="kintone", record="1:1", merge={"a": 1}, id="y"),  # no adapter
    ]
    async with dispatcher() as d:
        results = await d.send_all(bad)
    assert [r.status for r in results] == ["failed", "failed"]
    assert results[0].error is not None
    assert "integer user_id" in results[0].error
    assert results[1].error == "no adapter configured for system 'kintone'"
    assert results[0].attempts == results[1].attempts == 0
    assert not mocked.requests


async def test_an_adapters_bug_fails_its_change_and_says_what_it_raised(
    mocked: aioresponses,
) -> None:
    class Broken(PerscomAdapter):
        def prepare(self, change: Change, current: Current | None) -> HttpRequest:
            raise ZeroDivisionError("bug\n\x1b[2J")

    async with dispatcher(Broken(BASE, "t")) as d:
        result = await d.send(assign_p(1))
    assert result.status == "failed"
    assert not result.unconfirmed  # nothing was sent
    assert result.attempts == 0
    assert result.error is not None
    assert "the Broken raised ZeroDivisionError: bug \\x1b[2J" in result.error
    assert "a bug in the adapter" in result.error
    assert not mocked.requests


async def test_the_input_breaking_surfaces(mocked: aioresponses) -> None:
    mocked.patch(p_url(), status=200, payload=p_ok(), repeat=True)

    def broken() -> Iterator[Change]:
        yield assign_p()
        raise ValueError("plan file vanished")

    async with dispatcher() as d:
        with pytest.raises(ValueError, match="plan file vanished"):
            await d.send_all(broken())


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        Dispatcher([], concurrency=0)
    with pytest.raises(ConfigError, match="limits"):
        Dispatcher([], limits={"perscom": {"concurrency": 1}})  # type: ignore[dict-item]


async def test_sending_before_start_says_how_to_start() -> None:
    d = dispatcher()
    with pytest.raises(RuntimeError, match="async with"):
        await d.send(assign_p())


# -- many changes ------------------------------------------------------------------------------


async def test_send_all_returns_results_in_input_order(mocked: aioresponses) -> None:
    for n in range(1, 41):
        mocked.patch(p_url(n), status=200, payload=p_ok(n))
    async with dispatcher(concurrency=8) as d:
        results = await d.send_all(assign_p(n, id=f"c{n}") for n in range(1, 41))
    assert [r.id for r in results] == [f"c{n}" for n in range(1, 41)]
    assert [r.index for r in results] == list(range(40))
    assert {r.status for r in results} == {"applied"}


async def test_changes_to_one_record_go_in_input_order(mocked: aioresponses) -> None:
    order: list[str] = []

    async def answer(url: URL, **kw: Any) -> CallbackResult:
        order.append(kw["data"].decode())
        await asyncio.sleep(0.01)
        return CallbackResult(status=200, payload=p_ok())

    mocked.patch(p_url(), callback=answer, repeat=True)
    async with dispatcher(concurrency=16) as d:
        await d.send_all(assign_p(1, to=str(n)) for n in range(20))
    assert order == [f'{{"user_id":{n}}}' for n in range(20)]


async def test_async_iterable_input(mocked: aioresponses) -> None:
    mocked.patch(p_url(), status=200, payload=p_ok(), repeat=True)

    async def changes() -> AsyncIterator[Change]:
        for n in range(30):
            await asyncio.sleep(0)
            yield assign_p(1, to=str(n), id=str(n))

    async with dispatcher(concurrency=4) as d:
        got = [r.id or "" async for r in d.run(changes())]
    assert sorted(got, key=int) == [str(n) for n in range(30)]


async def test_input_is_read_lazily_with_backpressure(mocked: aioresponses) -> None:
    mocked.patch(p_url(), status=200, payload=p_ok(), repeat=True)
    taken = 0

    def endless() -> Iterator[Change]:
        nonlocal taken
        while True:
            taken += 1
            yield assign_p(taken % 50 + 1, id=str(taken))

    for n in range(1, 51):
        mocked.patch(p_url(n), status=200, payload=p_ok(n), repeat=True)
    async with dispatcher(concurrency=4, buffer=10) as d, d.run(endless()) as run:
        first = await anext(run)
        await asyncio.sleep(0.3)  # a slow consumer: the run must wait for it
        assert first.status == "applied"
        # the system's buffer + its workers (4x while resting) + the result channel (256)
        assert taken <= 10 + 4 * 4 + 256 + 2
        assert run.taken == taken


async def test_per_system_concurrency_is_respected(mocked: aioresponses) -> None:
    in_flight = peak = 0

    async def answer(url: URL, **kw: Any) -> CallbackResult:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return CallbackResult(status=200, payload=p_ok())

    for n in range(1, 61):
        mocked.patch(p_url(n), callback=answer)
    limits = {"perscom": Limits(concurrency=3)}
    async with dispatcher(concurrency=32, limits=limits) as d:
        results = await d.send_all(assign_p(n) for n in range(1, 61))
    assert {r.status for r in results} == {"applied"}
    assert peak == 3


async def test_rate_limit_spaces_requests(mocked: aioresponses) -> None:
    seen: list[float] = []

    def at(url: URL, **kw: Any) -> None:
        seen.append(time.monotonic())

    for n in range(1, 11):
        mocked.patch(p_url(n), status=200, payload=p_ok(n), callback=at)
    limits = {"perscom": Limits(concurrency=10, rate=20.0, burst=2)}
    async with dispatcher(concurrency=10, limits=limits) as d:
        await d.send_all(assign_p(n) for n in range(1, 11))
    # 2 at once, then one every 50 ms: the 10th no sooner than 8 intervals after the first
    assert seen[-1] - seen[0] >= 8 * 0.05 - 0.01


async def test_many_429s_slow_the_whole_system_down(
    mocked: aioresponses, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(1, 41):
        mocked.patch(p_url(n), status=429, headers={"Retry-After": "0"})
        mocked.patch(p_url(n), status=200, payload=p_ok(n))
    limits = {"perscom": Limits(concurrency=16)}
    with caplog.at_level(logging.WARNING, "patchassign.dispatch"):
        async with dispatcher(concurrency=16, limits=limits) as d:
            results = await d.send_all(assign_p(n) for n in range(1, 41))
            gate = d._lanes["perscom"]
            assert d.slowdowns()["perscom"] >= 1
            assert gate.window < 16
    assert {r.status for r in results} == {"applied"}
    assert "slowing down" in caplog.text


async def test_tls_verification_off_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "patchassign.dispatch"):
        async with dispatcher(verify_tls=False):
            pass
    assert "TLS certificate verification is OFF" in caplog.text


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelling_stops_new_sends_and_reports_the_unconfirmed(
    mocked: aioresponses,
) -> None:
    started: list[int] = []

    async def answer(url: URL, **kw: Any) -> CallbackResult:
        n = int(url.path.rsplit("/", 1)[1])
        started.append(n)
        await asyncio.sleep(0.05 if n == 1 else 0.4)
        if n % 2:
            return CallbackResult(status=200, payload=p_ok(n))
        raise aiohttp.ServerDisconnectedError()  # sent; no answer

    for n in range(1, 101):
        mocked.patch(p_url(n), callback=answer, repeat=True)
    got: list[Result] = []
    async with dispatcher(concurrency=4) as d:
        run = d.run(assign_p(n) for n in range(1, 101))

        async def consume() -> None:
            async for r in run:
                got.append(r)  # noqa: PERF401 - one by one, until cancelled

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)  # change 1 answered; 2..5 in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [r.record for r in got] == [1]
    # four in flight, then one more when change 1 was answered; nothing after the cancel
    assert len(started) == 5
    in_flight = set(started) - {1}
    stopped = {int(r.record): r for r in run.stopped if r.attempts}
    assert set(stopped) == in_flight
    # in-flight requests were let finish: odd ones applied, even ones dropped
    for n, r in stopped.items():
        assert r.status == ("applied" if n % 2 else "cancelled"), r
    assert {r.record for r in run.unconfirmed} == {n for n in in_flight if n % 2 == 0}
    assert all(r.status == "cancelled" for r in run.stopped if not r.attempts)


def counting(mocked: aioresponses, n: int) -> list[int]:
    """Answer PATCHes of records 1..n with 200; the returned list counts the requests."""
    sent = [0]

    def answer(url: URL, **kw: Any) -> CallbackResult:
        sent[0] += 1
        return CallbackResult(status=200, payload=p_ok())

    for record in range(1, n + 1):
        mocked.patch(p_url(record), callback=answer)
    return sent


async def test_breaking_out_stops_the_run(mocked: aioresponses) -> None:
    sent = counting(mocked, 1000)
    async with dispatcher(concurrency=4) as d:
        async with d.run(assign_p(n) for n in range(1, 1001)) as run:
            async for r in run:
                if r.index >= 10:
                    break
        before = sent[0]
        await asyncio.sleep(0.1)
        assert sent[0] == before < 100


async def test_a_dropped_run_is_closed_by_the_event_loop(mocked: aioresponses) -> None:
    sent = counting(mocked, 1000)
    async with dispatcher(concurrency=4) as d:
        async for r in d.run(assign_p(n) for n in range(1, 1001)):
            if r.index >= 10:
                break  # no 'async with': the run object is dropped here
        for _ in range(20):
            await asyncio.sleep(0.02)
        before = sent[0]
        await asyncio.sleep(0.1)
        assert sent[0] == before < 100


def test_results_never_show_credentials() -> None:
    adapter = PerscomAdapter(BASE, "s3cr3t-token-value", notifications=False)
    req = adapter.prepare(assign_p(), None)
    assert "s3cr3t" not in repr(req)
    assert "s3cr3t" not in repr(adapter)
    r = Result(index=0, id="x", system="perscom", record=1, status="failed", error="HTTP 401")
    assert "s3cr3t" not in repr(r)
    response = HttpResponse(200, {}, b"")
    assert response.json() is None


def _refused() -> aiohttp.ClientConnectorError:
    return aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, True, True, None, None, None),
        OSError(111, "Connection refused"),
    )


async def test_a_system_that_is_down_pauses_and_does_not_spend_attempts(
    mocked: aioresponses,
) -> None:
    seen: list[float] = []

    def at(url: URL, **kw: Any) -> None:
        seen.append(time.monotonic())

    mocked.patch(p_url(), exception=_refused(), callback=at)
    mocked.patch(p_url(), exception=_refused(), callback=at)
    mocked.patch(p_url(), status=200, payload=p_ok(), callback=at)
    async with dispatcher(retry=RetryPolicy(attempts=1, base=0.01)) as d:
        r = await d.send(assign_p())
        assert d._lanes["perscom"].down == 0  # reset by the answer
    assert r.status == "applied"
    assert r.attempts == 3
    # paused 0.25-0.5 s after the first refusal, 0.5-1 s after the second
    assert seen[1] - seen[0] >= 0.25
    assert seen[2] - seen[1] >= 0.5


async def test_a_system_that_stays_down_ends_unsent_at_the_deadline(
    mocked: aioresponses,
) -> None:
    mocked.patch(p_url(), exception=_refused(), repeat=True)
    async with dispatcher(retry=RetryPolicy(deadline=1.0)) as d:
        t = time.monotonic()
        r = await d.send(assign_p())
    assert time.monotonic() - t < 3
    assert r.status == "unsent"
    assert r.error is not None
    assert "cannot connect" in r.error
    assert not r.unconfirmed


async def test_a_typed_error_from_an_adapter_fails_only_that_change(mocked: aioresponses) -> None:
    class Picky(PerscomAdapter):
        def prepare(self, change: Change, current: Current | None) -> HttpRequest:
            if change.record == 2:
                raise pa_errors.PatchConflict("the record does not fit", reason="missing")
            return super().prepare(change, current)  # type: ignore[return-value]

    mocked.patch(p_url(1), status=200, payload=p_ok(1))
    mocked.patch(p_url(3), status=200, payload=p_ok(3))
    async with dispatcher(Picky(BASE, "t")) as d:
        results = await d.send_all(assign_p(n) for n in (1, 2, 3))
    assert [r.status for r in results] == ["applied", "failed", "applied"]
    assert results[1].error == "PatchConflict: the record does not fit"
