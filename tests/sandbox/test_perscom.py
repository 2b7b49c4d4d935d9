"""The PERSCOM fake, driven with plain aiohttp."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from patchassign.sandbox import Sandbox

from ..helpers import CONFORMANCE
from .conftest import call

if TYPE_CHECKING:
    import aiohttp


SPEC = CONFORMANCE.parent / "vendor-specs" / "perscom-assignment-records.openapi.json"


def auth(sb: Sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sb.perscom.token}"}


async def test_update_changes_only_the_given_fields(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    p = sandbox.perscom
    before = dict(p.records["1"])
    a = await call(
        session,
        "PATCH",
        f"{p.url}/v2/assignment-records/1",
        json={"user_id": 999, "unit_id": None},
        headers=auth(sandbox),
    )
    assert a.status == 200
    assert a.body["data"]["user_id"] == 999
    assert a.body["data"]["unit_id"] is None
    assert p.records["1"] == a.body["data"]
    assert {
        k: v for k, v in p.records["1"].items() if k not in ("user_id", "unit_id", "updated_at")
    } == {k: v for k, v in before.items() if k not in ("user_id", "unit_id", "updated_at")}
    read = await call(session, "GET", f"{p.url}/v1/assignment-records/1", headers=auth(sandbox))
    assert read.status == 200
    assert read.body["data"] == p.records["1"]
    assert p.stats.writes["1"] == 1


async def test_last_write_wins_with_no_version_check(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    p = sandbox.perscom
    for user in (1, 2, 3):
        a = await call(
            session,
            "PATCH",
            f"{p.url}/v2/assignment-records/2",
            json={"user_id": user},
            headers=auth(sandbox),
        )
        assert a.status == 200
    assert p.records["2"]["user_id"] == 3
    assert p.stats.writes["2"] == 3


async def test_an_unchanged_update_keeps_updated_at(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    p = sandbox.perscom
    p.records["3"]["updated_at"] = "2020-01-01T00:00:00Z"
    same = {k: p.records["3"][k] for k in ("user_id", "type", "unit_id")}
    a = await call(
        session, "PATCH", f"{p.url}/v2/assignment-records/3", json=same, headers=auth(sandbox)
    )
    assert a.status == 200
    assert a.body["data"]["updated_at"] == "2020-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "tertiary"}, "type"),
        ({"user_id": "5"}, "user_id"),
        ({"user_id": True}, "user_id"),
        ({"user_id": None}, "user_id"),
        ({"status_id": 1.5}, "status_id"),
        ({"text": 12}, "text"),
        ({"text": "x" * 65_536}, "text"),
    ],
)
async def test_validation_errors_are_422_naming_the_field_and_change_nothing(
    sandbox: Sandbox, session: aiohttp.ClientSession, body: dict[str, Any], field: str
) -> None:
    p = sandbox.perscom
    before = dict(p.records["1"])
    body = {"user_id": before["user_id"], **body}  # required in an update too
    a = await call(
        session, "PATCH", f"{p.url}/v2/assignment-records/1", json=body, headers=auth(sandbox)
    )
    assert a.status == 422
    assert a.body["error"]["type"] == "ValidationException"
    assert list(a.body["error"]["errors"]) == [field]
    assert {"message", "request_id", "trace_id"} <= a.body["error"].keys()
    assert p.records["1"] == before
    assert p.stats.writes["1"] == 0


async def test_text_at_the_limit_nulls_and_unknown_members(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    p = sandbox.perscom
    body = {"user_id": 1, "text": "é" * 65_535, "document_id": None, "nickname": "ignored"}
    a = await call(
        session, "PATCH", f"{p.url}/v2/assignment-records/1", json=body, headers=auth(sandbox)
    )
    assert a.status == 200
    assert len(p.records["1"]["text"]) == 65_535
    assert "nickname" not in p.records["1"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v2/assignment-records/404", 404),
        ("/v2/assignment-records/abc", 404),
        ("/v3/assignment-records/1", 404),
        # unknown includes are filtered, not refused (Laravel Orion)
        ("/v2/assignment-records/1?include=secrets", 200),
    ],
)
async def test_unknown_records_versions_and_includes(
    sandbox: Sandbox, session: aiohttp.ClientSession, path: str, status: int
) -> None:
    a = await call(
        session, "PATCH", sandbox.perscom.url + path, json={"user_id": 1}, headers=auth(sandbox)
    )
    assert a.status == status
    if status != 200:
        assert set(a.body["error"]) >= {"message", "type"}


async def test_include_that_is_allowed(sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    a = await call(
        session,
        "GET",
        f"{sandbox.perscom.url}/v2/assignment-records/1?include=user",
        headers=auth(sandbox),
    )
    assert a.status == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer"])
async def test_bad_credentials_are_401(
    sandbox: Sandbox, session: aiohttp.ClientSession, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    a = await call(
        session,
        "PATCH",
        f"{sandbox.perscom.url}/v2/assignment-records/1",
        json={"user_id": 1},
        headers=headers,
    )
    assert a.status == 401
    assert a.body["error"]["type"] == "AuthenticationException"
    assert sandbox.perscom.stats.writes["1"] == 0


@pytest.mark.parametrize("raw", [b"", b"{not json", b"\xff\xfe", b"[" * 5000])
async def test_bodies_that_are_not_json_are_no_input_as_in_laravel(
    sandbox: Sandbox, session: aiohttp.ClientSession, raw: bytes
) -> None:
    """Laravel decodes a body that is not JSON to no input at all, never a 400 (which the
    OpenAPI file documents for no endpoint): each lacks its required fields (422 with
    ``error.errors``), and nothing changes."""
    p = sandbox.perscom
    before = dict(p.records["1"])
    headers = {**auth(sandbox), "Content-Type": "application/json"}
    base = f"{p.url}/v2/assignment-records"
    a = await call(session, "PATCH", f"{base}/1", data=raw, headers=headers)
    assert a.status == 422  # no input: no user_id, which an update requires too
    assert a.body["error"]["errors"] == {"user_id": ["The user id field is required."]}
    a = await call(session, "POST", base, data=raw, headers=headers)
    assert a.status == 422
    assert a.body["error"]["errors"] == {"user_id": ["The user id field is required."]}
    a = await call(session, "PATCH", f"{base}/batch", data=raw, headers=headers)
    assert a.status == 422
    assert list(a.body["error"]["errors"]) == ["resources"]
    assert p.records["1"] == before


async def test_a_json_body_that_is_not_an_object_is_refused(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    a = await call(
        session,
        "PATCH",
        f"{sandbox.perscom.url}/v2/assignment-records/1",
        data=b"[1, 2]",
        headers={**auth(sandbox), "Content-Type": "application/json"},
    )
    assert a.status == 422
    assert a.body["error"]["message"]


async def test_batch_is_all_or_nothing(sandbox: Sandbox, session: aiohttp.ClientSession) -> None:
    p = sandbox.perscom
    before = {k: dict(v) for k, v in p.records.items()}
    bad = {"resources": {"1": {"user_id": 50}, "2": {"user_id": 2, "type": "nope"}}}
    a = await call(
        session, "PATCH", f"{p.url}/v2/assignment-records/batch", json=bad, headers=auth(sandbox)
    )
    assert a.status == 422
    assert list(a.body["error"]["errors"]) == ["resources.2.type"]
    assert p.records == before
    good = {"resources": {"1": {"user_id": 50}, "2": {"user_id": 2, "type": "secondary"}}}
    a = await call(
        session, "PATCH", f"{p.url}/v2/assignment-records/batch", json=good, headers=auth(sandbox)
    )
    assert a.status == 200
    assert [r["id"] for r in a.body["data"]] == [1, 2]
    assert p.records["1"]["user_id"] == 50
    assert p.records["2"]["type"] == "secondary"
    missing = {"resources": {"1": {"user_id": 51}, "999": {"user_id": 1}}}
    a = await call(
        session,
        "PATCH",
        f"{p.url}/v2/assignment-records/batch",
        json=missing,
        headers=auth(sandbox),
    )
    assert a.status == 404
    assert p.records["1"]["user_id"] == 50


@pytest.mark.skipif(not SPEC.exists(), reason=f"vendor spec not found at {SPEC}")
async def test_answers_match_the_vendor_openapi_description(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """Every member of a record answer is declared by the spec, with the declared type."""
    spec = json.loads(SPEC.read_text())
    schemas = spec["components"]["schemas"]
    declared: dict[str, Any] = {"id": {"type": "integer"}}
    for part in ("AssignmentRecord", "Label", "Dates"):
        declared.update(schemas[part]["properties"])
    kinds = {"integer": int, "string": str}
    a = await call(
        session, "GET", f"{sandbox.perscom.url}/v2/assignment-records/1", headers=auth(sandbox)
    )
    for key, value in a.body["data"].items():
        assert key in declared, key
        if value is None:
            assert declared[key].get("nullable") or key == "text", key
        else:
            assert type(value) is kinds[declared[key]["type"]], key
            if "enum" in declared[key]:
                assert value in declared[key]["enum"]
    for status in ("401", "404", "422", "429"):
        assert (
            "error"
            in spec["paths"]["/{version}/assignment-records/{assignment_record}"]["patch"][
                "responses"
            ][status]["content"]["application/json"]["schema"]["properties"]
        )


async def test_an_update_requires_the_user_id_as_documented(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    """The page and the OpenAPI file both mark ``user_id`` required in an update's body:
    a partial update without it is 422 (not a silent success the adapter could rely on);
    ``type``, required by the page but not by the file, is not."""
    p = sandbox.perscom
    before = dict(p.records["1"])
    for body in ({}, {"unit_id": 1}, {"type": "primary"}):
        a = await call(
            session, "PATCH", f"{p.url}/v2/assignment-records/1", json=body, headers=auth(sandbox)
        )
        assert a.status == 422, body
        assert a.body["error"]["errors"] == {"user_id": ["The user id field is required."]}
    a = await call(
        session,
        "PATCH",
        f"{p.url}/v2/assignment-records/1",
        json={"user_id": before["user_id"], "unit_id": 2},
        headers=auth(sandbox),
    )
    assert a.status == 200
    assert p.records["1"] == {**before, "unit_id": 2, "updated_at": p.records["1"]["updated_at"]}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"user_id": 5000}, "user_id", "The selected user id is invalid."),
        ({"unit_id": 100}, "unit_id", "The selected unit id is invalid."),
        ({"position_id": 123456}, "position_id", "The selected position id is invalid."),
        ({"author_id": None}, "author_id", "The author id field must be an integer."),
        ({"author_id": 4321}, "author_id", "The selected author id is invalid."),
    ],
)
async def test_ids_that_name_nothing_and_a_null_author_are_422(
    sandbox: Sandbox, session: aiohttp.ClientSession, body: dict[str, Any], field: str, message: str
) -> None:
    p = sandbox.perscom
    for method, path in (("PATCH", "/v2/assignment-records/1"), ("POST", "/v2/assignment-records")):
        sent = {"user_id": 1, **body}
        a = await call(session, method, p.url + path, json=sent, headers=auth(sandbox))
        assert a.status == 422, (method, a.body)
        assert a.body["error"]["errors"] == {field: [message]}
    assert sum(p.stats.writes.values()) == 0


async def test_only_creating_a_record_moves_its_user(
    sandbox: Sandbox, session: aiohttp.ClientSession
) -> None:
    p = sandbox.perscom
    user = (await call(session, "GET", f"{p.url}/v2/users/42", headers=auth(sandbox))).body["data"]
    placed = {k: user[k] for k in ("unit_id", "position_id", "status_id", "specialty_id")}
    # an update changes the record, not the user
    a = await call(
        session,
        "PATCH",
        f"{p.url}/v2/assignment-records/1",
        json={"user_id": 42, "unit_id": 7, "position_id": 8},
        headers=auth(sandbox),
    )
    assert a.status == 200
    again = (await call(session, "GET", f"{p.url}/v2/users/42", headers=auth(sandbox))).body
    assert {k: again["data"][k] for k in placed} == placed
    # a new primary record moves them
    a = await call(
        session,
        "POST",
        f"{p.url}/v2/assignment-records",
        json={"user_id": 42, "unit_id": 7, "position_id": 8, "text": "moved"},
        headers=auth(sandbox),
    )
    assert a.status == 201
    assert a.body["data"]["id"] > 1
    moved = (await call(session, "GET", f"{p.url}/v2/users/42", headers=auth(sandbox))).body
    assert (moved["data"]["unit_id"], moved["data"]["position_id"]) == (7, 8)
    # a secondary one does not
    a = await call(
        session,
        "POST",
        f"{p.url}/v2/assignment-records",
        json={"user_id": 42, "unit_id": 9, "type": "secondary"},
        headers=auth(sandbox),
    )
    assert a.status == 201
    assert p.users[42]["unit_id"] == 7
    assert p.stats.writes["users/42"] == 2
    missing = await call(
        session, "POST", f"{p.url}/v2/assignment-records", json={}, headers=auth(sandbox)
    )
    assert missing.status == 422
    assert missing.body["error"]["errors"] == {"user_id": ["The user id field is required."]}
    nobody = await call(session, "GET", f"{p.url}/v2/users/5000", headers=auth(sandbox))
    assert nobody.status == 404


async def test_a_tenant_must_be_named_in_x_perscom_id(session: aiohttp.ClientSession) -> None:
    async with Sandbox(demo=2, systems=["perscom"]) as sb:
        p = sb.perscom
        p.tenant = "acme"
        url = f"{p.url}/v2/assignment-records/1"
        assert (await call(session, "GET", url, headers=auth(sb))).status == 401
        wrong = {**auth(sb), "X-Perscom-Id": "other"}
        assert (await call(session, "GET", url, headers=wrong)).status == 401
        right = {**auth(sb), "X-Perscom-Id": "acme"}
        assert (await call(session, "GET", url, headers=right)).status == 200
