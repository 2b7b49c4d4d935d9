"""Before, after and undo as pure functions: what each adapter says a change touches, and
the inverse plan line built from it."""

from __future__ import annotations

from typing import Any

import pytest

from patchassign.changes import Assign, Delegate, Merge, Patch, SetFields, Unassign
from patchassign.report import inverse
from patchassign.systems import (
    FindableAdapter,
    KintoneAdapter,
    MaxsightAdapter,
    PerscomAdapter,
    SuperOfficeAdapter,
)

KINTONE = KintoneAdapter("https://k.example", api_token="t")
MAXSIGHT = MaxsightAdapter("https://m.example", "k", assigned_by="admin")
PERSCOM = PerscomAdapter("https://p.example", "t")
SUPEROFFICE = SuperOfficeAdapter("https://s.example", token="t")
FINDABLE = FindableAdapter("https://f.example", "t")


@pytest.mark.parametrize(
    ("adapter", "change", "record", "before", "after"),
    [
        (
            KINTONE,
            Assign(system="kintone", record="1:1", to="fay"),
            {"s": {"type": "STATUS_ASSIGNEE", "value": [{"code": "bob"}, {"code": "eve"}]}},
            {"to": ["bob", "eve"]},
            {"to": ["fay"]},
        ),
        (
            KINTONE,
            Unassign(system="kintone", record="1:1"),
            {"s": {"type": "STATUS_ASSIGNEE", "value": [{"code": "bob"}]}},
            {"to": ["bob"]},
            {"to": []},
        ),
        (
            MAXSIGHT,
            Assign(system="maxsight", record="t", to="team-b", to_type="team"),
            {"assignment": {"assigned_to_id": "team-a", "assigned_to_type": "TEAM"}},
            {"to": "team-a", "to_type": "team"},
            {"to": "team-b", "to_type": "team"},
        ),
        (
            MAXSIGHT,
            Unassign(system="maxsight", record="t"),
            {"assignment": {"assigned_to_id": "ada", "assigned_to_type": "USER"}},
            {"to": "ada"},
            {"to": None},
        ),
        (
            PERSCOM,
            Assign(system="perscom", record=1, to="201"),
            {"id": 1, "user_id": 101, "status_id": 3},
            {"to": "101"},
            {"to": "201"},
        ),
        (
            PERSCOM,
            SetFields(system="perscom", record=1, state={"status_id": 4, "text": None}),
            {"id": 1, "user_id": 101, "status_id": 3, "text": "x"},
            {"status_id": 3, "text": "x"},
            {"status_id": 4, "text": None},
        ),
        (
            SUPEROFFICE,
            Merge(system="superoffice", record=2, merge={"personid": 202, "Gone": None}),
            {"PersonId": 102, "Gone": "old", "Other": 1},
            {"PersonId": 102, "Gone": "old"},
            {"PersonId": 202},
        ),
        (
            SUPEROFFICE,
            Patch(
                system="superoffice",
                record=2,
                patch=[{"op": "replace", "path": "PersonId", "value": 5}],
            ),
            {"PersonId": 102},
            {"PersonId": 102},
            {"PersonId": 5},
        ),
        (
            FINDABLE,
            Delegate(system="findable", record="a", to="fay@x.example"),
            {"status": "open", "assigneeEmail": "bob@x.example"},
            {"to": "bob@x.example"},
            {"to": "fay@x.example"},
        ),
    ],
)
def test_each_adapter_says_what_a_change_touches_before_and_after(
    adapter: Any, change: Any, record: Any, before: Any, after: Any
) -> None:
    assert adapter.touched(change, record) == before
    assert adapter.wanted(change, record) == after


def test_touched_without_a_record_or_with_an_ambiguous_field_is_unknown() -> None:
    merge = Merge(system="superoffice", record=2, merge={"personid": 1})
    assert SUPEROFFICE.touched(merge, None) is None
    assert SUPEROFFICE.touched(merge, {"PersonId": 1, "PERSONID": 2}) is None


def base(action: str, **kw: Any) -> dict[str, Any]:
    return {"system": "s", "record": 7, "id": "c1", "action": action, **kw}


@pytest.mark.parametrize(
    ("change", "before", "after", "undo"),
    [
        (
            base("assign", to=["fay"]),
            {"to": ["bob"]},
            {"to": ["fay"]},
            {"action": "assign", "to": ["bob"], "expect": ["fay"]},
        ),
        (
            base("unassign"),
            {"to": "ada"},
            {"to": None},
            {"action": "assign", "to": "ada"},
        ),
        (
            base("assign", to="ada"),
            {"to": None},
            {"to": "ada"},
            {"action": "unassign", "expect": "ada"},
        ),
        (
            base("assign", to="team-b", to_type="team"),
            {"to": "team-a", "to_type": "team"},
            {"to": "team-b", "to_type": "team"},
            {"action": "assign", "to": "team-a", "to_type": "team", "expect": "team-b"},
        ),
        (
            base("merge", merge={"PersonId": 202, "Dept": "B", "Gone": None, "Same": 1}),
            {"PersonId": 102, "Dept": "A", "Gone": "x", "Same": 1},
            {"PersonId": 202, "Dept": "B", "Same": 1},
            {
                "action": "patch",
                "patch": [
                    {"op": "test", "path": "/PersonId", "value": 202},
                    {"op": "test", "path": "/Dept", "value": "B"},
                    {"op": "replace", "path": "/PersonId", "value": 102},
                    {"op": "replace", "path": "/Dept", "value": "A"},
                    {"op": "add", "path": "/Gone", "value": "x"},
                ],
            },
        ),
        (
            base("set", state={"a/b": 1}),
            {},
            {"a/b": 1},
            {
                "action": "patch",
                "patch": [
                    {"op": "test", "path": "/a~1b", "value": 1},
                    {"op": "remove", "path": "/a~1b"},
                ],
            },
        ),
    ],
)
def test_the_inverse_puts_back_the_before_value_guarded_by_the_after_value(
    change: dict[str, Any], before: Any, after: Any, undo: dict[str, Any]
) -> None:
    assert inverse(change, before, after) == {
        "system": "s",
        "record": 7,
        "id": "undo-c1",
        **undo,
    }


def test_a_recovered_change_guarded_by_expect_is_undone_to_what_it_expected() -> None:
    """A killed run's read is not kept; its write went out only while the record held
    ``expect``, so that is the value to put back."""
    change = base("assign", to="team-b", to_type="team", expect="team-a")
    assert inverse(change, None, {"to": "team-b", "to_type": "team"}) == {
        "system": "s",
        "record": 7,
        "id": "undo-c1",
        "action": "assign",
        "to": "team-a",
        "to_type": "team",
        "expect": "team-b",
    }
    unguarded = inverse(base("assign", to="x"), None, {"to": "x"})
    assert isinstance(unguarded, str)
    assert "not known" in unguarded


@pytest.mark.parametrize(
    ("change", "before", "after", "why"),
    [
        (base("delegate", to="f@x.example"), {"to": "b"}, {"to": "f"}, "delegation"),
        (base("assign", to="a"), None, {"to": "a"}, "not known"),
        (base("unassign"), {"to": []}, {"to": []}, "nothing to undo"),
        (base("set", state={"a": 1}), {"a": 1}, {"a": 1}, "nothing to undo"),
    ],
)
def test_what_cannot_be_undone_says_why(
    change: dict[str, Any], before: Any, after: Any, why: str
) -> None:
    reason = inverse(change, before, after)
    assert isinstance(reason, str)
    assert why in reason


def test_a_patch_whose_tests_fail_because_it_is_in_place_is_unchanged() -> None:
    """After an unconfirmed write, the read-back finds the record as the patch left it:
    its tests (written against the record before) fail, and that is the patch applied,
    not a conflict. An undo line is such a patch."""
    from patchassign.systems import Conflict, Current, Unchanged

    undo = Patch(
        system="superoffice",
        record=2,
        patch=[
            {"op": "test", "path": "/PersonId", "value": 202},
            {"op": "replace", "path": "/PersonId", "value": 102},
        ],
    )
    done = SUPEROFFICE.prepare(undo, Current({"PersonId": 102}, "2026-11-23T10:00:00"))
    assert isinstance(done, Unchanged)
    other = SUPEROFFICE.prepare(undo, Current({"PersonId": 999}, "2026-11-23T10:00:00"))
    assert isinstance(other, Conflict)
    as_perscom = Patch(
        system="perscom",
        record=2,
        patch=[
            {"op": "test", "path": "/user_id", "value": 202},
            {"op": "replace", "path": "/user_id", "value": 102},
        ],
    )
    assert isinstance(PERSCOM.prepare(as_perscom, Current({"id": 2, "user_id": 102})), Unchanged)
    assert isinstance(PERSCOM.prepare(as_perscom, Current({"id": 2, "user_id": 9})), Conflict)
