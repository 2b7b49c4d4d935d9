"""Each fake against its vendor's own words.

Every rule below quotes the vendor's page for the endpoint (``shared/seeds/``); the test
checks that the quote is on the page (so a rule cannot drift from its source) and then
that the fake behaves as the quote says. The answers of a write are checked against the
page's documented response: every field the fake sends is documented, every field the page
gives (or marks required) is there, with the documented JSON type. Where the vendor is
silent the fakes follow our assumptions, listed in docs/systems/*.md ("Documented and
assumed"); PERSCOM's OpenAPI file has its own test (``test_perscom_openapi.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from patchassign.sandbox import Sandbox
from tests.helpers import SEEDS

from .conftest import Answer, call

Check = Callable[[Sandbox, aiohttp.ClientSession], Awaitable[None]]
RULES: list[tuple[str, str, str, Check]] = []


def rule(system: str, seed: str, quote: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        RULES.append((system, seed, quote, check))
        return check

    return register


def page(seed: str) -> str:
    """A vendor page with its whitespace collapsed (quotes span line breaks)."""
    if not (SEEDS / seed).exists():  # the vendors' pages live beside the repository
        pytest.skip(f"the vendor's page {seed} not found in {SEEDS}")
    return " ".join((SEEDS / seed).read_text().split())


# ---- requests, one helper per system ----------------------------------------------------


async def perscom(sb: Sandbox, s: aiohttp.ClientSession, body: Any, v: str = "v2") -> Answer:
    url = f"{sb.perscom.url}/{v}/assignment-records/1"
    return await call(s, "PATCH", url, json=body, headers={"Authorization": f"Bearer {sb.perscom.token}"})  # fmt: skip


async def maxsight(
    sb: Sandbox, s: aiohttp.ClientSession, body: Any, *, task: str = "task-000001", **h: str
) -> Answer:
    m = sb.maxsight
    url = f"{m.url}/v5/tasks/{task}/update-assignment"
    version = m.records[task]["updated_at"] if task in m.records else "x"
    headers = {"apikey": m.token, "If-Match": version, **h}
    return await call(s, "PUT", url, json=body, headers={k: v for k, v in headers.items() if v})


ASSIGN = {
    "update": {
        "assigned_by_id": "admin",
        "assigned_to_id": "eve",
        "assigned_to_type": "USER",
        "assignment_comment": None,
    }
}


async def kintone(
    sb: Sandbox, s: aiohttp.ClientSession, body: dict[str, Any], token: str | None = None
) -> Answer:
    k = sb.kintone
    headers = {"X-Cybozu-API-Token": token or k.token_for(1)}
    url = f"{k.url}/k/v1/record/assignees.json"
    return await call(s, "PUT", url, json={"app": 1, "id": 1, **body}, headers=headers)


async def superoffice(
    sb: Sandbox,
    s: aiohttp.ClientSession,
    body: Any,
    rid: int = 1,
    headers: dict[str, str] | None = None,
) -> Answer:
    so = sb.superoffice
    headers = {"Authorization": f"Bearer {so.token}", **(headers or {})}
    return await call(s, "PATCH", f"{so.url}/api/v1/ProjectMember/{rid}", json=body, headers=headers)  # fmt: skip


async def findable(sb: Sandbox, s: aiohttp.ClientSession, body: Any, auth: bool = True) -> Answer:
    f = sb.findable
    headers = {"Authorization": f"Bearer {f.token}"} if auth else {}
    url = f"{f.url}/assignments/asg-000001/delegate"
    return await call(s, "POST", url, json=body, headers=headers)


# ---- PERSCOM: PATCH /{version}/assignment-records/{id} ----------------------------------

PERSCOM = "perscom-assignment-records-patch.txt"


@rule("perscom", PERSCOM, "user_id integer required The ID of the user")
async def _perscom_user_id_required(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    a = await perscom(sb, s, {"unit_id": 1})
    assert (a.status, list(a.body["error"]["errors"])) == (422, ["user_id"])
    assert (await perscom(sb, s, {"user_id": 201, "unit_id": 1})).status == 200


@rule("perscom", PERSCOM, "Available options: primary, secondary status_id")
async def _perscom_type_enum(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    a = await perscom(sb, s, {"user_id": 201, "type": "tertiary"})
    assert (a.status, list(a.body["error"]["errors"])) == (422, ["type"])
    assert (await perscom(sb, s, {"user_id": 201, "type": "secondary"})).status == 200


@rule("perscom", PERSCOM, "author_id integer The ID of the user who created")
async def _perscom_author_not_null(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    a = await perscom(sb, s, {"user_id": 201, "author_id": None})
    assert (a.status, list(a.body["error"]["errors"])) == (422, ["author_id"])


@rule("perscom", PERSCOM, "Supports HTML. Maximum length: 65535")
async def _perscom_text_length(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    a = await perscom(sb, s, {"user_id": 201, "text": "x" * 65_536})
    assert (a.status, list(a.body["error"]["errors"])) == (422, ["text"])
    assert (await perscom(sb, s, {"user_id": 201, "text": "<b>" + "x" * 65_532})).status == 200


@rule("perscom", PERSCOM, "Available options: v1, v2")
async def _perscom_versions(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    assert (await perscom(sb, s, {"user_id": 201}, v="v1")).status == 200
    assert (await perscom(sb, s, {"user_id": 201}, v="v3")).status == 404


# ---- Maxsight: PUT /v5/tasks/{task_id}/update-assignment -------------------------------

MAXSIGHT = "tasks-update-assignment-put.txt"


@rule("maxsight", MAXSIGHT, "If the task has changed since you last retrieved it, the API returns a version mismatch")  # fmt: skip
async def _maxsight_if_match(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    before = dict(sb.maxsight.records["task-000001"])
    a = await maxsight(sb, s, ASSIGN, **{"If-Match": "2001-01-01T00:00:00Z"})
    assert a.status == 409
    assert sb.maxsight.records["task-000001"] == before
    assert (await maxsight(sb, s, ASSIGN)).status == 200


@rule("maxsight", MAXSIGHT, "If the task is unassigned successfully, the assignment value in the response is null.")  # fmt: skip
async def _maxsight_unassign(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    a = await maxsight(sb, s, {"unassign": {"assigned_by_id": "admin"}})
    assert a.status == 200
    assert a.body["assignment"] is None


@rule("maxsight", MAXSIGHT, "Set assigned_to_type to USER to assign the task to an individual user, or TEAM to assign the task to a team.")  # fmt: skip
async def _maxsight_assignee_types(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    team = {"update": {**ASSIGN["update"], "assigned_to_type": "TEAM", "assigned_to_id": "t"}}
    assert (await maxsight(sb, s, team)).status == 200
    group = {"update": {**ASSIGN["update"], "assigned_to_type": "GROUP"}}
    assert (await maxsight(sb, s, group)).status == 400


@rule("maxsight", MAXSIGHT, "If you receive a 404 Task not found response, check that the task_id is valid.")  # fmt: skip
async def _maxsight_not_found(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    assert (await maxsight(sb, s, ASSIGN, task="task-999999")).status == 404


@rule("maxsight", MAXSIGHT, "make sure the apikey header is included and contains a valid key")
async def _maxsight_api_key(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    assert (await maxsight(sb, s, ASSIGN, apikey="")).status == 401
    assert (await maxsight(sb, s, ASSIGN, apikey="wrong")).status == 401
    assert sum(sb.maxsight.stats.writes.values()) == 0


# ---- Kintone: PUT /k/v1/record/assignees.json -------------------------------------------

KINTONE = "kintone-record-assignees-put.txt"


@rule("kintone", KINTONE, "The maximum number of Assignees is 100.")
async def _kintone_hundred(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    many = [f"user{i}" for i in range(101)]
    a = await kintone(sb, s, {"assignees": many})
    assert (a.status, a.body["code"]) == (400, "CB_VA01")
    assert (await kintone(sb, s, {"assignees": many[:100]})).status == 200


@rule("kintone", KINTONE, "If empty, no users will be assigned.")
async def _kintone_empty(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    assert (await kintone(sb, s, {"assignees": []})).status == 200
    assert sb.kintone.records["1:1"]["assignees"] == []


@rule("kintone", KINTONE, "If the specified revision is not the latest revision, the request will result in an error.")  # fmt: skip
async def _kintone_stale_revision(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    now = sb.kintone.records["1:1"]["revision"]
    a = await kintone(sb, s, {"assignees": ["eve"], "revision": now - 1 or 99})
    assert (a.status, a.body["code"]) == (409, "GAIA_CO02")
    assert (await kintone(sb, s, {"assignees": ["eve"], "revision": now})).status == 200


@rule("kintone", KINTONE, "The revision will not be checked if this parameter is ignored, or -1 is specified.")  # fmt: skip
async def _kintone_unchecked_revision(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    for skip in ({"revision": -1}, {"revision": "-1"}, {}):
        assert (await kintone(sb, s, {"assignees": ["eve"], **skip})).status == 200


@rule("kintone", KINTONE, "The user or API Token must both have permission to manage the App and view records.")  # fmt: skip
async def _kintone_permissions(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    viewer = sb.kintone.add_token(1, ["view"])
    a = await kintone(sb, s, {"assignees": ["eve"]}, token=viewer)
    assert (a.status, a.body["code"]) == (403, "GAIA_NO01")


@rule("kintone", KINTONE, "revision String The revision number of the record after updating the Assignees.")  # fmt: skip
async def _kintone_revision_answer(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    before = sb.kintone.records["1:1"]["revision"]
    a = await kintone(sb, s, {"assignees": ["eve"]})
    assert a.body == {"revision": str(before + 1)}


# ---- SuperOffice: PATCH /api/v1/ProjectMember/{id} --------------------------------------

SUPEROFFICE = "superoffice-projectmember-patch.txt"


@rule("superoffice", SUPEROFFICE, "409 | Update blocked because a 'test' operation has detected a conflict with the entity value.")  # fmt: skip
async def _superoffice_test_op(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    held = sb.superoffice.records["1"]["PersonId"]
    ops = [{"op": "test", "path": "/PersonId", "value": held + 1}]
    a = await superoffice(sb, s, [*ops, {"op": "replace", "path": "/Comment", "value": "x"}])
    assert a.status == 409
    assert sb.superoffice.records["1"]["Comment"] != "x"


@rule("superoffice", SUPEROFFICE, "412 | Update aborted because ProjectMember has changed since the requested If-Unmodified-Since timestamp.")  # fmt: skip
async def _superoffice_if_unmodified_since(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    old = "Sat, 01 Jan 2000 00:00:00 GMT"
    headers = {"If-Unmodified-Since": old}
    a = await superoffice(sb, s, {"Comment": "x"}, headers=headers)
    assert a.status == 412


@rule("superoffice", SUPEROFFICE, 'The path is case insensitive, and the leading slash is optional, so the paths "/department", "Department" and "department" are all equivalent.')  # fmt: skip
async def _superoffice_paths(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    for path in ("/comment", "Comment", "comment"):
        a = await superoffice(sb, s, [{"op": "replace", "path": path, "value": path}])
        assert a.status == 200
        assert sb.superoffice.records["1"]["Comment"] == path


@rule("superoffice", SUPEROFFICE, "or as a JSON MERGE PATCH, which describes the change directly")
async def _superoffice_merge_patch(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    assert (await superoffice(sb, s, {"Comment": "merged"})).status == 200
    assert sb.superoffice.records["1"]["Comment"] == "merged"


@rule("superoffice", SUPEROFFICE, '"add", "replace", "remove", "test" "move" and "copy" not supported')  # fmt: skip
async def _superoffice_ops(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    for op in ("move", "copy"):
        a = await superoffice(sb, s, [{"op": op, "from": "/Comment", "path": "/Phone"}])
        assert a.status == 400, op
    assert sum(sb.superoffice.stats.writes.values()) == 0


@rule("superoffice", SUPEROFFICE, "404 | ProjectMember with given id does not exist in the db.")
async def _superoffice_not_found(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    assert (await superoffice(sb, s, {"Comment": "x"}, rid=999_999)).status == 404


# ---- Findable: POST /assignments/{id}/delegate ------------------------------------------

FINDABLE = "assignments-delegate-post.txt"


@rule("findable", FINDABLE, "Successor assignment created for the delegate")
async def _findable_successor(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    a = await findable(sb, s, {"toUpn": "eve@example.com", "reason": "team B"})
    assert a.status == 201
    assert a.body["id"] != "asg-000001"
    assert a.body["assigneeEmail"] == "eve@example.com"
    assert sb.findable.records[a.body["id"]] == a.body


@rule("findable", FINDABLE, "toUpn string required UPN of the user to delegate to")
async def _findable_to_upn(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    assert (await findable(sb, s, {"reason": "no one"})).status == 400


@rule("findable", FINDABLE, "Azure AD access token obtained via MSAL")
async def _findable_token(sb: Sandbox, s: aiohttp.ClientSession) -> None:
    assert (await findable(sb, s, {"toUpn": "eve@example.com"}, auth=False)).status == 401


@pytest.mark.parametrize(
    ("system", "seed", "quote", "check"),
    RULES,
    ids=[f"{system}:{check.__name__.split('_', 2)[2]}" for system, _, _, check in RULES],
)
async def test_the_fake_follows_the_vendor_page(
    session: aiohttp.ClientSession, system: str, seed: str, quote: str, check: Check
) -> None:
    assert quote in page(seed), f"not on the vendor's page any more: {quote!r}"
    async with Sandbox(demo=2, systems=[system]) as sb:
        await check(sb, session)


# ---- the documented answer of a write ---------------------------------------------------


def example(seed: str, after: str) -> dict[str, Any]:
    """The first JSON object on a vendor page after ``after``: its sample response."""
    text = page(seed) and (SEEDS / seed).read_text()
    start = text.index("{", text.index(after))
    found: dict[str, Any] = json.JSONDecoder().raw_decode(text[start:])[0]
    return found


_TYPES = "string|integer|number|boolean|object|enum<string>|object\\[\\]|string\\[\\]"


def response_table(seed: str) -> tuple[set[str], set[str]]:
    """Findable's page: the fields of its response table, and those marked required."""
    lines = [line.strip() for line in (SEEDS / seed).read_text().splitlines()]
    lines = lines[lines.index("Response") :]
    fields, required = set(), set()
    for i, line in enumerate(lines[:-1]):
        if re.fullmatch(_TYPES, lines[i + 1]) and re.fullmatch(r"[_A-Za-z]+", line):
            fields.add(line)
            if i + 2 < len(lines) and lines[i + 2] == "required":
                required.add(line)
    return fields, required


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


async def answer(system: str, sb: Sandbox, s: aiohttp.ClientSession) -> dict[str, Any]:
    """What the fake answers to a successful write."""
    if system == "perscom":
        body: dict[str, Any] = (await perscom(sb, s, {"user_id": 201})).body["data"]
    elif system == "maxsight":
        body = (await maxsight(sb, s, ASSIGN)).body
    elif system == "kintone":
        body = (await kintone(sb, s, {"assignees": ["eve"]})).body
    elif system == "superoffice":
        body = (await superoffice(sb, s, {"Comment": "x"})).body
    else:
        body = (await findable(sb, s, {"toUpn": "eve@example.com"})).body
    return body


DOCUMENTED = {
    "perscom": (PERSCOM, "--data"),
    "maxsight": (MAXSIGHT, "A successful request returns"),
    "kintone": (KINTONE, "Sample Response"),
    "superoffice": (SUPEROFFICE, "Sample response"),
    "findable": (FINDABLE, "generate request examples"),
}


@pytest.mark.parametrize("system", sorted(DOCUMENTED))
async def test_a_write_answers_with_the_documented_fields_and_types(
    session: aiohttp.ClientSession, system: str
) -> None:
    seed, after = DOCUMENTED[system]
    documented = example(seed, after)
    if system == "perscom":  # the request body comes first on this page
        documented = example(seed, "}'")["data"]
    fields, required = set(documented), set(documented)
    if system == "findable":  # its sample leaves out the enums; the table lists them
        table, required = response_table(seed)
        fields |= table
    async with Sandbox(demo=2, systems=[system]) as sb:
        got = await answer(system, sb, session)
    assert not set(got) - fields, f"fields the page does not document: {set(got) - fields}"
    assert not required - set(got), f"documented fields missing: {required - set(got)}"
    for name, value in got.items():
        sample = documented.get(name)
        if value is not None and sample is not None:
            assert kind(value) == kind(sample), (name, value, sample)
