"""The Findable fake, driven with plain aiohttp."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from patchassign.sandbox import Sandbox

from .conftest import call

if TYPE_CHECKING:
    import aiohttp


def bearer(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.findable.token}"}


async def delegate(sb: Sandbox, session: aiohttp.ClientSession, aid: str, body: Any) -> Any:
    return await call(
        session,
        "POST",
        f"{sb.findable.url}/assignments/{aid}/delegate",
        json=body,
        headers=bearer(sb),
    )


async def test_delegate_creates_a_successor_and_closes_the_original(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    f = sandbox.findable
    original = dict(f.records["asg-000001"])
    a = await delegate(
        sandbox, session, "asg-000001", {"toUpn": "eve@example.com", "reason": "team B"}
    )
    assert a.status == 201
    succ = a.body
    assert succ["id"] != "asg-000001"
    assert (succ["status"], succ["assigneeEmail"], succ["delegatedFrom"]) == (
        "pending",
        "eve@example.com",
        "asg-000001",
    )
    assert succ["delegationChain"] == [original["assigneeEmail"]]
    assert f.records[succ["id"]] == succ
    closed = f.records["asg-000001"]
    assert (closed["status"], closed["delegatedTo"], closed["delegationReason"]) == (
        "delegated",
        "eve@example.com",
        "team B",
    )
    assert closed["_etag"] != original["_etag"]
    # the successor can be delegated on: the chain grows
    b = await delegate(sandbox, session, succ["id"], {"toUpn": "fay@example.com"})
    assert b.status == 201
    assert b.body["delegationChain"] == [original["assigneeEmail"], "eve@example.com"]
    read = await call(session, "GET", f"{f.url}/assignments/{succ['id']}", headers=bearer(sandbox))
    assert read.body["status"] == "delegated"


async def test_a_resend_is_refused_not_duplicated(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    f = sandbox.findable
    body = {"toUpn": "eve@example.com"}
    assert (await delegate(sandbox, session, "asg-000002", body)).status == 201
    again = await delegate(sandbox, session, "asg-000002", body)
    assert again.status == 409
    assert again.body["error"]["code"] == "Conflict"
    assert f.stats.writes["asg-000002"] == 1
    assert sum(1 for r in f.records.values() if r.get("delegatedFrom") == "asg-000002") == 1


@pytest.mark.parametrize(
    ("status", "allow"), [("completed", True), ("cancelled", True), ("pending", False)]
)
async def test_closed_or_locked_assignments_are_409(
    session: aiohttp.ClientSession, status: str, allow: bool
) -> None:
    records = {"findable": [{"id": "a1", "status": status, "allowDelegation": allow}]}
    async with Sandbox(records=records, systems=["findable"]) as sb:
        a = await delegate(sb, session, "a1", {"toUpn": "eve@example.com"})
        assert a.status == 409
        assert sb.findable.records["a1"]["status"] == status
        assert len(sb.findable.records) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"toUpn": ""},
        {"toUpn": "eve"},
        {"toUpn": 5},
        {"toUpn": "eve@example.com", "reason": 1},
        {"toUpn": "e@x.io", "x": 1},
        [],
    ],
)
async def test_bad_bodies_are_400(
    sandbox: Sandbox, session: aiohttp.ClientSession, body: Any
) -> None:
    a = await delegate(sandbox, session, "asg-000001", body)
    assert a.status == 400
    assert a.body["error"]["message"]
    assert sandbox.findable.records["asg-000001"]["status"] in ("pending", "in_progress")


async def test_delegating_to_the_current_assignee_is_400(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    current = sandbox.findable.records["asg-000001"]["assigneeEmail"]
    assert (
        await delegate(sandbox, session, "asg-000001", {"toUpn": current.upper()})
    ).status == 400


async def test_unknown_and_unauthorized(sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    f = sandbox.findable
    assert (await delegate(sandbox, session, "nope", {"toUpn": "eve@example.com"})).status == 404
    a = await call(
        session,
        "POST",
        f"{f.url}/assignments/asg-000001/delegate",
        json={"toUpn": "e@x.io"},
        headers={"Authorization": "Bearer x"},
    )
    assert a.status == 401
    assert a.body["error"]["code"] == "Unauthorized"
    assert sum(f.stats.writes.values()) == 0
