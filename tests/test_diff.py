from __future__ import annotations

import json
from typing import Any

import jsonpatch
import pytest

from patchassign import (
    Add,
    JsonPatch,
    NotRepresentable,
    PatchConflict,
    Remove,
    Replace,
    Test,
    apply_patch,
    make_merge_patch,
    make_patch,
)
from tests.helpers import CONFORMANCE, same_json, snapshot


def check(a: Any, b: Any, *, guard: bool = False) -> JsonPatch:
    before_a, before_b = snapshot(a), snapshot(b)
    p = make_patch(a, b, guard=guard)
    assert same_json(apply_patch(a, p), b)
    assert same_json(jsonpatch.apply_patch(a, p.to_list()), b)
    assert same_json(a, before_a)
    assert same_json(b, before_b)
    return p


def test_equal_documents_give_an_empty_patch() -> None:
    doc = {"a": [1, {"b": None}], "c": "d"}
    assert len(check(doc, snapshot(doc))) == 0
    assert len(check(doc, doc)) == 0
    assert len(check({"a": 1, "b": 2}, {"b": 2, "a": 1})) == 0, "key order is not a change"
    assert len(check({"a": [1]}, {"a": [1.0]})) == 0, "1 and 1.0 are the same JSON number"


def test_one_changed_member_is_one_replace() -> None:
    a = {"id": 1, "owner": {"name": "ada", "team": "A"}, "tags": ["x", "y"]}
    b = {"id": 1, "owner": {"name": "ada", "team": "B"}, "tags": ["x", "y"]}
    assert list(check(a, b)) == [Replace("/owner/team", "B")]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (1, True),
        (True, 1),
        (0, False),
        (False, 0),
        (1, "1"),
        (None, False),
        ([], {}),
        ({}, None),
        (1.5, "1.5"),
    ],
)
def test_type_changes_are_changes(old: Any, new: Any) -> None:
    # Compare encodings: Struct equality is Python's, where True == 1.
    assert check({"v": old}, {"v": new}).to_json() == JsonPatch([Replace("/v", new)]).to_json()
    assert check([old], [new]).to_json() == JsonPatch([Replace("/0", new)]).to_json()


def test_nested_bool_int_swap_is_found() -> None:
    """Python's == says these are equal; JSON says they are not."""
    a = {"outer": {"inner": [1, 0, {"flag": 1}]}}
    b = {"outer": {"inner": [1, 0, {"flag": True}]}}
    assert check(a, b).to_json() == b'[{"op":"replace","path":"/outer/inner/2/flag","value":true}]'


def test_inserting_one_item_is_one_add_not_a_cascade() -> None:
    """python-json-patch #78, fast-json-patch #282: trim common prefix and suffix."""
    a = [{"id": i} for i in range(100)]
    b = [*a[:40], {"id": "new"}, *a[40:]]
    assert list(check(a, b)) == [Add("/40", {"id": "new"})]
    assert list(check(b, a)) == [Remove("/40")]


def test_shifted_items_are_aligned() -> None:
    a = list(range(20))
    b = [-1, *range(19)]  # one in at the front, one out at the back
    assert list(check(a, b)) == [Add("/0", -1), Remove("/20")]


def test_edits_in_place_and_shifts_mixed() -> None:
    a: list[dict[str, Any]] = [{"id": i, "v": 0} for i in range(30)]
    b = [dict(x) for x in a]
    b[3]["v"] = 1
    b[17]["v"] = 2
    del b[10]
    b.insert(25, {"id": "n", "v": 0})
    p = check(a, b)
    assert len(p) == 4


def test_indices_stay_right_as_the_patch_applies() -> None:
    a = ["a", "b", "c", "d", "e", "f"]
    b = ["x", "b", "d", "y", "z", "f", "g"]
    check(a, b)
    check(b, a)


def test_keys_with_slash_and_tilde_are_escaped() -> None:
    a = {"a/b": {"~c": 1}, "~1": 2}
    b = {"a/b": {"~c": 2}, "~1": 2, "n/~": 3}
    assert list(check(a, b)) == [Replace("/a~1b/~0c", 2), Add("/n~1~0", 3)]


def test_disjoint_objects_are_one_replace() -> None:
    assert list(check({"a": {"x": 1}}, {"a": {"y": 2}})) == [Replace("/a", {"y": 2})]


def test_root_type_change_replaces_the_root() -> None:
    assert list(check({"a": 1}, [1])) == [Replace("", [1])]
    assert list(check("x", "y")) == [Replace("", "y")]


def test_patch_values_are_the_targets_subtrees() -> None:
    new_owner = {"name": "cyd"}
    p = make_patch({"owner": {"upn": "ada"}, "n": 1}, {"owner": new_owner, "n": 1})
    assert p[0] == Replace("/owner", new_owner)
    assert isinstance(p[0], Replace)
    assert p[0].value is new_owner


def test_make_patch_emits_no_move_or_copy() -> None:
    a = {"a": {"deep": list(range(10))}, "b": 1}
    b = {"c": {"deep": list(range(10))}, "b": 1}
    p = check(a, b)
    assert {type(op) for op in p} <= {Add, Remove, Replace}
    p.ensure_allowed({"add", "remove", "replace", "test"})


def test_guard_pins_old_values_before_replace_and_remove() -> None:
    a = {"owner": "ada", "old": {"x": 1}, "keep": 1}
    b = {"owner": "bob", "keep": 1, "new": 2}
    p = check(a, b, guard=True)
    assert list(p) == [
        Test("/owner", "ada"),
        Replace("/owner", "bob"),
        Test("/old", {"x": 1}),
        Remove("/old"),
        Add("/new", 2),
    ]


def test_guarded_patch_refuses_a_base_changed_meanwhile() -> None:
    read = {"assignee": "ada", "status": "open"}
    p = make_patch(read, {"assignee": "bob", "status": "open"}, guard=True)
    changed_meanwhile = {"assignee": "cyd", "status": "open"}
    with pytest.raises(PatchConflict) as info:
        apply_patch(changed_meanwhile, p)
    assert (info.value.reason, info.value.path, info.value.expected, info.value.actual) == (
        "test-failed",
        "/assignee",
        "ada",
        "cyd",
    )
    # Without the guard, the change would silently overwrite cyd.
    assert apply_patch(
        changed_meanwhile, make_patch(read, {"assignee": "bob", "status": "open"})
    ) == {
        "assignee": "bob",
        "status": "open",
    }


def _spec_pairs() -> list[Any]:
    if not CONFORMANCE.is_dir():
        return [
            pytest.param(None, None, marks=pytest.mark.skip(reason=f"no suite at {CONFORMANCE}"))
        ]
    out = []
    for name in ("spec_tests.json", "tests.json"):
        for n, case in enumerate(json.loads((CONFORMANCE / name).read_text())):
            if "expected" in case and not case.get("disabled"):
                out.append(pytest.param(case["doc"], case["expected"], id=f"{name}:{n}"))
    return out


@pytest.mark.parametrize(("doc", "expected"), _spec_pairs())
def test_suite_documents_round_trip_through_make_patch(doc: Any, expected: Any) -> None:
    """Every (doc, expected) pair of RFC 6902's examples and the suite diffs and re-applies."""
    check(doc, expected)
    check(expected, doc)
    check(doc, expected, guard=True)


@pytest.mark.parametrize(
    ("src", "dst", "where"),
    [
        ({1: 2}, {1: 3}, "the document root"),
        ({"a": {7: "x"}}, {"a": {}}, "/a"),
        ({"a": [{"x/y": {2: 1}}]}, {"a": [{"x/y": {}}]}, "/a/0/x~1y"),
    ],
)
def test_a_member_name_that_is_not_a_string_is_not_representable(
    src: Any, dst: Any, where: str
) -> None:
    # A Python dict with int keys (from a data frame, say) is not JSON: no path names the
    # member. It was a TypeError ("argument of type 'int' is not iterable").
    with pytest.raises(NotRepresentable, match=f"at '{where}': .* member named") as e:
        make_patch(src, dst)
    assert e.value.path == ("" if where == "the document root" else where)
    if where != "/a/0/x~1y":  # (a merge patch replaces an array whole: no walk in it)
        with pytest.raises(NotRepresentable, match="member names are strings"):
            make_merge_patch(src, dst)
