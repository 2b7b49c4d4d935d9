"""Plan files: JSON Lines of changes, every bad line named with its field."""

from __future__ import annotations

import io
import json
import re
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
from patchassign.errors import InvalidChange, PlanError
from patchassign.plan import MAX_LINE, iter_plan, plan_format, read_plan
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
        # a spreadsheet's capitals: the message names the lowercase word that is meant
        (
            b'{"system": "kintone", "record": 1, "action": "Assign", "to": "x"}',
            "action",
            "(actions are lowercase: 'assign')",
        ),
        (
            b'{"system": "kintone", "record": 1, "action": "reassign", "to": "x"}',
            "action",
            "(actions: assign, unassign, delegate, move, merge, patch, set)",
        ),
        (
            b'{"system": "Kintone", "record": 1, "action": "assign", "to": "x"}',
            "system",
            "'kintone', not 'Kintone'",
        ),
        (
            b'{"system": "kintone", "record": 1}',
            "action",
            "missing required member 'action' (actions: assign, unassign, delegate, ",
        ),
        (
            b'{"system": "kintone", "record": 1, "action": "assign"}',
            "to",
            "missing required member 'to': whom the record goes to ('unassign' takes",
        ),
        (
            b'{"system": "findable", "record": "a", "action": "delegate"}',
            "to",
            "missing required member 'to': the action 'delegate' needs it",
        ),
        (b'{"record": 1, "action": "unassign"}', "system", "missing required member 'system'"),
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


# -- CSV ----------------------------------------------------------------------------------


def csv_plan(tmp_path: Path, text: str, name: str = "plan.csv") -> list[tuple[int, object]]:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return list(read_plan(path))


def test_csv_rows_become_the_same_changes_as_json_lines(tmp_path: Path) -> None:
    got = csv_plan(
        tmp_path,
        "\ufeffSystem, record ,action,to,expect,to_type,guard,merge,patch,state,id\r\n"
        "kintone,1:7,assign,ada | bob,eve,,,,,,\r\n"
        'superoffice,12,merge,,,,yes,"{""PersonId"": 7}",,,m\r\n'
        ",,,,,,,,,,\r\n"
        'perscom,-5,patch,,,,,,"[{""op"": ""replace"", ""path"": ""/status_id"", ""value"": 2}]",,\r\n'
        'maxsight,"task-1",assign,"team, b",,team,,,,,\r\n'
        'superoffice,99999999999999999999,set,,,,false,,,"{""a"": 1}",\r\n',
    )
    assert got == [
        (2, Assign(system="kintone", record="1:7", to=["ada", "bob"], expect="eve", id="line-2")),
        (3, Merge(system="superoffice", record=12, merge={"PersonId": 7}, guard=True, id="m")),
        (
            5,
            Patch(
                system="perscom",
                record=-5,
                patch=[{"op": "replace", "path": "/status_id", "value": 2}],
                id="line-5",
            ),
        ),
        (6, Assign(system="maxsight", record="task-1", to="team, b", to_type="team", id="line-6")),
        # beyond 64 bits: text, as a JSON string would be (the adapter judges it)
        (
            7,
            SetFields(
                system="superoffice", record="99999999999999999999", state={"a": 1}, id="line-7"
            ),
        ),
    ]


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("kintone,1:1,assign,,", "row 2: column 'to': missing required member 'to': whom"),
        ("kintone,1:1,asign,eve,", "row 2: column 'action'"),
        ("kintone,1:1,assign,eve,,extra", "row 2: 6 cells, but the header names 5 columns"),
        ("superoffice,1,merge,,{bad", "row 2, column 'merge': not JSON"),
        ("jira!,1,assign,eve,", "row 2, column 'system'"),
    ],
)
def test_bad_csv_rows_name_row_and_column(tmp_path: Path, row: str, words: str) -> None:
    [(number, error)] = csv_plan(tmp_path, f"system,record,action,to,merge\n{row}\n")
    assert number == 2
    assert isinstance(error, InvalidChange)
    assert words.replace("row 2: ", "row 2, ").replace("row 2, 6", "row 2: 6") in str(error)


def test_a_quoted_cell_may_span_lines_and_rows_are_numbered_as_written(tmp_path: Path) -> None:
    got = csv_plan(
        tmp_path,
        'system,record,action,to,comment\nmaxsight,t1,assign,eve,"two\nlines"\nmaxsight,t2,assign,eve,\n',
    )
    assert [n for n, _ in got] == [2, 3]
    first = got[0][1]
    assert isinstance(first, Assign)
    assert first.comment == "two\nlines"


@pytest.mark.parametrize(
    ("header", "words"),
    [
        ("system,record,action,owner", "unknown column(s) 'owner'"),
        ("system,record,system", "column 'system' appears twice"),
        # said once at the header, not once per row of a 200,000-row export
        ("system,record,to", "no 'action' column; every change needs its system, record and"),
        ("action,to", "no 'system' or 'record' column"),
        # a separator other than , is taken only when it splits the header into members
        ("system;record;owner", "unknown column(s) 'system;record;owner'"),
    ],
)
def test_a_bad_csv_header_is_one_plan_error(tmp_path: Path, header: str, words: str) -> None:
    with pytest.raises(PlanError, match=re.escape(words)):
        csv_plan(tmp_path, f"{header}\nkintone,1:1,assign\n")


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_csv_plan_separated_by_semicolons_or_tabs_is_read_as_written(
    tmp_path: Path, sep: str
) -> None:
    """Excel saves "CSV" with the locale's list separator: ``;`` where the decimal mark is
    a comma (most of Europe). The header tells which one a file uses."""
    got = csv_plan(
        tmp_path,
        "\ufeff"
        + sep.join(["System", "record", "action", "to", "comment"])
        + "\r\n"
        + sep.join(["maxsight", "t1", "assign", "team-b", "moved, as agreed"])
        + "\r\n"
        + sep.join(["kintone", "1:2", "assign", "ada | bob", '"a; b"'])
        + "\r\n",
    )
    assert got == [
        (
            2,
            Assign(
                system="maxsight", record="t1", to="team-b", comment="moved, as agreed", id="line-2"
            ),
        ),
        (3, Assign(system="kintone", record="1:2", to=["ada", "bob"], comment="a; b", id="line-3")),
    ]


def test_excels_sep_line_names_the_delimiter_and_rows_count_from_it(tmp_path: Path) -> None:
    """Excel writes (and reads) ``sep=;`` as a CSV file's first line; it was taken for a
    header with an unknown column 'sep=;'."""
    got = csv_plan(tmp_path, "sep=;\r\nsystem;record;action;to\r\nmaxsight;t1;assign;team-b\r\n")
    assert got == [(3, Assign(system="maxsight", record="t1", to="team-b", id="line-3"))]
    with pytest.raises(PlanError, match=re.escape("row 2 (the header): unknown column(s) 'x'")):
        csv_plan(tmp_path, "SEP=,\nsystem,record,action,x\n")


@pytest.mark.parametrize("sep", [",", ";"])
def test_columns_without_a_name_may_be_there_but_must_stay_empty(tmp_path: Path, sep: str) -> None:
    """A trailing delimiter (a spreadsheet's formatted but empty column) made an unknown
    column ''. Unnamed columns are allowed; a value in one is refused, row by row."""
    got = csv_plan(
        tmp_path,
        sep.join(["system", "record", "action", "to", "", ""])
        + "\n"
        + sep.join(["maxsight", "t1", "assign", "b", "", ""])
        + "\n"
        + sep.join(["maxsight", "t2", "assign", "b", "", "stray"])
        + "\n",
    )
    assert got[0] == (2, Assign(system="maxsight", record="t1", to="b", id="line-2"))
    assert got[1][0] == 3
    assert isinstance(got[1][1], InvalidChange)
    assert "a value ('stray') in column 6, which the header leaves without a name" in str(got[1][1])


def test_csv_given_as_json_lines_is_one_error_and_a_bom_is_fine(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"looks like CSV.*name it \.csv or pass --format csv"):
        csv_plan(tmp_path, "system,record,action,to\nkintone,1:1,assign,eve\n", "plan.jsonl")
    with pytest.raises(PlanError, match=r"looks like CSV \(its first line is a header: system;"):
        csv_plan(tmp_path, "system;record;action;to\nkintone;1:1;assign;eve\n", "plan.jsonl")
    (tmp_path / "plan.csv").write_text("system,record,action,to\nkintone,1:1,assign,eve\n")
    with pytest.raises(PlanError, match="leave out --format jsonl"):
        list(read_plan(tmp_path / "plan.csv", format="jsonl"))
    got = csv_plan(
        tmp_path,
        '\ufeff{"system": "kintone", "record": "1:1", "action": "assign", "to": "eve"}\n',
        "plan.jsonl",
    )
    assert isinstance(got[0][1], Assign)
    assert plan_format(tmp_path / "plan.jsonl") == "jsonl"
    (tmp_path / "export").write_text("system,record\n")
    assert plan_format(tmp_path / "export") == "csv"
    with pytest.raises(PlanError, match="unknown plan format"):
        plan_format(tmp_path / "export", "xml")


@pytest.mark.parametrize("name", ["plan.csv", "plan.jsonl", "export"])
@pytest.mark.parametrize(
    ("encoding", "words"),
    [
        ("utf-16", "is UTF-16 text: a JSON Lines plan is UTF-8"),
        ("utf-32", "is UTF-32 text: a JSON Lines plan is UTF-8"),
        ("utf-16-le", "has zero bytes in its first line"),
    ],
)
def test_a_json_lines_plan_saved_as_utf16_is_one_plan_error(
    tmp_path: Path, name: str, encoding: str, words: str
) -> None:
    # Without the check every line was refused as "not valid JSON" (or the header as
    # unknown columns). JSON is UTF-8; a CSV plan with a byte order mark is read (below).
    text = (
        "system,record,action,to\nkintone,1:1,assign,eve\n"
        if name == "plan.csv"
        else '{"system": "kintone", "record": "1:1", "action": "assign", "to": "eve"}\n'
    )
    if name == "plan.csv" and encoding != "utf-16-le":
        return  # read: see test_a_csv_plan_saved_as_unicode_text_is_read
    (tmp_path / name).write_bytes(text.encode(encoding))
    with pytest.raises(PlanError, match=re.escape(words)):
        list(read_plan(tmp_path / name))
    with pytest.raises(PlanError, match=re.escape(words)):  # a file object: JSON Lines
        list(read_plan(io.BytesIO(text.encode(encoding))))


@pytest.mark.parametrize("name", ["plan.csv", "export.txt"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_csv_plan_saved_as_unicode_text_is_read(tmp_path: Path, name: str, encoding: str) -> None:
    """Excel's "Unicode text" (a .txt file: UTF-16 with a byte order mark, tab-separated,
    CRLF) was refused with "save it as UTF-8"; it is read as it is, like Windows'
    "Unicode" (UTF-16 big-endian, UTF-32) saves."""
    text = (
        "system\trecord\taction\tto\r\nkintone\t1:1\tassign\teve\r\nperscom\t2\tassign\tmaría\r\n"
    )
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data  # (the codec that names the order writes no mark)
    (tmp_path / name).write_bytes(data)
    assert plan_format(tmp_path / name) == "csv"
    got = [(n, c) for n, c in read_plan(tmp_path / name)]
    assert [(n, *(getattr(c, k, None) for k in ("system", "record", "to"))) for n, c in got] == [
        (2, "kintone", "1:1", "eve"),
        (3, "perscom", 2, "maría"),
    ]
    buf = io.BytesIO(data)
    assert [n for n, _ in read_plan(buf, format="csv")] == [2, 3]
    assert not buf.closed  # the caller's to close
    # Cut off in the middle of a character: one PlanError, not a UnicodeDecodeError.
    (tmp_path / name).write_bytes(data[:-1])
    with pytest.raises(
        PlanError, match=f"is not valid UTF-{'32' if '32' in encoding else '16'} text"
    ):
        list(read_plan(tmp_path / name))


def test_reading_a_plan_feeds_its_digest(tmp_path: Path) -> None:
    import hashlib

    for name, text in (
        ("p.csv", "system,record,action,to\nkintone,1:1,assign,eve\n"),
        ("p.jsonl", '{"system": "kintone", "record": "1:1", "action": "assign", "to": "eve"}\n'),
    ):
        path = tmp_path / name
        path.write_text(text)
        digest = hashlib.sha256()
        assert len(list(read_plan(path, digest=digest))) == 1
        assert digest.hexdigest() == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('{"system": "perscom", "record": "a\\u0000b", "action": "assign", "to": "7"}', "record"),
        ('{"system": "perscom", "record": 1, "id": "c\\u0000", "action": "unassign"}', "id"),
    ],
)
def test_an_id_with_a_nul_character_is_refused(line: str, field: str) -> None:
    with pytest.raises(InvalidChange, match="NUL") as e:
        decode_change(line, line=3)
    assert e.value.field == field
    with pytest.raises(InvalidChange, match="NUL"):
        convert_change(json.loads(line), line=3)
