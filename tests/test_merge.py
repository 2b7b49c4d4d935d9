from __future__ import annotations

from typing import Any

import json_merge_patch
import pytest

from patchassign import (
    InvalidPatch,
    NotRepresentable,
    PatchConflict,
    apply_merge_patch,
    apply_patch,
    json_patch_to_merge,
    make_merge_patch,
    merge_to_json_patch,
)
from tests.helpers import same_json, snapshot

# RFC 7396 Appendix A, every example: (target, patch, result).
APPENDIX_A = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    (["a", "b"], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]

SECTION_3 = (
    {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    },
    {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    },
    {
        "title": "Hello!",
        "author": {"givenName": "John"},
        "tags": ["example"],
        "content": "This will be unchanged",
        "phoneNumber": "+01-123-456-7890",
    },
)


@pytest.mark.parametrize(("target", "patch", "result"), [*APPENDIX_A, SECTION_3])
def test_rfc7396_examples(target: Any, patch: Any, result: Any) -> None:
    before = snapshot(target)
    assert same_json(apply_merge_patch(target, patch), result)
    assert same_json(target, before), "the target was mutated"
    # The conversion to JSON Patch, given the base, has the same effect.
    assert same_json(apply_patch(target, merge_to_json_patch(patch, target)), result)


@pytest.mark.parametrize(("target", "patch", "result"), [*APPENDIX_A, SECTION_3])
def test_make_merge_patch_reproduces_rfc_results(target: Any, patch: Any, result: Any) -> None:
    merge = make_merge_patch(target, result)
    assert same_json(apply_merge_patch(target, merge), result)
    assert same_json(json_merge_patch.merge(snapshot(target), merge), result)


def test_apply_shares_unchanged_members() -> None:
    doc: dict[str, Any] = {"keep": {"x": [1]}, "edit": {"a": 1, "b": {"c": 1}}}
    out = apply_merge_patch(doc, {"edit": {"a": 2}})
    assert out == {"keep": {"x": [1]}, "edit": {"a": 2, "b": {"c": 1}}}
    assert out["keep"] is doc["keep"]
    assert out["edit"]["b"] is doc["edit"]["b"]
    assert apply_merge_patch(doc, {"missing": None}) is doc
    assert apply_merge_patch(doc, {"keep": {}}) is doc


def test_case_insensitive_merge_keeps_the_existing_spelling() -> None:
    doc = {"Department": "Sales", "Owner": {"Name": "ada"}, "Gone": 1}
    out = apply_merge_patch(
        doc,
        {"department": "Ops", "owner": {"name": "bob"}, "gone": None, "New": 1},
        case_insensitive=True,
    )
    assert out == {"Department": "Ops", "Owner": {"Name": "bob"}, "New": 1}
    with pytest.raises(PatchConflict, match="'NAME' and 'Name'"):
        apply_merge_patch({"Name": 1, "NAME": 2}, {"name": 3}, case_insensitive=True)


def test_make_merge_patch_refuses_null_members() -> None:
    with pytest.raises(NotRepresentable, match="null") as info:
        make_merge_patch({"a": 1}, {"a": None})
    assert info.value.path == "/a"
    with pytest.raises(NotRepresentable) as info:
        make_merge_patch({"a": 1}, {"a": 1, "b": {"c": {"d": None}}})
    assert info.value.path == "/b/c/d"
    with pytest.raises(NotRepresentable):
        make_merge_patch([1], {"x": None})
    # Nulls inside arrays are values, and arrays are replaced whole: fine.
    assert make_merge_patch({"a": [1]}, {"a": [None]}) == {"a": [None]}
    assert make_merge_patch({"a": 1}, None) is None


def test_make_merge_patch_is_minimal_and_json_typed() -> None:
    assert make_merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 1, "b": {"c": 1, "d": 3}}) == {
        "b": {"d": 3}
    }
    assert make_merge_patch({"a": 1}, {"a": True}) == {"a": True}
    assert make_merge_patch({"a": 1}, {"a": 1.0}) == {}


def test_merge_to_json_patch_with_base_is_exact() -> None:
    base = {"a": 1, "b": {"c": 2}, "l": [1]}
    p = merge_to_json_patch(
        {
            "a": None,
            "zz": None,
            "b": {"c": 2, "d": {"e": None, "f": 1}},
            "l": [2],
            "n": {"x": None},
        },
        base,
    )
    assert p.to_list() == [
        {"op": "remove", "path": "/a"},
        {"op": "add", "path": "/b/d", "value": {"f": 1}},
        {"op": "replace", "path": "/l", "value": [2]},
        {"op": "add", "path": "/n", "value": {}},
    ]


def test_merge_to_json_patch_case_insensitive_uses_existing_spelling() -> None:
    p = merge_to_json_patch(
        {"department": "Ops", "NEW": 1}, {"Department": "Sales"}, case_insensitive=True
    )
    assert p.to_list() == [
        {"op": "replace", "path": "/Department", "value": "Ops"},
        {"op": "add", "path": "/NEW", "value": 1},
    ]


def test_merge_to_json_patch_without_base_is_structural() -> None:
    p = merge_to_json_patch({"a": None, "b": {"c": 1, "d": None}, "e": [1]})
    assert p.to_list() == [
        {"op": "remove", "path": "/a"},
        {"op": "add", "path": "/b/c", "value": 1},
        {"op": "remove", "path": "/b/d"},
        {"op": "add", "path": "/e", "value": [1]},
    ]
    assert merge_to_json_patch("x").to_list() == [{"op": "replace", "path": "", "value": "x"}]


def test_json_patch_to_merge() -> None:
    merge = json_patch_to_merge(
        [
            {"op": "replace", "path": "/owner/name", "value": "bob"},
            {"op": "add", "path": "/tags", "value": ["x"]},
            {"op": "remove", "path": "/old"},
        ]
    )
    assert merge == {"owner": {"name": "bob"}, "tags": ["x"], "old": None}
    assert json_patch_to_merge([{"op": "replace", "path": "", "value": [1]}]) == [1]
    assert json_patch_to_merge([]) == {}


@pytest.mark.parametrize(
    ("ops", "index", "message"),
    [
        ([{"op": "move", "from": "/a", "path": "/b"}], 0, "no 'move'"),
        (
            [{"op": "add", "path": "/a", "value": 1}, {"op": "copy", "from": "/a", "path": "/b"}],
            1,
            "no 'copy'",
        ),
        ([{"op": "test", "path": "/a", "value": 1}], 0, "no 'test'"),
        ([{"op": "add", "path": "/a/0", "value": 1}], 0, "array index"),
        ([{"op": "add", "path": "/a/-", "value": 1}], 0, "array index"),
        ([{"op": "replace", "path": "/a", "value": None}], 0, "null"),
        ([{"op": "replace", "path": "/a", "value": {"b": 1}}], 0, "merge this object"),
        (
            [{"op": "remove", "path": "/a"}, {"op": "add", "path": "/a/b", "value": 1}],
            1,
            "removed or set",
        ),
        ([{"op": "remove", "path": ""}], 0, "invalid"),
    ],
)
def test_json_patch_to_merge_names_the_unrepresentable_operation(
    ops: list[dict[str, Any]], index: int, message: str
) -> None:
    if message == "invalid":
        with pytest.raises(InvalidPatch):
            json_patch_to_merge(ops)
        return
    with pytest.raises(NotRepresentable, match=message) as info:
        json_patch_to_merge(ops)
    assert info.value.index == index
    assert info.value.op == ops[index]["op"]
    assert f"operation {index}" in str(info.value)


def test_case_insensitive_twins_in_a_merge_object_are_refused() -> None:
    """Issue: a bare KeyError, a silent last-wins, and a conversion that disagreed."""
    from patchassign import InvalidPatch

    with pytest.raises(InvalidPatch, match="name the same member"):
        apply_merge_patch({"A": 1}, {"A": None, "a": None}, case_insensitive=True)
    with pytest.raises(InvalidPatch, match="'a' and 'A'"):
        apply_merge_patch({"a": 0}, {"a": 1, "A": 2}, case_insensitive=True)
    with pytest.raises(InvalidPatch):
        merge_to_json_patch({"a": 1, "A": 2}, {"a": 0}, case_insensitive=True)
    with pytest.raises(InvalidPatch, match="'k' and 'K'"):
        apply_merge_patch({"x": {}}, {"x": {"k": 1, "K": 2}}, case_insensitive=True)
    with pytest.raises(InvalidPatch, match="'/x'"):
        merge_to_json_patch({"x": {"k": 1, "K": 2}}, {"x": {}}, case_insensitive=True)
    # without case-insensitivity they are two members, as RFC 7396 says
    assert apply_merge_patch({}, {"a": 1, "A": 2}) == {"a": 1, "A": 2}


@pytest.mark.parametrize("target", [None, 5, "text", [1], {"x": 1}])
def test_twins_are_refused_where_the_merge_builds_a_new_object_too(target: Any) -> None:
    """Where the target holds no object the merge object's members are merged into an
    empty one (RFC 7396), so twins are as ambiguous there; the conversion without a base
    refuses them too."""
    from patchassign import InvalidPatch

    with pytest.raises(InvalidPatch, match="'a' and 'A'"):
        apply_merge_patch(target, {"a": 1, "A": 2}, case_insensitive=True)
    with pytest.raises(InvalidPatch, match="'k' and 'K'"):
        apply_merge_patch(target, {"new": {"k": 1, "K": None}}, case_insensitive=True)
    with pytest.raises(InvalidPatch, match="'/new'"):
        merge_to_json_patch({"new": {"k": 1, "K": 2}}, target, case_insensitive=True)
    with pytest.raises(InvalidPatch, match="'a' and 'A'"):
        merge_to_json_patch({"a": 1, "A": 2}, case_insensitive=True)


def test_ordered_dicts_are_objects_on_both_sides() -> None:
    from collections import OrderedDict

    assert apply_merge_patch(OrderedDict(a=1, b=2), {"a": None}) == {"b": 2}
    assert apply_merge_patch({"a": 1, "b": 2}, OrderedDict(a=None)) == {"b": 2}
    assert apply_merge_patch({"a": {"x": 1}}, {"a": OrderedDict(x=None, y=2)}) == {"a": {"y": 2}}
    assert merge_to_json_patch(OrderedDict(a=None), {"a": 1, "b": 2}).to_list() == [
        {"op": "remove", "path": "/a"}
    ]


def test_member_names_that_are_not_strings_are_not_representable() -> None:
    # Python dicts with int keys are not JSON; these raised TypeError or AttributeError.
    with pytest.raises(NotRepresentable, match=r"at '/a': .*member named 1 \(int\)"):
        merge_to_json_patch({"a": {1: None}})
    with pytest.raises(NotRepresentable, match="member named 2"):
        merge_to_json_patch({2: "x"}, {"a": 0}, case_insensitive=True)
    with pytest.raises(NotRepresentable, match="member named 3"):
        apply_merge_patch({"a": 1}, {3: "x"}, case_insensitive=True)
    # A document's own names are only looked up: Python keys of any kind stay as they are.
    assert apply_merge_patch({3: "x"}, {"A": 1}, case_insensitive=True) == {3: "x", "A": 1}
    assert apply_merge_patch({3: "x"}, {"a": 1}) == {3: "x", "a": 1}
