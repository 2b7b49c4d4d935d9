"""Maxsight adapter: unit tests on bytes, then end to end against the sandbox."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from patchassign.changes import Assign, Unassign, convert_change
from patchassign.errors import InvalidChange
from patchassign.systems import (
    Applied,
    Conflict,
    Current,
    Failed,
    HttpRequest,
    HttpResponse,
    MaxsightAdapter,
    Retry,
    Unchanged,
)

from .helpers import drive

if TYPE_CHECKING:
    import aiohttp

    from patchassign.sandbox import Sandbox

TASK = {"id": "t1", "updated_at": "2026-01-01T00:00:00.000001Z", "assignment": None}


def adapter(url: str = "https://api.example.com", key: str = "k3y") -> MaxsightAdapter:
    return MaxsightAdapter(url, key, assigned_by="admin")


def assign(**kw: object) -> Assign:
    return Assign(system="maxsight", record=kw.pop("record", "t1"), to=kw.pop("to", "eve"), **kw)  # type: ignore[arg-type]


def test_assign_request_bytes_and_headers() -> None:
    a = adapter()
    req = a.prepare(assign(to_type="team", comment="c"), Current(TASK, TASK["updated_at"]))
    assert isinstance(req, HttpRequest)
    assert (req.method, req.url) == ("PUT", "https://api.example.com/v5/tasks/t1/update-assignment")
    assert req.headers["apikey"] == "k3y"
    assert req.headers["If-Match"] == TASK["updated_at"]
    assert req.headers["Content-Type"] == "application/json"
    assert req.body is not None
    assert json.loads(req.body) == {
        "update": {
            "assigned_by_id": "admin",
            "assigned_to_id": "eve",
            "assigned_to_type": "TEAM",
            "assignment_comment": "c",
        }
    }


def test_unassign_and_unchanged() -> None:
    a = adapter()
    held = {**TASK, "assignment": {"assigned_to_id": "eve", "assigned_to_type": "USER"}}
    req = a.prepare(
        Unassign(system="maxsight", record="t1", by="bob"), Current(held, TASK["updated_at"])
    )
    assert isinstance(req, HttpRequest)
    assert req.body is not None
    assert json.loads(req.body) == {
        "unassign": {"assigned_by_id": "bob", "assignment_comment": None}
    }
    assert isinstance(a.prepare(assign(), Current(held, "v")), Unchanged)
    assert isinstance(
        a.prepare(Unassign(system="maxsight", record="t1"), Current(TASK, "v")), Unchanged
    )
    # a different type is a change
    assert isinstance(a.prepare(assign(to_type="team"), Current(held, "v")), HttpRequest)


def test_expect_mismatch_is_a_final_conflict() -> None:
    held = {**TASK, "assignment": {"assigned_to_id": "zed", "assigned_to_type": "USER"}}
    out = adapter().prepare(assign(expect="ada"), Current(held, "v"))
    assert isinstance(out, Conflict)
    assert not out.recoverable


def test_ids_are_encoded() -> None:
    a = adapter()
    req = a.read(assign(record="../admin"))
    assert req.url == "https://api.example.com/v5/tasks/..%2Fadmin"
    req2 = a.prepare(assign(record="a b/c"), Current(TASK, "v"))
    assert isinstance(req2, HttpRequest)
    assert req2.url.endswith("/v5/tasks/a%20b%2Fc/update-assignment")


def test_version_with_crlf_from_a_hostile_server_is_not_sent() -> None:
    out = adapter().prepare(assign(), Current(TASK, "v\r\nX-Evil: 1"))
    assert isinstance(out, Failed)


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind"),
    [
        (200, {}, b'{"updated_at": "v2", "assignment": null}', Applied),
        (409, {}, b'{"message": "Version mismatch"}', Conflict),
        (401, {}, b'{"message": "Unauthorized"}', Failed),
        (404, {}, b'{"message": "Task not found"}', Failed),
        (400, {}, b'{"message": "bad"}', Failed),
        (429, {"X-RateLimit-Retry-Secs": "12"}, b"{}", Retry),
        (503, {}, b"", Retry),
    ],
)
def test_response_classification(
    status: int, headers: dict[str, str], body: bytes, kind: type
) -> None:
    out = adapter().outcome(assign(), HttpResponse(status, headers, body))
    assert isinstance(out, kind)
    if status == 429:
        assert isinstance(out, Retry)
        assert out.after == 12.0
    if status == 404:
        assert isinstance(out, Failed)
        assert "Task not found" in out.reason
    if status == 200:
        assert isinstance(out, Applied)
        assert out.version == "v2"


def test_checks_before_sending() -> None:
    a = MaxsightAdapter("https://x", "k")
    with pytest.raises(InvalidChange, match="assigned_by"):
        a.check(assign())
    with pytest.raises(InvalidChange) as e:
        adapter().check(
            convert_change({"system": "maxsight", "record": "t", "action": "merge", "merge": {}})
        )
    assert e.value.field == "action"
    with pytest.raises(InvalidChange):
        adapter().check(assign(to=["a", "b"]))
    with pytest.raises(InvalidChange):
        adapter().check(assign(record=5))
    assert "k3y" not in repr(adapter())


async def test_end_to_end_assign_unassign_and_conflict_recovery(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    m = sandbox.maxsight
    a = adapter(m.url, m.token)
    out, writes = await drive(a, assign(record="task-000001", to="eve"), session)
    assert isinstance(out, Applied)
    assert m.records["task-000001"]["assignment"]["assigned_to_id"] == "eve"
    assert out.version == m.records["task-000001"]["updated_at"]
    # again: nothing to send
    again, writes = await drive(a, assign(record="task-000001", to="eve"), session)
    assert isinstance(again, Unchanged)
    assert writes == []
    # a concurrent editor between read and write: 409, re-read, resend, applied once
    out, writes = await drive(
        a,
        assign(record="task-000002", to="fay", expect="team-a"),
        session,
        between=lambda n: m.edit("task-000002") if n == 0 else None,
    )
    assert isinstance(out, Applied)
    assert len(writes) == 2
    assert m.stats.count("update", 409) == 1
    assert m.stats.writes["task-000002"] == 1
    assert m.records["task-000002"]["assignment"]["assigned_to_id"] == "fay"
    out, _ = await drive(a, Unassign(system="maxsight", record="task-000002"), session)
    assert isinstance(out, Applied)
    assert m.records["task-000002"]["assignment"] is None
    # someone else holds it now: the change is not forced
    out, _ = await drive(a, assign(record="task-000002", to="gus", expect="fay"), session)
    assert isinstance(out, Conflict)
    assert not out.recoverable
    missing, _ = await drive(a, assign(record="../admin"), session)
    assert isinstance(missing, Failed)
    assert missing.status == 404
