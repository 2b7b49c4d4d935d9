"""PERSCOM adapter: unit tests on bytes, then end to end against the sandbox."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from patchassign.changes import Assign, Merge, Patch, SetFields, convert_change
from patchassign.errors import InvalidChange
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

    from patchassign.sandbox import Sandbox

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


def test_set_and_patch_send_only_what_differs() -> None:
    a = adapter()
    cur = Current(REC, REC["updated_at"])
    assert body(
        a.prepare(
            SetFields(system="perscom", record=3, state={"unit_id": 2, "type": "primary"}), cur
        )
    ) == {"unit_id": 2}
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
    assert body(a.prepare(p, cur)) == {"text": "x"}
    bad = Patch(system="perscom", record=3, patch=[{"op": "test", "path": "/user_id", "value": 7}])
    out = a.prepare(bad, cur)
    assert isinstance(out, Conflict)
    assert not out.recoverable
    assert body(a.prepare(Merge(system="perscom", record=3, merge={"status_id": None}), None)) == {
        "status_id": None
    }


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
