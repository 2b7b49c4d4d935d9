"""The Kintone fake's many-at-once endpoints: bulkRequest.json and records.json.

What Kintone documents (``shared/SYSTEMS.md``): a bulk request runs up to 20 API requests,
all or nothing, the failing request's slot holding its error and the others ``{}``;
``records.json`` reads up to 500 records of a query on ``$id``, only the fields asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from patchassign.sandbox import Faults, Sandbox

from .conftest import Answer, call
from .test_kintone import token

if TYPE_CHECKING:
    import aiohttp

API = "/k/v1/record/assignees.json"


def put(rid: int, assignees: list[str], **extra: Any) -> dict[str, Any]:
    return {"method": "PUT", "api": API, "payload": {"app": 1, "id": rid, "assignees": assignees, **extra}}  # fmt: skip


async def bulk(
    sb: Sandbox, s: aiohttp.ClientSession, requests: Any, path: str = "/k/v1/bulkRequest.json"
) -> Answer:
    return await call(
        s, "POST", sb.kintone.url + path, json={"requests": requests}, headers=token(sb)
    )


async def many(sb: Sandbox, s: aiohttp.ClientSession, **params: str) -> Answer:
    return await call(
        s, "GET", f"{sb.kintone.url}/k/v1/records.json", params=params, headers=token(sb)
    )


async def test_a_bulk_request_applies_every_update_and_answers_each_revision(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    k = sandbox.kintone
    before = {i: k.records[f"1:{i}"]["revision"] for i in (1, 2, 3)}
    a = await bulk(sandbox, session, [put(1, ["eve"]), put(2, ["fay"]), put(3, ["gus"])])
    assert a.status == 200
    assert a.body == {"results": [{"revision": str(before[i] + 1)} for i in (1, 2, 3)]}
    assert [k.records[f"1:{i}"]["assignees"] for i in (1, 2, 3)] == [["eve"], ["fay"], ["gus"]]
    assert [k.stats.writes[f"1:{i}"] for i in (1, 2, 3)] == [1, 1, 1]
    assert k.stats.requests[("bulk", 200)] == 1  # one request, for the concurrency limit too


async def test_a_bulk_request_is_all_or_nothing_and_names_the_failing_request(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    k = sandbox.kintone
    before = {key: dict(rec) for key, rec in k.records.items()}
    stale = put(2, ["fay"], revision=k.records["1:2"]["revision"] - 1 or 99)
    a = await bulk(sandbox, session, [put(1, ["eve"]), stale, put(3, ["gus"])])
    assert a.status == 409
    first, failed, last = a.body["results"]
    assert first == last == {}
    assert failed["code"] == "GAIA_CO02"
    assert {"id", "code", "message"} <= failed.keys()
    assert k.records == before  # the first update was rolled back
    assert sum(k.stats.writes.values()) == 0


async def test_updates_of_one_record_in_one_bulk_request_see_each_other(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    k = sandbox.kintone
    rev = k.records["1:1"]["revision"]
    a = await bulk(sandbox, session, [put(1, ["eve"], revision=rev), put(1, ["fay"], revision=rev + 1)])  # fmt: skip
    assert a.status == 200
    assert a.body["results"] == [{"revision": str(rev + 1)}, {"revision": str(rev + 2)}]
    assert k.records["1:1"]["assignees"] == ["fay"]
    assert k.stats.writes["1:1"] == 2


@pytest.mark.parametrize("n", [0, 21])
async def test_one_to_twenty_requests(
    sandbox: Sandbox, session: aiohttp.ClientSession, n: int
) -> None:
    a = await bulk(sandbox, session, [put(1, ["eve"])] * n)
    assert (a.status, a.body["code"]) == (400, "CB_VA01")
    assert "requests" in a.body["errors"]
    assert (await bulk(sandbox, session, [put(1, ["eve"])] * 20)).status == 200


@pytest.mark.parametrize(
    ("item", "status", "code"),
    [
        ({"method": "DELETE", "api": "/k/v1/records.json", "payload": {}}, 400, "CB_VA01"),
        (
            {"method": "PUT", "api": API, "payload": {"app": 1, "id": 999, "assignees": []}},
            404,
            "GAIA_RE01",
        ),
        (
            {"method": "PUT", "api": API, "payload": {"app": 1, "id": 1, "assignees": "eve"}},
            400,
            "CB_VA01",
        ),
        ("not an object", 400, "CB_VA01"),
    ],
)
async def test_a_bad_request_in_a_bulk_holds_its_error_in_its_slot(
    sandbox: Sandbox, session: aiohttp.ClientSession, item: Any, status: int, code: str
) -> None:
    a = await bulk(sandbox, session, [put(1, ["eve"]), item])
    assert a.status == status
    assert a.body["results"][0] == {}
    assert a.body["results"][1]["code"] == code
    assert sum(sandbox.kintone.stats.writes.values()) == 0


async def test_a_bulk_request_needs_each_apps_token(session: aiohttp.ClientSession) -> None:
    records = {"kintone": [{"app": 1, "id": 1}, {"app": 2, "id": 1}]}
    async with Sandbox(records=records, systems=["kintone"]) as sb:
        k = sb.kintone
        other = {"method": "PUT", "api": API, "payload": {"app": 2, "id": 1, "assignees": ["eve"]}}
        headers = {"X-Cybozu-API-Token": k.token_for(1)}
        url = f"{k.url}/k/v1/bulkRequest.json"
        a = await call(session, "POST", url, json={"requests": [put(1, ["eve"]), other]}, headers=headers)  # fmt: skip
        assert (a.status, a.body["results"][1]["code"]) == (400, "GAIA_IA02")
        headers = {"X-Cybozu-API-Token": f"{k.token_for(1)},{k.token_for(2)}"}
        a = await call(session, "POST", url, json={"requests": [put(1, ["eve"]), other]}, headers=headers)  # fmt: skip
        assert a.status == 200


async def test_a_guest_space_bulk_request(session: aiohttp.ClientSession) -> None:
    records = {"kintone": [{"app": 5, "id": 1, "assignees": ["ada"], "space": 9}]}
    async with Sandbox(records=records, systems=["kintone"]) as sb:
        guest = "/k/guest/9/v1/record/assignees.json"
        item = {"method": "PUT", "api": guest, "payload": {"app": 5, "id": 1, "assignees": ["eve"]}}
        a = await bulk(sb, session, [item], path="/k/guest/9/v1/bulkRequest.json")
        assert a.status == 200
        wrong = {**item, "api": API}  # the app lives in space 9
        assert (
            await bulk(sb, session, [wrong], path="/k/guest/9/v1/bulkRequest.json")
        ).status == 404
        assert sb.kintone.records["5:1"]["assignees"] == ["eve"]


async def test_records_json_reads_the_records_a_query_on_id_names(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    k = sandbox.kintone
    a = await many(sandbox, session, app="1", query='$id in ("3", "1", 999)')
    assert a.status == 200
    assert [r["$id"]["value"] for r in a.body["records"]] == ["1", "3"]  # 999 names nothing
    assert a.body["records"][0] == k.view("1:1")
    fields = {"fields[0]": "$id", "fields[1]": "$revision", "fields[2]": "Assignee"}
    a = await many(sandbox, session, app="1", query='$id in ("2")', **fields)
    assert set(a.body["records"][0]) == {"$id", "$revision", "Assignee"}
    assert [u["code"] for u in a.body["records"][0]["Assignee"]["value"]] == k.records["1:2"]["assignees"]  # fmt: skip


async def test_records_json_limits(session: aiohttp.ClientSession) -> None:
    async with Sandbox(demo=600, systems=["kintone"]) as sb:
        ids = ", ".join(f'"{i}"' for i in range(1, 601))
        a = await many(sb, session, app="1", query=f"$id in ({ids})")
        assert len(a.body["records"]) == 100  # the default limit
        a = await many(sb, session, app="1", query=f"$id in ({ids}) limit 500")
        assert len(a.body["records"]) == 500
        a = await many(sb, session, app="1", query=f"$id in ({ids}) limit 501")
        assert (a.status, a.body["code"]) == (400, "CB_VA01")


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"query": '$id in ("1")'}, 400, "CB_VA01"),
        ({"app": "1", "query": 'Status = "done"'}, 400, "CB_VA01"),
        ({"app": "7", "query": '$id in ("1")'}, 404, "GAIA_AP01"),
    ],
)
async def test_records_json_errors(
    sandbox: Sandbox, session: aiohttp.ClientSession, params: dict[str, str], status: int, code: str
) -> None:
    a = await many(sandbox, session, **params)
    assert (a.status, a.body["code"]) == (status, code)


async def test_the_editor_may_follow_each_record_a_bulk_read_returned(
    session: aiohttp.ClientSession,
) -> None:
    async with Sandbox(demo=20, systems=["kintone"], faults={"kintone": Faults(editor=1.0)}) as sb:
        ids = ", ".join(f'"{i}"' for i in range(1, 21))
        a = await many(sb, session, app="1", query=f"$id in ({ids})")
        assert a.status == 200
        assert sum(sb.kintone.stats.edits.values()) == 20
