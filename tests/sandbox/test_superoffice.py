"""The SuperOffice fake, driven with plain aiohttp."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

import pytest

from patchassign.sandbox.superoffice import format_updated, parse_updated

from .conftest import call

if TYPE_CHECKING:
    import aiohttp

    from patchassign.sandbox import Sandbox


def bearer(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.superoffice.token}"}


async def patch(
    sb: Sandbox,
    session: aiohttp.ClientSession,
    body: Any,
    rid: int = 1,
    headers: dict[str, str] | None = None,
) -> Any:
    return await call(
        session,
        "PATCH",
        f"{sb.superoffice.url}/api/v1/ProjectMember/{rid}",
        json=body,
        headers={**bearer(sb), **(headers or {})},
    )


async def test_json_patch_with_case_insensitive_paths(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    s = sandbox.superoffice
    before = s.records["1"]
    ops = [
        {"op": "test", "path": "personid", "value": before["PersonId"]},
        {"op": "replace", "path": "PERSONID", "value": 104},
        {"op": "replace", "path": "/firstname", "value": "Eve"},
        {"op": "add", "path": "Comment", "value": "moved"},
    ]
    a = await patch(sandbox, session, ops)
    assert a.status == 200
    rec = s.records["1"]
    assert (rec["PersonId"], rec["Firstname"], rec["Comment"]) == (104, "Eve", "moved")
    assert "personid" not in rec
    assert "firstname" not in rec
    assert a.body == rec
    assert parse_updated(rec["Updated"]) > parse_updated(before["Updated"])
    assert rec["Updated"].endswith("+01:00")
    assert s.stats.writes["1"] == 1


async def test_merge_patch_is_converted_against_the_record(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    s = sandbox.superoffice
    a = await patch(sandbox, session, {"personid": 105, "CONTACTDEPARTMENT": "Team B"})
    assert a.status == 200
    assert s.records["1"]["PersonId"] == 105
    assert s.records["1"]["ContactDepartment"] == "Team B"
    assert "personid" not in s.records["1"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ([{"op": "move", "from": "/Phone", "path": "/Comment"}], 400),
        ([{"op": "copy", "from": "/Phone", "path": "/Comment"}], 400),
        ([{"op": "replace", "path": "/NoSuchField", "value": 1}], 400),
        ([{"op": "add", "path": "/Unknown", "value": 1}], 400),
        ([{"op": "replace", "path": "/PersonId", "value": "105"}], 400),
        ([{"op": "replace", "path": "/PersonId", "value": 2**31}], 400),
        ([{"op": "replace", "path": "/PersonId", "value": True}], 400),
        ([{"op": "remove", "path": "/PersonId"}], 400),
        ([{"op": "replace", "path": "/ProjectmemberId", "value": 2}], 400),
        ([{"op": "replace", "path": "/Updated", "value": "2000-01-01T00:00:00Z"}], 400),
        ([{"op": "frobnicate", "path": "/Phone"}], 400),
        ({"Phone": None, "Unknown": 1}, 400),
        ("text", 400),
        (
            [
                {"op": "test", "path": "/PersonId", "value": -1},
                {"op": "replace", "path": "/Phone", "value": "1"},
            ],
            409,
        ),
    ],
)
async def test_refused_patches_change_nothing(
    sandbox: Sandbox, session: aiohttp.ClientSession, body: Any, status: int
) -> None:
    s = sandbox.superoffice
    before = dict(s.records["1"])
    a = await patch(sandbox, session, body)
    assert a.status == status
    assert a.body["Error"] is True
    assert {"ErrorType", "ErrorMessage", "ErrorSource"} <= a.body.keys()
    assert s.records["1"] == before
    assert s.stats.writes["1"] == 0


async def test_if_unmodified_since_compares_whole_seconds_in_utc(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    s = sandbox.superoffice
    s.precision = "second"
    updated = parse_updated(s.records["1"]["Updated"])
    same_second = format_datetime(updated.replace(microsecond=0), usegmt=True)
    a = await patch(
        sandbox, session, {"Comment": "1"}, headers={"If-Unmodified-Since": same_second}
    )
    assert a.status == 200
    older = format_datetime(
        parse_updated(s.records["1"]["Updated"]) - timedelta(seconds=5), usegmt=True
    )
    b = await patch(sandbox, session, {"Comment": "2"}, headers={"If-Unmodified-Since": older})
    assert b.status == 412
    assert b.body["ErrorType"] == "PreconditionFailed"
    assert s.records["1"]["Comment"] == "1"
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    assert (
        await patch(sandbox, session, {"Comment": "3"}, headers={"If-Unmodified-Since": later})
    ).status == 200
    # an invalid HTTP-date is ignored (RFC 9110)
    assert (
        await patch(
            sandbox, session, {"Comment": "4"}, headers={"If-Unmodified-Since": "yesterday"}
        )
    ).status == 200


async def test_select_nulls_the_other_fields(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    s = sandbox.superoffice
    a = await call(
        session,
        "GET",
        f"{s.url}/api/v1/ProjectMember/2?$select=personid,Firstname",
        headers=bearer(sandbox),
    )
    assert a.status == 200
    assert a.body["PersonId"] == s.records["2"]["PersonId"]
    assert a.body["Firstname"] == s.records["2"]["Firstname"]
    assert a.body["ContactName"] is None
    assert set(a.body) == set(s.records["2"])


async def test_auth_schemes_and_404(sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    s = sandbox.superoffice
    url = f"{s.url}/api/v1/ProjectMember/1"
    basic = "Basic " + base64.b64encode(f"tje0:{s.token}".encode()).decode()
    ok = [
        {"Authorization": basic},
        {"Authorization": f"SOTicket {s.token}", "SO-AppToken": "app"},
    ]
    for h in ok:
        assert (await call(session, "GET", url, headers=h)).status == 200
    bad = [
        {},
        {"Authorization": f"SOTicket {s.token}"},  # no app token
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic !!!"},
    ]
    for h in bad:
        a = await call(session, "GET", url, headers=h)
        assert a.status == 401
        assert a.body["ErrorType"] == "Unauthorized"
    nf = await call(
        session, "PATCH", f"{s.url}/api/v1/ProjectMember/999", json={}, headers=bearer(sandbox)
    )
    assert nf.status == 404
    assert nf.body["ErrorType"] == "NotFound"


def test_updated_format_round_trips() -> None:
    t = datetime(2005, 5, 26, 0, 30, 53, 69272, tzinfo=UTC)
    text = format_updated(t, timedelta(hours=2))
    assert text == "2005-05-26T02:30:53.0692720+02:00"
    assert parse_updated(text) == t
    assert parse_updated("2005-05-26T02:30:53.0692723+02:00") == t.replace(microsecond=69272)
    assert parse_updated("2005-05-26T00:30:53Z") == t.replace(microsecond=0)


async def test_at_full_precision_an_http_date_is_always_older_than_updated(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """Issue 17: the fake floored ``Updated`` to whole seconds exactly as the adapter
    did, so they agreed with each other and not (necessarily) with the vendor. At full
    precision a record updated at hh:mm:ss.5 has changed since hh:mm:ss: 412."""
    s = sandbox.superoffice
    assert s.precision == "full"
    s.records["1"]["Updated"] = "2026-11-23T10:00:00.5000000+01:00"
    a = await patch(
        sandbox,
        session,
        {"Comment": "1"},
        headers={"If-Unmodified-Since": "Mon, 23 Nov 2026 09:00:00 GMT"},
    )
    assert a.status == 412
    # what the adapter sends instead: a test of Updated as read
    ops = [
        {"op": "test", "path": "/Updated", "value": "2026-11-23T10:00:00.5000000+01:00"},
        {"op": "replace", "path": "/Comment", "value": "2"},
    ]
    assert (await patch(sandbox, session, ops)).status == 200
    stale = await patch(sandbox, session, ops)  # Updated changed with that write
    assert stale.status == 409
    assert s.records["1"]["Comment"] == "2"


async def test_remove_resets_a_property_to_its_default(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """The entity has a fixed set of properties: ``remove`` empties one, it does not
    take it out of the record (the fake used to delete it)."""
    s = sandbox.superoffice
    s.records["1"]["Comment"] = "x"
    a = await patch(sandbox, session, [{"op": "remove", "path": "/Comment"}])
    assert a.status == 200
    assert s.records["1"]["Comment"] == ""
    assert a.body["Comment"] == ""
    b = await patch(sandbox, session, [{"op": "remove", "path": "/PersonId"}])
    assert b.status == 400
    assert "cannot be removed" in b.body["ErrorMessage"]


@pytest.mark.parametrize("precision", ["full", "second"])
async def test_the_adapter_passes_at_either_precision_with_concurrent_editors(
    precision: str,
) -> None:
    from patchassign import Dispatcher, RetryPolicy
    from patchassign.sandbox import Faults, Sandbox, demo_mismatches, demo_plan

    n = 40
    faults = {"superoffice": Faults(editor=0.3, seed=4)}
    async with Sandbox(demo=n, systems=["superoffice"], faults=faults) as sb:
        sb.superoffice.precision = precision
        # conflicts=20: six editor strikes in a row (0.3**6) are not what this tests
        policy = RetryPolicy(base=0.01, cap=0.05, attempts=10, conflicts=20)
        async with Dispatcher(sb.adapters(), retry=policy) as d:
            results = await d.send_all(demo_plan(n, ["superoffice"]))
        assert {r.status for r in results} == {"applied"}, [r.error for r in results]
        assert not demo_mismatches(sb, n, ["superoffice"])
        assert max(sb.superoffice.stats.writes.values()) == 1
        assert sb.superoffice.stats.count(status=409) > 0  # the editors were caught


async def test_if_unmodified_since_at_full_precision_cannot_succeed() -> None:
    """Why the header is off by default: against a server comparing at full precision
    every write is refused, and no re-read helps (the same Updated comes back)."""
    from patchassign import Dispatcher, RetryPolicy
    from patchassign.sandbox import Sandbox, demo_plan
    from patchassign.systems import SuperOfficeAdapter

    async with Sandbox(demo=5, systems=["superoffice"]) as sb:
        sb.superoffice.records["1"]["Updated"] = "2026-11-23T10:00:00.5000000+01:00"
        adapter = SuperOfficeAdapter(
            sb.superoffice.url, token=sb.superoffice.token, if_unmodified_since=True
        )
        policy = RetryPolicy(base=0.01, cap=0.05, attempts=4)
        async with Dispatcher([adapter], retry=policy) as d:
            (result,) = await d.send_all(list(demo_plan(1, ["superoffice"])))
        assert result.status != "applied"
        assert sb.superoffice.stats.count(status=412) >= 1
        assert sb.superoffice.stats.writes["1"] == 0
