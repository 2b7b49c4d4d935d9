"""Plan files: JSON Lines of changes, every bad line named with its field."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from patchassign.changes import (
    Assign,
    Delegate,
    Merge,
    Patch,
    SetFields,
    Unassign,
    convert_change,
    decode_change,
)
from patchassign.errors import InvalidChange
from patchassign.plan import MAX_LINE, iter_plan, read_plan
from patchassign.systems import (
    FindableAdapter,
    KintoneAdapter,
    MaxsightAdapter,
    PerscomAdapter,
    SuperOfficeAdapter,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "plan-format.md"

GOOD = b"""{"system": "perscom", "record": 12, "action": "assign", "to": "345"}
{"system": "maxsight", "record": "task-1", "action": "assign", "to": "team-b", "to_type": "team", "expect": "team-a", "comment": "migration"}

{"system": "kintone", "record": "7:1001", "action": "assign", "to": ["eve", "fay"], "id": "k-1"}
{"system": "kintone", "record": "7:1002", "action": "unassign"}
{"system": "superoffice", "record": 55, "action": "merge", "merge": {"ContactDepartment": "Team B"}, "guard": true}
{"system": "superoffice", "record": 56, "action": "patch", "patch": [{"op": "replace", "path": "comment", "value": "x"}]}
{"system": "perscom", "record": 13, "action": "set", "state": {"unit_id": 4}}
{"system": "findable", "record": "asg-9", "action": "delegate", "to": "eve@example.com", "reason": "holiday"}
"""


def test_good_lines_decode_to_typed_changes_with_ids() -> None:
    items = list(iter_plan(io.BytesIO(GOOD)))
    assert [n for n, _ in items] == [1, 2, 4, 5, 6, 7, 8, 9]
    kinds = [type(c) for _, c in items]
    assert kinds == [Assign, Assign, Assign, Unassign, Merge, Patch, SetFields, Delegate]
    ids = [c.id for _, c in items if not isinstance(c, InvalidChange)]
    assert ids == ["line-1", "line-2", "k-1", "line-5", "line-6", "line-7", "line-8", "line-9"]


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        (
            b'{"system": "Jira Cloud", "record": 1, "action": "assign", "to": "x"}',
            "system",
            "matching regex",
        ),
        (b'{"system": "kintone", "record": 1, "action": "frob"}', "action", "frob"),
        (b'{"system": "kintone", "record": 1}', "action", "action"),
        (b'{"system": "kintone", "record": 1, "action": "assign"}', "to", "missing"),
        (b'{"system": "kintone", "record": "", "action": "unassign"}', "record", "length"),
        (b'{"system": "kintone", "record": true, "action": "unassign"}', "record", "got `bool`"),
        (
            b'{"system": "kintone", "record": 1, "action": "unassign", "colour": "red"}',
            "colour",
            "unknown",
        ),
        (b'{"system": "kintone", "record": 1, "action": "assign", "to": 5}', "to", "Expected"),
        (
            b'{"system": "kintone", "record": 1, "action": "assign", "to": "e", "to_type": "robot"}',
            "to_type",
            "robot",
        ),
        (
            b'{"system": "superoffice", "record": 1, "action": "patch", "patch": [{"op": "jump", "path": "/a"}]}',
            "patch",
            "jump",
        ),
        (
            b'{"system": "superoffice", "record": 1, "action": "merge", "merge": [1]}',
            "merge",
            "object",
        ),
        (
            b'{"system": "findable", "record": "a", "action": "delegate", "to": "e@x.io", "reason": 5}',
            "reason",
            "str",
        ),
    ],
)
def test_each_bad_line_names_its_line_and_field(line: bytes, field: str, words: str) -> None:
    [(number, err)] = list(iter_plan([b"", line]))
    assert number == 2
    assert isinstance(err, InvalidChange)
    assert err.line == 2
    assert err.field == field
    assert words.lower() in str(err).lower()
    assert str(err).startswith("line 2")


@pytest.mark.parametrize(
    "line", [b"{not json", b"[1, 2]", b'"text"', b"\xff\xfe{}", b"{" * 10 + b"}" * 10, b"null"]
)
def test_garbage_lines_are_typed_errors(line: bytes) -> None:
    [(_, err)] = list(iter_plan([line]))
    assert isinstance(err, InvalidChange)
    assert err.line == 1


def test_reading_goes_on_after_bad_lines_and_refuses_huge_ones(tmp_path: Path) -> None:
    path = tmp_path / "plan.jsonl"
    huge = (
        b'{"system": "kintone", "record": 1, "action": "assign", "to": "' + b"x" * MAX_LINE + b'"}'
    )
    path.write_bytes(b"nope\n" + huge + b"\n" + GOOD)
    items = list(read_plan(path))
    assert isinstance(items[0][1], InvalidChange)
    assert isinstance(items[1][1], InvalidChange)
    assert "longer" in str(items[1][1])
    assert sum(not isinstance(c, InvalidChange) for _, c in items) == 8


def test_convert_and_decode_agree() -> None:
    obj = {"system": "kintone", "record": "1:2", "action": "assign", "to": ["a"]}
    assert convert_change(obj) == decode_change(
        b'{"system": "kintone", "record": "1:2", "action": "assign", "to": ["a"]}'
    )
    with pytest.raises(InvalidChange) as e:
        convert_change({**obj, "system": 3})
    assert e.value.field == "system"


def test_every_example_in_the_plan_format_doc_decodes() -> None:
    lines = [ln for ln in EXAMPLES.read_text().splitlines() if ln.startswith('{"system"')]
    assert len(lines) >= 8
    adapters = {
        "perscom": PerscomAdapter("https://api.perscom.io", "t"),
        "maxsight": MaxsightAdapter("https://api.example.com", "k", assigned_by="admin"),
        "kintone": KintoneAdapter("https://acme.kintone.com", api_token="t"),
        "superoffice": SuperOfficeAdapter("https://online.superoffice.com/Cust1", token="t"),
        "findable": FindableAdapter("https://findable.example.com", "t"),
    }
    seen = set()
    for number, item in iter_plan(ln.encode() for ln in lines):
        assert not isinstance(item, InvalidChange), (number, item)
        adapters[item.system].check(item)
        seen.add(item.system)
    assert seen == set(adapters)


def test_record_ids_beyond_64_bits_are_refused() -> None:
    from patchassign import InvalidChange, decode_change

    for big in ("18446744073709551616", "123456789012345678901234567890"):
        line = f'{{"system": "perscom", "record": {big}, "action": "assign", "to": "7"}}'
        with pytest.raises(InvalidChange) as e:
            decode_change(line.encode())
        assert e.value.field == "record"
    ok = decode_change(
        b'{"system": "perscom", "record": 9223372036854775807, "action": "assign", "to": "7"}'
    )
    assert ok.record == 2**63 - 1
