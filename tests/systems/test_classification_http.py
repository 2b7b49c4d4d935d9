"""Error classification over real aiohttp requests answered by aioresponses (no server)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from patchassign.changes import Assign, Change, Delegate, Merge
from patchassign.systems import (
    Applied,
    BaseAdapter,
    Conflict,
    Failed,
    FindableAdapter,
    HttpResponse,
    KintoneAdapter,
    MaxsightAdapter,
    PerscomAdapter,
    RestAdapter,
    Retry,
    SuperOfficeAdapter,
)

from ..http_mock import aioresponses
from .helpers import drive

BASE = "https://api.example.test"
KREC = {
    "record": {
        "$revision": {"type": "__REVISION__", "value": "3"},
        "A": {"type": "STATUS_ASSIGNEE", "value": [{"code": "ada"}]},
    }
}

SYSTEMS: dict[str, tuple[BaseAdapter, Change, Any, str]] = {
    # adapter, change, what a read answers, method of the write
    "perscom": (
        PerscomAdapter(BASE, "t"),
        Merge(system="perscom", record=1, merge={"user_id": 7, "unit_id": 2}),
        None,
        "PATCH",
    ),
    "maxsight": (
        MaxsightAdapter(BASE, "k", assigned_by="me"),
        Assign(system="maxsight", record="t1", to="eve"),
        {"updated_at": "v1", "assignment": None},
        "PUT",
    ),
    "kintone": (
        KintoneAdapter(BASE, api_token="t"),
        Assign(system="kintone", record="1:2", to="eve"),
        KREC,
        "PUT",
    ),
    "superoffice": (
        SuperOfficeAdapter(BASE, token="t"),
        Assign(system="superoffice", record=7, to="5"),
        {"PersonId": 1, "Updated": "2026-01-01T00:00:00Z"},
        "PATCH",
    ),
    "findable": (
        FindableAdapter(BASE, "t"),
        Delegate(system="findable", record="a1", to="eve@example.com"),
        {"status": "pending", "assigneeEmail": "ada@example.com"},
        "POST",
    ),
}

CASES = [
    # system, write status, write body, headers, expected outcome, extra check
    ("perscom", 429, {"error": {"message": "slow"}}, {"Retry-After": "30"}, Retry, {"after": 30.0}),
    (
        "perscom",
        422,
        {"error": {"message": "bad", "errors": {"unit_id": ["must exist"]}}},
        {},
        Failed,
        {"status": 422},
    ),
    ("perscom", 502, {}, {}, Retry, {"ambiguous": True}),
    ("maxsight", 429, {"message": "slow"}, {"X-RateLimit-Retry-Secs": "4"}, Retry, {"after": 4.0}),
    ("maxsight", 401, {"message": "Unauthorized"}, {}, Failed, {"status": 401}),
    (
        "kintone",
        409,
        {"code": "GAIA_CO02", "message": "stale", "id": "1"},
        {},
        Conflict,
        {"recoverable": True},
    ),
    ("kintone", 400, {"code": "CB_VA01", "message": "bad", "id": "1"}, {}, Failed, {"status": 400}),
    ("kintone", 429, {"code": "X", "message": "busy", "id": "1"}, {}, Retry, {"after": None}),
    ("superoffice", 412, {"Error": True, "ErrorMessage": "changed"}, {}, Conflict, {"status": 412}),
    (
        "superoffice",
        503,
        {},
        {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"},
        Retry,
        {"ambiguous": False},
    ),
    ("findable", 409, {"error": {"message": "no"}}, {}, Conflict, {"status": 409}),
    ("findable", 201, {"id": "a2", "_etag": "e"}, {}, Applied, {"version": "e"}),
]


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.mark.parametrize(("system", "status", "body", "headers", "kind", "attrs"), CASES)
async def test_classification_over_http(
    session: aiohttp.ClientSession,
    system: str,
    status: int,
    body: Any,
    headers: dict[str, str],
    kind: type,
    attrs: dict[str, Any],
) -> None:
    adapter, change, read_body, method = SYSTEMS[system]
    with aioresponses() as mock:
        if read_body is not None:
            mock.get(re.compile(re.escape(BASE) + ".*"), status=200, payload=read_body)
        mock.add(
            re.compile(re.escape(BASE) + ".*"), method, status=status, payload=body, headers=headers
        )
        out, writes = await drive(adapter, change, session, rounds=1)
    assert isinstance(out, kind), out
    assert len(writes) == 1
    for name, value in attrs.items():
        assert getattr(out, name) == value, name
    if status == 503 and "Retry-After" in headers:
        assert isinstance(out, Retry)
        assert out.after is not None
        assert out.after > 0


REDIRECTED: dict[str, tuple[Any, Change]] = {
    **{name: (adapter, change) for name, (adapter, change, _, _) in SYSTEMS.items()},
    "rest": (
        RestAdapter(BASE, system="helpdesk", record="/tickets/{id}", token="t"),
        Assign(system="helpdesk", record="T1", to="eve"),
    ),
}


@pytest.mark.parametrize("system", sorted(REDIRECTED))
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_fails_except_a_see_other_to_a_write(system: str, status: int) -> None:
    """Redirects are not followed. To a read, every one is a wrong URL (``redirected``:
    a few in a row stop the system); to a write, ``303 See Other`` says the server took
    it and put its answer elsewhere (RFC 9110, 15.4.4): ambiguous, read back. The others
    ask for the write to be sent elsewhere: it was not taken."""
    adapter, change = REDIRECTED[system]
    answer = HttpResponse(status, {"Location": "https://elsewhere.test/x?token=s3cret"}, b"")
    read = adapter.current(change, answer)
    assert isinstance(read, Failed)
    assert read.redirected
    wrote = adapter.outcome(change, answer)
    if status == 303:
        assert isinstance(wrote, Retry)
        assert wrote.ambiguous
        assert wrote.reason.startswith("HTTP 303 See Other to https://elsewhere.test/x?...")
    else:
        assert isinstance(wrote, Failed)
        assert wrote.redirected
    assert "s3cret" not in repr(read) + repr(wrote)
