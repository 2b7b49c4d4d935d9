"""The Helpdesk fake (an in-house system), driven with plain aiohttp: each HTTP and JSON
standard it follows, checked against the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from patchassign.sandbox import HelpdeskServer

from .conftest import Answer, call

if TYPE_CHECKING:
    import aiohttp

T = "HD-000001"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@pytest_asyncio.fixture
async def hd() -> AsyncIterator[HelpdeskServer]:
    server = HelpdeskServer()
    async with server:
        server.seed([HelpdeskServer.demo_record(i) for i in range(1, 4)])
        yield server


def url(hd: HelpdeskServer, ticket: str = T) -> str:
    return f"{hd.url}/api/tickets/{ticket}"


def auth(hd: HelpdeskServer, kind: str | None = None, **more: str) -> dict[str, str]:
    h = {"Authorization": f"Bearer {hd.token}", **more}
    if kind:
        h["Content-Type"] = kind
    return h


def header(a: Answer, name: str) -> str | None:
    return {k.lower(): v for k, v in a.headers.items()}.get(name.lower())


def etag(a: Answer) -> str | None:
    return header(a, "ETag")


async def write(
    hd: HelpdeskServer,
    session: aiohttp.ClientSession,
    method: str,
    kind: str,
    body: Any,
    **headers: str,
) -> Answer:
    return await call(session, method, url(hd), json=body, headers=auth(hd, kind, **headers))


async def test_a_read_carries_a_strong_etag_of_the_version(
    hd: HelpdeskServer, session: aiohttp.ClientSession
) -> None:
    a = await call(session, "GET", url(hd), headers=auth(hd))
    assert a.status == 200
    assert etag(a) == '"1"'
    assert a.body["assignee"] == "bob"
    assert set(a.body) == {
        "id",
        "title",
        "queue",
        "status",
        "assignee",
        "notes",
        "version",
        "updated_at",
    }
    assert (await call(session, "GET", url(hd, "HD-9"), headers=auth(hd))).status == 404
    none = await call(session, "GET", url(hd))
    assert none.status == 401
    assert none.body["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(
    ("method", "kind", "body"),
    [
        ("PATCH", MERGE, {"assignee": "eve"}),
        ("PATCH", JSON_PATCH, [{"op": "replace", "path": "/assignee", "value": "eve"}]),
    ],
)
async def test_if_match_rfc9110_stale_is_412_current_applies_and_bumps_the_tag(
    hd: HelpdeskServer, session: aiohttp.ClientSession, method: str, kind: str, body: Any
) -> None:
    stale = await write(hd, session, method, kind, body, **{"If-Match": '"0"'})
    assert stale.status == 412
    assert hd.stats.writes[T] == 0
    ok = await write(hd, session, method, kind, body, **{"If-Match": '"1"'})
    assert ok.status == 200
    assert etag(ok) == '"2"'
    assert ok.body["assignee"] == "eve"
    assert hd.records[T]["version"] == 2
    weak = await write(hd, session, method, kind, body, **{"If-Match": 'W/"2"'})
    assert weak.status == 412  # If-Match compares strongly
    star = await write(hd, session, method, kind, body, **{"If-Match": '"9", *'})
    assert star.status == 200


async def test_a_write_without_a_precondition_is_428_rfc6585(
    hd: HelpdeskServer, session: aiohttp.ClientSession
) -> None:
    a = await write(hd, session, "PATCH", MERGE, {"assignee": "eve"})
    assert a.status == 428
    assert a.body["error"]["code"] == "precondition_required"
    assert hd.records[T]["assignee"] == "bob"
    hd.require_precondition = False
    assert (await write(hd, session, "PATCH", MERGE, {"assignee": "eve"})).status == 200


async def test_a_version_member_sent_back_is_the_precondition(
    hd: HelpdeskServer, session: aiohttp.ClientSession
) -> None:
    stale = await write(hd, session, "PATCH", MERGE, {"assignee": "eve", "version": 7})
    assert stale.status == 409
    ok = await write(hd, session, "PATCH", MERGE, {"assignee": "eve", "version": 1})
    assert ok.status == 200
    assert ok.body["version"] == 2  # the server's: not what was sent
    pinned = [
        {"op": "test", "path": "/version", "value": 2},
        {"op": "replace", "path": "/assignee", "value": "fay"},
    ]
    assert (await write(hd, session, "PATCH", JSON_PATCH, pinned)).status == 200
    again = await write(hd, session, "PATCH", JSON_PATCH, pinned)
    assert again.status == 409  # RFC 5789: a failed test is a conflict with the state


async def test_merge_patch_null_unassigns_rfc7396(
    hd: HelpdeskServer, session: aiohttp.ClientSession
) -> None:
    a = await write(hd, session, "PATCH", MERGE, {"assignee": None}, **{"If-Match": '"1"'})
    assert a.status == 200
    assert a.body["assignee"] is None
    assert "assignee" in hd.records[T]


async def test_put_replaces_the_whole_ticket_and_keeps_the_servers_fields(
    hd: HelpdeskServer, session: aiohttp.ClientSession
) -> None:
    rec = dict(hd.records[T])
    body = {**rec, "assignee": ["eve", "fay"], "updated_at": "then"}
    a = await write(hd, session, "PUT", "application/json", body, **{"If-Match": '"1"'})
    assert a.status == 200
    assert a.body["assignee"] == ["eve", "fay"]
    assert a.body["version"] == 2
    assert a.body["updated_at"] != "then"
    partial = {"id": T, "assignee": "gus"}
    b = await write(hd, session, "PUT", "application/json", partial, **{"If-Match": '"2"'})
    assert b.status == 422  # PUT is the whole record
    assert "required" in b.body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"colour": "red"}, "unknown field"),
        ({"assignee": 5}, "wrong type"),
        ({"assignee": ["eve", 5]}, "list of user names"),
        ({"title": None}, "title"),
        ({"id": "HD-000002"}, "id cannot be changed"),
    ],
)
async def test_a_ticket_has_a_fixed_shape_else_422(
    hd: HelpdeskServer, session: aiohttp.ClientSession, body: Any, needle: str
) -> None:
    a = await write(hd, session, "PATCH", MERGE, body, **{"If-Match": '"1"'})
    assert a.status == 422, a
    assert needle in a.body["error"]["message"]
    assert hd.records[T]["version"] == 1


async def test_other_media_types_are_415_with_accept_patch(
    hd: HelpdeskServer, session: aiohttp.ClientSession
) -> None:
    a = await write(hd, session, "PATCH", "application/json", {"assignee": "eve"})
    assert a.status == 415
    assert header(a, "Accept-Patch") == f"{MERGE}, {JSON_PATCH}"
    bad = await write(hd, session, "PATCH", JSON_PATCH, {"op": "add"}, **{"If-Match": '"1"'})
    assert bad.status == 400  # not a JSON Patch document


async def test_the_concurrent_editor_changes_notes_and_the_tag(hd: HelpdeskServer) -> None:
    hd.edit(T)
    assert hd.records[T]["version"] == 2
    assert hd.records[T]["notes"].startswith("edited")
    with pytest.raises(ValueError, match="assignee"):
        hd.seed([{"id": "HD-X", "assignee": 3}])
