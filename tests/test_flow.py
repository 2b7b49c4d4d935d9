"""The per-change state machine, driven with plain values: no I/O, no clock, no loop."""

from __future__ import annotations

import random
from typing import Any

import pytest

from patchassign import (
    ConnectError,
    ConnectionLost,
    HttpResponse,
    ResponseTimeout,
    RetryPolicy,
    SetupError,
)
from patchassign.changes import Assign, Delegate
from patchassign.flow import Done, Flow, Send, Wait
from patchassign.systems import FindableAdapter, MaxsightAdapter

ADAPTER = MaxsightAdapter("https://m.example", "key", assigned_by="admin")
CHANGE = Assign(system="maxsight", record="t1", to="eve", id="c1")
POLICY = RetryPolicy(attempts=4, base=0.1, cap=10.0, timeout=5.0, deadline=60.0)


def task(holder: str | None, version: str = "v1") -> HttpResponse:
    assignment = None if holder is None else {"assigned_to_id": holder, "assigned_to_type": "USER"}
    return HttpResponse.from_json(
        200, {"id": "t1", "updated_at": version, "assignment": assignment}
    )


def flow(**kw: Any) -> Flow:
    kw.setdefault("policy", POLICY)
    return Flow(ADAPTER, CHANGE, rng=random.Random(1), now=0.0, wall=1000.0, **kw)


def test_read_prepare_write_applied() -> None:
    f = flow()
    step = f.start(0.0)
    assert isinstance(step, Send)
    assert step.request.method == "GET"
    assert not step.write
    step = f.on_response(task("ada"), 0.1)
    assert isinstance(step, Send)
    assert step.write
    assert step.request.headers["If-Match"] == "v1"
    done = f.on_response(task("eve", "v2"), 0.2)
    assert isinstance(done, Done)
    r = done.result
    assert (r.status, r.attempts, r.writes, r.version) == ("applied", 2, 1, "v2")
    assert r.elapsed == 0.2
    assert r.started == 1000.0


def test_already_in_place_is_unchanged_and_nothing_is_written() -> None:
    f = flow()
    f.start(0.0)
    done = f.on_response(task("eve"), 0.1)
    assert isinstance(done, Done)
    assert done.result.status == "unchanged"
    assert done.result.writes == 0


def test_every_failure_counts_and_the_backoff_grows_although_reads_succeed() -> None:
    f = flow()
    f.start(0.0)
    ceilings = []
    now = 0.0
    step = f.on_response(task("ada"), now)
    for _ in range(3):
        assert isinstance(step, Send)
        assert step.write
        step = f.on_response(HttpResponse.from_json(500, {"message": "oops"}), now)
        assert isinstance(step, Wait)
        ceilings.append(min(POLICY.cap, POLICY.base * 2 ** (f.failures - 1)))
        assert step.seconds <= ceilings[-1]
        now += step.seconds
        step = f.on_timer(now)  # a 500 may have applied: read first
        assert isinstance(step, Send)
        assert not step.write
        step = f.on_response(task("ada"), now)  # the read succeeds: the count stays
    assert f.failures == 3
    assert ceilings == [0.1, 0.2, 0.4]
    assert isinstance(step, Send)
    assert step.write
    done = f.on_response(HttpResponse.from_json(500, {"message": "oops"}), now)
    assert isinstance(done, Done)
    assert done.result.status == "failed"
    assert done.result.writes == 4  # = attempts
    assert done.result.unconfirmed
    assert "gave up after 4 attempts" in (done.result.error or "")


def test_a_lost_answer_to_a_write_is_read_back_and_found_applied() -> None:
    f = flow()
    f.start(0.0)
    f.on_response(task("ada"), 0.0)
    step = f.on_error(ConnectionLost("reset", host="m:443"), 0.1)
    assert isinstance(step, Wait)
    step = f.on_timer(0.2)
    assert isinstance(step, Send)
    assert not step.write
    done = f.on_response(task("eve", "v2"), 0.3)
    assert isinstance(done, Done)
    assert done.result.status == "applied"
    assert not done.result.unconfirmed


def test_a_refused_connection_spends_no_attempt_and_signals_unreachable() -> None:
    f = flow()
    f.start(0.0)
    step = f.on_error(ConnectError("refused", host="m:443"), 0.1)
    assert f.signal == "unreachable"
    assert f.failures == 0
    assert isinstance(step, Send)  # the dispatcher's pause of the system does the waiting


def test_a_tls_or_dns_error_ends_the_change_and_signals_setup() -> None:
    f = flow()
    f.start(0.0)
    done = f.on_error(SetupError("certificate verify failed", host="m:443"), 0.1)
    assert f.signal == "setup"
    assert isinstance(done, Done)
    assert done.result.status == "failed"
    assert "certificate" in (done.result.error or "")


def test_a_retry_after_longer_than_the_deadline_ends_unsent_now() -> None:
    f = flow()
    f.start(0.0)
    busy = HttpResponse.from_json(429, {"message": "slow"}, {"Retry-After": "3600"})
    done = f.on_response(busy, 1.0)
    assert f.signal == "throttled"
    assert f.after == 3600
    assert isinstance(done, Done)
    assert done.result.status == "unsent"
    assert "3600" in (done.result.error or "")


def test_the_deadline_after_a_possibly_applied_write_is_failed_and_unconfirmed() -> None:
    f = flow(policy=RetryPolicy(deadline=1.0, base=0.1))
    f.start(0.0)
    f.on_response(task("ada"), 0.0)
    step = f.on_error(ResponseTimeout("no answer", host="m:443"), 0.9)
    assert isinstance(step, Wait | Done)
    done = f.expire(1.0)
    assert done.result.status == "failed"  # not unsent: the write may have applied
    assert done.result.unconfirmed


def test_refused_credentials_signal_auth() -> None:
    f = flow()
    f.start(0.0)
    done = f.on_response(HttpResponse.from_json(401, {"message": "bad key"}), 0.1)
    assert f.signal == "auth"
    assert isinstance(done, Done)
    assert done.result.status == "failed"
    assert done.result.http_status == 401


class _Raising(MaxsightAdapter):
    def __init__(self, where: str) -> None:
        super().__init__("https://m.example", "key", assigned_by="admin")
        self.where = where

    def check(self, change: Any) -> None:
        if self.where == "check":
            raise AttributeError("no such member")
        super().check(change)

    def current(self, change: Any, response: HttpResponse) -> Any:
        if self.where == "current":
            raise IndexError("list index out of range")
        return super().current(change, response)

    def outcome(self, change: Any, response: HttpResponse) -> Any:
        if self.where == "outcome":
            raise KeyError("assignment")
        return super().outcome(change, response)


@pytest.mark.parametrize(
    ("where", "answers", "unconfirmed"),
    [
        ("check", 0, False),  # nothing sent
        ("current", 1, False),  # a read answered: nothing written
        ("outcome", 2, True),  # the write answered, and nothing could say how: in doubt
    ],
)
def test_an_adapter_that_raises_ends_the_change_and_signals_adapter(
    where: str, answers: int, unconfirmed: bool
) -> None:
    f = Flow(_Raising(where), CHANGE, policy=POLICY, rng=random.Random(1), now=0.0)
    step = f.start(0.0)
    for i in range(answers):
        assert isinstance(step, Send)
        step = f.on_response(task("ada" if i == 0 else "eve", f"v{i + 1}"), 0.1 * (i + 1))
    assert isinstance(step, Done)
    r = step.result
    assert (r.status, r.unconfirmed, r.attempts) == ("failed", unconfirmed, answers)
    assert r.error is not None
    assert "the _Raising raised" in r.error
    assert "a bug in the adapter" in r.error
    assert f.signal == "adapter"
    assert isinstance(f.raised, AttributeError | IndexError | KeyError)


def test_a_dry_run_plans_the_write() -> None:
    f = flow(dry_run=True)
    f.start(0.0)
    done = f.on_response(task("ada"), 0.1)
    assert isinstance(done, Done)
    assert done.result.status == "planned"
    assert done.result.planned is not None
    assert done.result.planned["method"] == "PUT"
    assert "key" not in str(done.result.planned)  # headers are left out


def test_an_invalid_change_ends_before_anything_is_sent() -> None:
    bad = Assign(system="maxsight", record="t1", to=["a", "b"])
    f = Flow(ADAPTER, bad, policy=POLICY, rng=random.Random(1), now=0.0)
    done = f.start(0.0)
    assert isinstance(done, Done)
    assert done.result.status == "failed"
    assert done.result.attempts == 0


def test_a_checked_change_is_not_checked_again() -> None:
    """A journal's items were checked when loaded: ``checked=True`` skips the adapter's
    check (a change it would refuse goes straight to its read)."""
    with_comment = Assign(system="maxsight", record="t1", to="eve", comment="x" * 10)
    calls: list[Any] = []

    class Counting(MaxsightAdapter):
        def check(self, change: Any) -> None:
            calls.append(change)
            super().check(change)

    adapter = Counting("https://m.example", "key", assigned_by="admin")
    for checked, expected in ((False, 1), (True, 0)):
        calls.clear()
        f = Flow(
            adapter, with_comment, policy=POLICY, rng=random.Random(1), now=0.0, checked=checked
        )
        assert isinstance(f.start(0.0), Send)
        assert len(calls) == expected


def test_before_after_and_current_come_from_the_record_as_read() -> None:
    f = flow()
    f.start(0.0)
    f.on_response(task("ada"), 0.1)
    done = f.on_response(task("eve", "v2"), 0.2)
    assert isinstance(done, Done)
    assert (done.result.before, done.result.after) == ({"to": "ada"}, {"to": "eve"})
    f = flow()
    f.start(0.0)
    done = f.on_response(task("eve"), 0.1)
    assert isinstance(done, Done)
    assert (done.result.before, done.result.after) == ({"to": "eve"}, {"to": "eve"})
    guarded = Assign(system="maxsight", record="t1", to="eve", expect="bob")
    f = Flow(ADAPTER, guarded, policy=POLICY, rng=random.Random(1), now=0.0)
    f.start(0.0)
    done = f.on_response(task("zed"), 0.1)
    assert isinstance(done, Done)
    assert done.result.status == "conflict"
    assert done.result.current == {"to": "zed"}
    # a lost answer to a write, then found in place: before is what the write replaced
    f = flow()
    f.start(0.0)
    f.on_response(task("ada"), 0.1)
    f.on_error(ConnectionLost("dropped"), 0.2)
    step = f.on_timer(1.0)
    assert isinstance(step, Send)
    done = f.on_response(task("eve", "v2"), 1.1)
    assert isinstance(done, Done)
    assert done.result.status == "applied"
    assert (done.result.before, done.result.after) == ({"to": "ada"}, {"to": "eve"})


def test_throttled_answers_spend_no_attempt_but_grow_the_backoff() -> None:
    f = flow(policy=RetryPolicy(attempts=2, base=0.1, cap=100.0, deadline=600.0))
    step = f.start(0.0)
    busy = HttpResponse.from_json(429, {"message": "slow down"})
    now = 0.0
    for n in range(1, 8):
        step = f.on_response(busy, now)
        assert isinstance(step, Wait), n  # not failed after 2
        assert step.seconds <= 0.1 * 2 ** (n - 1)
        now += step.seconds
        step = f.on_timer(now)
    assert (f.failures, f.throttles) == (0, 7)
    step = f.on_response(task("ada"), now)
    assert isinstance(step, Send)
    assert step.write


def test_a_write_without_a_version_token_settles_past_its_timeout_before_a_read() -> None:
    """PERSCOM has no version token: after a dropped connection (however early), the
    record is read back only once the write's timeout and the settle time are over."""
    from patchassign.systems import PerscomAdapter

    adapter = PerscomAdapter("https://p.example", "t")
    change = Assign(system="perscom", record=1, to="7")
    policy = RetryPolicy(base=0.1, cap=0.2, timeout=1.0, settle=2.0, deadline=60.0)
    f = Flow(adapter, change, policy=policy, rng=random.Random(1), now=0.0)
    step = f.start(0.0)
    assert isinstance(step, Send)
    assert step.write  # no read needed: a blind write
    wait = f.on_error(ConnectionLost("dropped"), 0.1)
    assert isinstance(wait, Wait)
    assert wait.seconds == pytest.approx(2.9)  # sent at 0, timeout 1, settle 2
    assert "settle" in wait.reason
    # no settle time given: the request timeout stands for it
    same = RetryPolicy(base=0.1, cap=0.2, timeout=1.5, deadline=60.0)
    g = Flow(adapter, change, policy=same, rng=random.Random(1), now=0.0)
    g.start(0.0)
    wait = g.on_error(ConnectionLost("dropped"), 0.1)
    assert isinstance(wait, Wait)
    assert wait.seconds == pytest.approx(2.9)  # sent at 0, timeout 1.5, settle 1.5
    # a system with a version token reads back at once (a late write fails its check)
    m = flow()
    m.start(0.0)
    m.on_response(task("ada"), 0.1)
    wait = m.on_error(ConnectionLost("dropped"), 0.2)
    assert isinstance(wait, Wait)
    assert wait.seconds < 0.2


# -- a write that is not idempotent (Findable's delegate) -------------------------------

FINDABLE = FindableAdapter("https://f.example", "token")
DELEGATE = Delegate(system="findable", record="a1", to="eve@example.com", id="d1")


def assignment(etag: str | None, **kw: Any) -> HttpResponse:
    record = {"id": "a1", "status": "pending", "assigneeEmail": "ada@example.com", **kw}
    if etag is not None:
        record["_etag"] = etag
    return HttpResponse.from_json(200, record)


def delegate_lost(first: HttpResponse) -> tuple[Flow, float]:
    """A delegate prepared from ``first`` whose answer was lost; the flow about to re-read."""
    f = Flow(FINDABLE, DELEGATE, policy=POLICY, rng=random.Random(1), now=0.0, wall=1.0)
    assert isinstance(f.start(0.0), Send)
    step = f.on_response(first, 0.1)
    assert isinstance(step, Send)
    assert step.write
    step = f.on_error(ConnectionLost("reset", host="f:443"), 0.2)
    assert isinstance(step, Wait)
    now = 0.2 + step.seconds
    step = f.on_timer(now)
    assert isinstance(step, Send)
    assert not step.write
    return f, now


def test_a_lost_delegate_is_resent_when_the_original_is_provably_untouched() -> None:
    f, now = delegate_lost(assignment('"e1"'))
    step = f.on_response(assignment('"e1"'), now)  # the same _etag: our delegate never landed
    assert isinstance(step, Send)
    assert step.write
    done = f.on_response(HttpResponse.from_json(201, {"id": "a1~d1", "_etag": '"s1"'}), now)
    assert isinstance(done, Done)
    assert done.result.status == "applied"
    assert done.result.writes == 2


def test_a_lost_delegate_found_in_place_is_applied_and_not_resent() -> None:
    f, now = delegate_lost(assignment('"e1"'))
    seen = assignment('"e2"', status="delegated", delegatedTo="EVE@example.com")
    done = f.on_response(seen, now)
    assert isinstance(done, Done)
    assert done.result.status == "applied"
    assert done.result.writes == 1


@pytest.mark.parametrize(
    ("first", "again", "why"),
    [
        # the original was written (our delegate, or someone else) but does not show it
        ('"e1"', '"e2"', 'version "e1" then, "e2" now'),
        # no version token: nothing can prove the delegate did not land
        (None, None, "no version token"),
    ],
)
def test_a_lost_delegate_without_proof_ends_unknown_and_is_never_resent(
    first: str | None, again: str | None, why: str
) -> None:
    f, now = delegate_lost(assignment(first))
    done = f.on_response(assignment(again, remindersSent=1), now)
    assert isinstance(done, Done)
    r = done.result
    assert (r.status, r.writes, r.unconfirmed) == ("failed", 1, True)
    assert r.error is not None
    assert r.error.startswith("unknown, not resent")
    assert why in r.error
    assert r.current == {"to": "ada@example.com"}  # what was seen, for a person to check


def test_an_idempotent_write_is_resent_after_a_changed_version() -> None:
    """The rule is the adapter's flag: Maxsight's write may go again (If-Match guards it)."""
    f = flow()
    f.start(0.0)
    f.on_response(task("ada", "v1"), 0.0)
    step = f.on_error(ConnectionLost("reset", host="m:443"), 0.1)
    assert isinstance(step, Wait)
    assert isinstance(f.on_timer(1.0), Send)
    step = f.on_response(task("ada", "v2"), 1.0)  # someone else edited; ours did not land
    assert isinstance(step, Send)
    assert step.write
    assert step.request.headers["If-Match"] == "v2"
