"""The Kintone fake, driven with plain aiohttp."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import pytest

from patchassign.sandbox import KintoneServer, Sandbox

from .conftest import call


def token(sb: Sandbox) -> dict[str, str]:
    """Every seeded app's token, combined (a request for any of them passes)."""
    k = sb.kintone
    return {"X-Cybozu-API-Token": ",".join(k.token_for(a) for a in k.apps)}


async def put(
    sb: Sandbox,
    session: aiohttp.ClientSession,
    body: Any,
    path: str = "/k/v1/record/assignees.json",
    **kw: Any,
) -> Any:
    return await call(
        session, "PUT", sb.kintone.url + path, json=body, headers=kw.get("headers", token(sb))
    )


async def test_read_shape_and_revision_flow(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    k = sandbox.kintone
    r = await call(
        session,
        "GET",
        f"{k.url}/k/v1/record.json",
        params={"app": "1", "id": "2"},
        headers=token(sandbox),
    )
    assert r.status == 200
    rec = r.body["record"]
    assert rec["$revision"] == {"type": "__REVISION__", "value": "1"}
    assert rec["Assignee"]["type"] == "STATUS_ASSIGNEE"
    assert [a["code"] for a in rec["Assignee"]["value"]] == k.records["1:2"]["assignees"]
    assert r.headers["X-ConcurrencyLimit-Limit"] == "100"
    ok = await put(
        sandbox,
        session,
        {"app": 1, "id": 2, "assignees": ["eve", "fay"], "revision": rec["$revision"]["value"]},
    )
    assert ok.status == 200
    assert ok.body == {"revision": "2"}
    assert k.records["1:2"]["assignees"] == ["eve", "fay"]
    stale = await put(sandbox, session, {"app": 1, "id": 2, "assignees": ["gus"], "revision": 1})
    assert stale.status == 409
    assert stale.body["code"] == "GAIA_CO02"
    assert {"id", "code", "message"} <= stale.body.keys()
    assert k.records["1:2"]["assignees"] == ["eve", "fay"]
    for skip in ({"revision": -1}, {"revision": "-1"}, {}):
        r2 = await put(sandbox, session, {"app": "1", "id": "2", "assignees": ["hal"], **skip})
        assert r2.status == 200
    assert k.records["1:2"]["revision"] == 5
    assert k.stats.writes["1:2"] == 4


async def test_assignee_limit_and_empty_list(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    k = sandbox.kintone
    many = [f"user{i}" for i in range(101)]
    a = await put(sandbox, session, {"app": 1, "id": 3, "assignees": many})
    assert a.status == 400
    assert a.body["code"] == "CB_VA01"
    assert "100" in a.body["errors"]["assignees"]["messages"][0]
    assert (await put(sandbox, session, {"app": 1, "id": 3, "assignees": many[:100]})).status == 200
    assert len(k.records["1:3"]["assignees"]) == 100
    assert (await put(sandbox, session, {"app": 1, "id": 3, "assignees": []})).status == 200
    assert k.records["1:3"]["assignees"] == []


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"id": 1, "assignees": []}, 400, "CB_VA01", "app"),
        ({"app": 1, "assignees": []}, 400, "CB_VA01", "id"),
        ({"app": "one", "id": 1, "assignees": []}, 400, "CB_VA01", "app"),
        ({"app": 1, "id": 1}, 400, "CB_VA01", "assignees"),
        ({"app": 1, "id": 1, "assignees": "eve"}, 400, "CB_VA01", "assignees"),
        ({"app": 1, "id": 1, "assignees": [], "revision": "x"}, 400, "CB_VA01", "revision"),
        ({"app": 1, "id": 999, "assignees": []}, 404, "GAIA_RE01", None),
        ({"app": 7, "id": 1, "assignees": []}, 404, "GAIA_AP01", None),
    ],
)
async def test_errors_carry_kintone_codes(
    sandbox: Sandbox,
    session: aiohttp.ClientSession,
    body: Any,
    status: int,
    code: str,
    field: str | None,
) -> None:
    a = await put(sandbox, session, body)
    assert (a.status, a.body["code"]) == (status, code)
    if field:
        assert field in a.body["errors"]
    assert sum(sandbox.kintone.stats.writes.values()) == 0


async def test_auth_variants(sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    k = sandbox.kintone
    body = {"app": 1, "id": 1, "assignees": ["eve"]}
    listed = {"X-Cybozu-API-Token": f"other,{k.token_for(1)}"}
    assert (await put(sandbox, session, body, headers=listed)).status == 200
    password = base64.b64encode(f"{KintoneServer.login}:{k.token}".encode()).decode()
    assert (
        await put(sandbox, session, body, headers={"X-Cybozu-Authorization": password})
    ).status == 200
    for bad in ({}, {"X-Cybozu-API-Token": "nope"}, {"X-Cybozu-Authorization": "!!"}):
        a = await put(sandbox, session, body, headers=bad)
        assert a.status == 401
        assert a.body["code"] == "CB_WA01"
    assert k.stats.writes["1:1"] == 2


async def test_guest_space_path(session: aiohttp.ClientSession) -> None:
    records = {"kintone": [{"app": 5, "id": 1, "assignees": ["ada"], "space": 9}]}
    async with Sandbox(records=records, systems=["kintone"]) as sb:
        body = {"app": 5, "id": 1, "assignees": ["eve"]}
        assert (
            await put(sb, session, body, path="/k/guest/9/v1/record/assignees.json")
        ).status == 200
        assert (await put(sb, session, body, path="/k/v1/record/assignees.json")).status == 404
        assert (
            await put(sb, session, body, path="/k/guest/8/v1/record/assignees.json")
        ).status == 404
        assert sb.kintone.records["5:1"]["assignees"] == ["eve"]


async def test_single_assignee_status(session: aiohttp.ClientSession) -> None:
    records = {"kintone": [{"app": 2, "id": 1, "assignees": ["ada"], "single_assignee": True}]}
    async with Sandbox(records=records, systems=["kintone"]) as sb:
        assert (
            await put(sb, session, {"app": 2, "id": 1, "assignees": ["eve", "fay"]})
        ).status == 400
        assert (await put(sb, session, {"app": 2, "id": 1, "assignees": ["eve"]})).status == 200


async def test_more_than_100_concurrent_requests_get_429(session: aiohttp.ClientSession) -> None:
    async with Sandbox(demo=1, systems=["kintone"], faults={"latency": 1.0}) as sb:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as wide:
            answers = await asyncio.gather(
                *(
                    call(
                        wide,
                        "GET",
                        f"{sb.kintone.url}/k/v1/record.json?app=1&id=1",
                        headers=token(sb),
                    )
                    for _ in range(130)
                )
            )
        statuses = sorted(a.status for a in answers)
        # Connections open over some milliseconds, so a straggler can get in after the first
        # answers: what must hold is that never more than 100 were served at once.
        assert statuses.count(200) >= 100
        assert statuses.count(429) >= 20
        assert statuses.count(200) + statuses.count(429) == 130
        assert all(
            int(a.headers["X-ConcurrencyLimit-Running"]) <= 100 for a in answers if a.status == 200
        )
        busy = next(a for a in answers if a.status == 429)
        assert "Retry-After" not in busy.headers
        assert busy.body["code"] == "GAIA_TO04"  # Kintone's own code for it
        assert int(busy.headers["X-ConcurrencyLimit-Running"]) > 100


async def test_an_api_token_belongs_to_one_app(session: aiohttp.ClientSession) -> None:
    records: dict[str, list[dict[str, Any]]] = {
        "kintone": [{"app": 1, "id": 1, "assignees": ["ada"]}, {"app": 2, "id": 1}]
    }
    async with Sandbox(records=records, systems=["kintone"]) as sb:
        k = sb.kintone
        body = {"app": 1, "id": 1, "assignees": ["eve"]}
        other = {"X-Cybozu-API-Token": k.token_for(2)}
        a = await put(sb, session, body, headers=other)
        assert (a.status, a.body["code"]) == (400, "GAIA_IA02")
        read = await call(session, "GET", f"{k.url}/k/v1/record.json?app=1&id=1", headers=other)
        assert (read.status, read.body["code"]) == (400, "GAIA_IA02")
        # several apps' tokens in one header: the app's own is found among them
        both = {"X-Cybozu-API-Token": f"{k.token_for(2)},{k.token_for(1)}"}
        assert (await put(sb, session, body, headers=both)).status == 200
        assert k.stats.writes["1:1"] == 1


async def test_updating_assignees_needs_the_app_management_permission(
    session: aiohttp.ClientSession,
) -> None:
    async with Sandbox(records={"kintone": [{"app": 1, "id": 1}]}, systems=["kintone"]) as sb:
        k = sb.kintone
        viewer = {"X-Cybozu-API-Token": k.add_token(1, ["view"])}
        read = await call(session, "GET", f"{k.url}/k/v1/record.json?app=1&id=1", headers=viewer)
        assert read.status == 200
        body = {"app": 1, "id": 1, "assignees": ["eve"]}
        a = await put(sb, session, body, headers=viewer)
        assert (a.status, a.body["code"]) == (403, "GAIA_NO01")
        manager = {"X-Cybozu-API-Token": k.add_token(1, ["manage"])}  # cannot view records
        a = await put(sb, session, body, headers=manager)
        assert (a.status, a.body["code"]) == (403, "GAIA_NO01")
        both = {
            "X-Cybozu-API-Token": f"{viewer['X-Cybozu-API-Token']},{manager['X-Cybozu-API-Token']}"
        }
        assert (await put(sb, session, body, headers=both)).status == 200
        assert k.stats.writes["1:1"] == 1
