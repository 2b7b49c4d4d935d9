"""The Maxsight fake, driven with plain aiohttp."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from .conftest import call

if TYPE_CHECKING:
    import aiohttp

    from patchassign.sandbox import Sandbox

TASK = "task-000001"
UPDATE = {
    "update": {
        "assigned_by_id": "admin",
        "assigned_to_id": "eve",
        "assigned_to_type": "USER",
        "assignment_comment": "moved to team B",
    }
}


def headers(sb: Sandbox, version: str | None = None) -> dict[str, str]:
    h = {"apikey": sb.maxsight.token}
    if version is not None:
        h["If-Match"] = version
    return h


async def read(sb: Sandbox, session: aiohttp.ClientSession, task: str = TASK) -> dict[str, Any]:
    a = await call(session, "GET", f"{sb.maxsight.url}/v5/tasks/{task}", headers=headers(sb))
    assert a.status == 200
    return a.body  # type: ignore[no-any-return]


async def test_assign_then_unassign_with_if_match(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    m = sandbox.maxsight
    task = await read(sandbox, session)
    url = f"{m.url}/v5/tasks/{TASK}/update-assignment"
    a = await call(session, "PUT", url, json=UPDATE, headers=headers(sandbox, task["updated_at"]))
    assert a.status == 200
    assert a.body["assignment"] == UPDATE["update"]
    assert a.body["updated_at"] != task["updated_at"]
    assert m.records[TASK] == a.body
    b = await call(
        session,
        "PUT",
        url,
        json={"unassign": {"assigned_by_id": "admin"}},
        headers=headers(sandbox, a.body["updated_at"]),
    )
    assert b.status == 200
    assert b.body["assignment"] is None
    assert m.records[TASK]["assignment"] is None
    assert m.stats.writes[TASK] == 2


async def test_stale_if_match_is_409_and_changes_nothing(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    m = sandbox.maxsight
    task = await read(sandbox, session)
    url = f"{m.url}/v5/tasks/{TASK}/update-assignment"
    assert (
        await call(session, "PUT", url, json=UPDATE, headers=headers(sandbox, task["updated_at"]))
    ).status == 200
    now = dict(m.records[TASK])
    again = await call(
        session, "PUT", url, json=UPDATE, headers=headers(sandbox, task["updated_at"])
    )
    assert again.status == 409
    assert again.body == {"message": "Version mismatch"}
    # the comparison is on the exact string: an equal instant spelled differently is stale
    respelled = now["updated_at"].replace("Z", "+00:00")
    assert (
        await call(session, "PUT", url, json=UPDATE, headers=headers(sandbox, respelled))
    ).status == 409
    assert m.records[TASK] == now
    assert m.stats.writes[TASK] == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"update": UPDATE["update"], "unassign": {"assigned_by_id": "a"}},
        {"update": {**UPDATE["update"], "assigned_to_type": "GROUP"}},
        {"update": {"assigned_by_id": "a", "assigned_to_type": "USER"}},
        {"update": {**UPDATE["update"], "assignment_comment": 5}},
        {"update": {**UPDATE["update"], "extra": 1}},
        {"unassign": {}},
        {"unassign": "admin"},
        {"reassign": UPDATE["update"]},
        ["update"],
    ],
)
async def test_invalid_bodies_are_400(
    sandbox: Sandbox, session: aiohttp.ClientSession, body: Any
) -> None:
    task = await read(sandbox, session)
    a = await call(
        session,
        "PUT",
        f"{sandbox.maxsight.url}/v5/tasks/{TASK}/update-assignment",
        json=body,
        headers=headers(sandbox, task["updated_at"]),
    )
    assert a.status == 400
    assert a.body["message"]
    assert sandbox.maxsight.stats.writes[TASK] == 0


async def test_missing_if_match_unknown_task_and_bad_key(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    m = sandbox.maxsight
    url = f"{m.url}/v5/tasks/{TASK}/update-assignment"
    assert (await call(session, "PUT", url, json=UPDATE, headers=headers(sandbox))).status == 400
    nope = await call(
        session,
        "PUT",
        f"{m.url}/v5/tasks/nope/update-assignment",
        json=UPDATE,
        headers=headers(sandbox, "x"),
    )
    assert (nope.status, nope.body) == (404, {"message": "Task not found"})
    assert (
        await call(session, "GET", f"{m.url}/v5/tasks/nope", headers=headers(sandbox))
    ).status == 404
    bad = await call(session, "PUT", url, json=UPDATE, headers={"apikey": "wrong", "If-Match": "x"})
    assert bad.status == 401
    assert "apikey" in bad.body["message"]
    assert m.stats.writes[TASK] == 0
