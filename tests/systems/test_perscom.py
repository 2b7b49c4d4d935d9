"""PERSCOM adapter: unit tests on bytes, then end to end against the sandbox."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from patchassign.changes import Assign, Merge, MovePerson, Patch, SetFields, convert_change
from patchassign.dispatch import Dispatcher, RetryPolicy
from patchassign.errors import InvalidChange
from patchassign.sandbox import Sandbox
from patchassign.systems import (
    Applied,
    Conflict,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    PerscomAdapter,
    Retry,
    Unchanged,
)

from .helpers import drive

if TYPE_CHECKING:
    import aiohttp

REC: dict[str, Any] = {
    "id": 3,
    "user_id": 100,
    "type": "primary",
    "unit_id": 1,
    "text": None,
    "updated_at": "2026-01-01T00:00:00Z",
}


def adapter(url: str = "https://api.perscom.io", token: str = "tok") -> PerscomAdapter:
    return PerscomAdapter(url, token, tenant="42", notifications=False)


def body(req: Any) -> Any:
    assert isinstance(req, HttpRequest)
    assert req.body is not None
    return json.loads(req.body)


def test_assign_is_a_blind_partial_update() -> None:
    a = adapter()
    change = Assign(system="perscom", record=3, to="101")
    a.check(change)
    assert not a.needs_read(change)
    req = a.prepare(change, None)
    assert isinstance(req, HttpRequest)
    assert (req.method, req.url) == ("PATCH", "https://api.perscom.io/v2/assignment-records/3")
    assert req.headers["Authorization"] == "Bearer tok"
    assert req.headers["X-Perscom-Id"] == "42"
    assert req.headers["X-Perscom-Notifications"] == "false"
    assert body(req) == {"user_id": 101}


def test_set_and_patch_send_only_what_differs_and_the_user_id() -> None:
    """Only the fields that differ, plus ``user_id``, which PERSCOM requires in every
    update body (sent back as read)."""
    a = adapter()
    cur = Current(REC, REC["updated_at"])
    assert body(
        a.prepare(
            SetFields(system="perscom", record=3, state={"unit_id": 2, "type": "primary"}), cur
        )
    ) == {"user_id": 100, "unit_id": 2}
    assert isinstance(
        a.prepare(SetFields(system="perscom", record=3, state={"unit_id": 1}), cur), Unchanged
    )
    p = Patch(
        system="perscom",
        record=3,
        patch=[
            {"op": "test", "path": "/user_id", "value": 100},
            {"op": "replace", "path": "/text", "value": "x"},
        ],
    )
    assert body(a.prepare(p, cur)) == {"user_id": 100, "text": "x"}
    bad = Patch(system="perscom", record=3, patch=[{"op": "test", "path": "/user_id", "value": 7}])
    out = a.prepare(bad, cur)
    assert isinstance(out, Conflict)
    assert not out.recoverable


def test_a_merge_without_the_user_id_reads_it_first() -> None:
    a = adapter()
    blind = Merge(system="perscom", record=3, merge={"user_id": 7, "status_id": None})
    assert not a.needs_read(blind)
    assert body(a.prepare(blind, None)) == {"user_id": 7, "status_id": None}
    partial = Merge(system="perscom", record=3, merge={"status_id": None})
    assert a.needs_read(partial)
    cur = Current(REC, REC["updated_at"])
    assert body(a.prepare(partial, cur)) == {"user_id": 100, "status_id": None}
    broken = Current({**REC, "user_id": None}, REC["updated_at"])
    out = a.prepare(partial, broken)
    assert isinstance(out, Failed)
    assert "user_id" in out.reason


@pytest.mark.parametrize(
    "change",
    [
        {"action": "assign", "to": "eve"},
        {"action": "assign", "to": "5", "to_type": "team"},
        {"action": "unassign"},
        {"action": "delegate", "to": "a@b.c"},
        {"action": "merge", "merge": {"type": "tertiary"}},
        {"action": "merge", "merge": {"user_id": True}},
        {"action": "merge", "merge": {"nickname": "x"}},
        {"action": "merge", "merge": {"text": "x" * 65_536}},
        {"action": "set", "state": {"user_id": None}},
        {"action": "assign", "to": "5", "record": "abc"},
        {"action": "assign", "to": "5", "record": 0},
        {"action": "merge", "merge": {"author_id": None}},  # not nullable in the source
        {"action": "move", "to": {"text": "no placement"}},
        {"action": "move", "to": {"unit_id": 2, "user_id": 5}},
        {"action": "move", "to": {"unit_id": 2, "type": "secondary"}},
        {"action": "move", "to": {"unit_id": "2"}},
        {"action": "move", "to": {"unit_id": 2}, "expect": {"text": "x"}},
    ],
)
def test_refused_before_sending(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidChange) as e:
        adapter().check(convert_change({"system": "perscom", "record": 1, **change}))
    assert e.value.system == "perscom"
    assert e.value.field is not None


@pytest.mark.parametrize(
    ("status", "payload", "kind"),
    [
        (200, {"data": REC}, Applied),
        (
            422,
            {
                "error": {
                    "message": "m",
                    "type": "ValidationException",
                    "errors": {"type": ["The selected type is invalid."]},
                }
            },
            Failed,
        ),
        (401, {"error": {"message": "unauth"}}, Failed),
        (403, {"error": {"message": "scope"}}, Failed),
        (404, {"error": {"message": "nf"}}, Failed),
        (429, {"error": {"message": "slow down"}}, Retry),
        (500, {"error": {"message": "boom"}}, Retry),
        (503, {"error": {"message": "maint"}}, Retry),
    ],
)
def test_response_classification(status: int, payload: Any, kind: type) -> None:
    headers = {"Retry-After": "9"} if status == 429 else {}
    out = adapter().outcome(
        Assign(system="perscom", record=3, to="1"),
        HttpResponse(status, headers, json.dumps(payload).encode()),
    )
    assert isinstance(out, kind)
    if status == 422:
        assert isinstance(out, Failed)
        assert "type: The selected type is invalid." in out.reason
    if status == 429:
        assert isinstance(out, Retry)
        assert out.after == 9.0
    if status == 500:
        assert isinstance(out, Retry)
        assert out.ambiguous


async def test_end_to_end_every_change_kind(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    p = sandbox.perscom
    a = adapter(p.url, p.token)
    cases: list[tuple[Any, dict[str, Any]]] = [
        (Assign(system="perscom", record=1, to="777"), {"user_id": 777}),
        (
            Assign(system="perscom", record=2, to="778", expect=str(p.records["2"]["user_id"])),
            {"user_id": 778},
        ),
        (
            Merge(system="perscom", record=3, merge={"unit_id": 9, "text": "moved"}),
            {"unit_id": 9, "text": "moved"},
        ),
        (SetFields(system="perscom", record=4, state={"type": "secondary"}), {"type": "secondary"}),
        (
            Patch(
                system="perscom",
                record=5,
                patch=[{"op": "replace", "path": "/position_id", "value": 99}],
            ),
            {"position_id": 99},
        ),
    ]
    for change, expected in cases:
        out, writes = await drive(a, change, session)
        assert isinstance(out, Applied), (change, out)
        assert len(writes) == 1
        rec = p.records[str(change.record)]
        assert {k: rec[k] for k in expected} == expected
        assert out.record == rec
    # expect that no longer holds: not forced
    out, writes = await drive(a, Assign(system="perscom", record=1, to="5", expect="123"), session)
    assert isinstance(out, Conflict)
    assert writes == []
    assert p.records["1"]["user_id"] == 777
    nf, _ = await drive(a, Assign(system="perscom", record=999, to="1"), session)
    assert isinstance(nf, Failed)
    assert nf.status == 404


def test_a_move_reads_the_user_then_creates_a_record() -> None:
    a = adapter()
    move = MovePerson(system="perscom", record=42, to={"unit_id": 7, "position_id": 8})
    a.check(move)
    assert a.idempotent_for(move) is False
    assert a.idempotent_for(Assign(system="perscom", record=1, to="5")) is True
    read = a.read(move)
    assert (read.method, read.url) == ("GET", "https://api.perscom.io/v2/users/42")
    user = {"id": 42, "unit_id": 1, "position_id": 2, "updated_at": "2026-01-01T00:00:00Z"}
    current = a.current(move, HttpResponse.from_json(200, {"data": user}))
    assert current == Current(user, "2026-01-01T00:00:00Z")
    write = a.prepare(move, current)
    assert isinstance(write, HttpRequest)
    assert (write.method, write.url) == ("POST", "https://api.perscom.io/v2/assignment-records")
    assert body(write) == {"user_id": 42, "type": "primary", "unit_id": 7, "position_id": 8}
    there = Current({**user, "unit_id": 7, "position_id": 8}, "v2")
    assert isinstance(a.prepare(move, there), Unchanged)
    guarded = MovePerson(system="perscom", record=42, to={"unit_id": 7}, expect={"unit_id": 3})
    assert isinstance(a.prepare(guarded, current), Conflict)
    created = a.outcome(move, HttpResponse.from_json(201, {"data": {"id": 9, "user_id": 42}}))
    assert created == Applied(None, {"id": 9, "user_id": 42})
    assert isinstance(a.outcome(move, HttpResponse.from_json(200, {"data": {"id": 9}})), Retry)


@pytest.mark.parametrize("method", ["assign", "move"])
async def test_only_a_move_moves_the_user(method: str, session: aiohttp.ClientSession) -> None:
    async with Sandbox(demo=3, systems=["perscom"]) as sb:
        p = sb.perscom
        a = adapter(p.url, p.token)
        before = dict(p.user(150))
        if method == "assign":
            change: Any = Merge(system="perscom", record=1, merge={"user_id": 150, "unit_id": 7})
        else:
            change = MovePerson(system="perscom", record=150, to={"unit_id": 7})
        out, writes = await drive(a, change, session)
        assert isinstance(out, Applied)
        assert len(writes) == 1
        if method == "assign":  # the record changed, the user did not
            assert p.records["1"]["unit_id"] == 7
            assert p.user(150) == before
        else:
            assert p.user(150)["unit_id"] == 7
            assert out.record["user_id"] == 150


async def test_moves_with_dropped_answers_happen_at_most_once() -> None:
    n = 120
    faults = {"drop": 0.3, "writes_only": True, "seed": 5}
    async with Sandbox(demo=1, systems=["perscom"], faults=faults) as sb:
        p = sb.perscom
        moves = [
            MovePerson(
                system="perscom", record=300 + i, to={"unit_id": 2 + i % 5, "position_id": 9}
            )
            for i in range(n)
        ]
        policy = RetryPolicy(base=0.01, cap=0.05, timeout=2.0, attempts=10, settle=0.05)
        async with Dispatcher([adapter(p.url, p.token)], retry=policy) as d:
            results = await d.send_all(moves)
        assert p.stats.dropped["after"] > 5
        assert p.stats.dropped["before"] > 5
        assert {r.status for r in results} == {"applied"}  # the re-read proves each one
        assert max(p.stats.writes.values()) == 1  # never a second record for one move
        for m in moves:
            assert p.user(int(m.record))["unit_id"] == m.to["unit_id"]
        created = [r for r in p.records.values() if r["id"] > 1]
        assert len(created) == n
