"""After the run: leftovers, undo, CSV plans, credentials per plan (CLI against the sandbox)."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from patchassign.sandbox import SYSTEMS, demo_mismatches

from .test_run import Setup, holders, make, patchassign, results, writes


@pytest_asyncio.fixture
async def small(tmp_path: Path) -> AsyncIterator[Setup]:
    async for s in make(tmp_path, 20):
        yield s


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_leftovers_of_conflicts_and_a_stopped_system_finish_the_job(
    small: Setup,
) -> None:
    """Conflicts carry the record's current holder as data; a stopped system's changes
    end unsent; `leftovers` writes exactly those as a plan, with their ids; once the
    conflicts are sorted out and the system is back, running the leftovers finishes."""
    small.sb.kintone.records["1:3"]["assignees"] = ["zed"]
    small.sb.perscom.records["4"]["user_id"] = 999
    broken = small.config.with_name("broken.toml")
    broken.write_text(
        small.config.read_text()
        .replace(small.sb.superoffice.url, closed_port())
        .replace("[retry]\n", "[retry]\noutage = 1\n")
    )
    out_file = small.dir / "results.jsonl"
    code, out, err = await patchassign(
        small, "run", small.plan, "-c", broken, "--no-preflight", "--results", out_file
    )
    assert code == 1, err
    rows = {r["id"]: r for r in results(out_file)}
    assert rows["kintone-3"]["status"] == "conflict"
    assert rows["kintone-3"]["current"] == {"to": ["zed"]}
    assert rows["perscom-4"]["current"] == {"to": "999"}
    assert rows["superoffice-1"]["status"] == "unsent"
    assert "leftovers" in out

    redo = small.dir / "redo.jsonl"
    code, _, err = await patchassign(small, "leftovers", small.journal, "-o", redo)
    assert code == 0, err
    left = [json.loads(line) for line in redo.read_text().splitlines()]
    ids = sorted(c["id"] for c in left)
    assert ids == sorted(["kintone-3", "perscom-4", *(f"superoffice-{i}" for i in range(1, 21))])
    expected = {c["id"]: c["expect"] for c in left if c["id"] in ("kintone-3", "perscom-4")}
    assert expected["kintone-3"] != ["zed"]
    assert f"{len(left)} changes" in err
    # only the conflicts, to stdout
    code, conflicts, _ = await patchassign(
        small, "leftovers", small.journal, "--status", "conflict"
    )
    assert code == 0
    assert sorted(json.loads(line)["id"] for line in conflicts.splitlines()) == [
        "kintone-3",
        "perscom-4",
    ]
    # --journal as run takes it, the same journal
    code, again, _ = await patchassign(
        small, "leftovers", "--journal", small.journal, "--status", "conflict"
    )
    assert (code, again) == (0, conflicts)
    code, _, err = await patchassign(small, "leftovers", small.journal, "--status", "nope")
    assert code == 2
    assert "unknown status 'nope'" in err

    # a person sorts the conflicts out (puts the expected holders back); the system is up
    small.sb.kintone.records["1:3"]["assignees"] = expected["kintone-3"]
    small.sb.perscom.records["4"]["user_id"] = int(expected["perscom-4"])
    before = writes(small.sb)
    code, out, err = await patchassign(small, "run", redo, "-c", small.config)
    assert code == 0, out + err
    assert "22 changes" in out
    assert writes(small.sb) - before == 22  # exactly the leftovers
    assert demo_mismatches(small.sb, small.n) == []


async def test_undo_restores_what_a_run_changed_and_keeps_later_edits(small: Setup) -> None:
    """Undo puts every record a run changed back, except those someone changed after the
    run: they end as conflicts, the editor's value kept. Delegations cannot be undone."""
    original = holders(small)
    code, out, err = await patchassign(small, "run", small.plan, "-c", small.config)
    assert code == 0, out + err
    # after the run, someone edits two records the run had changed
    small.sb.kintone.records["1:5"]["assignees"] = ["zed"]
    small.sb.superoffice.records["6"]["PersonId"] = 999
    edited = {("kintone", 5): ["zed"], ("superoffice", 6): (999, "Team B")}

    undo = small.dir / "undo.jsonl"
    code, _, err = await patchassign(small, "undo", small.journal, "-o", undo)
    assert code == 0, err
    plan = [json.loads(line) for line in undo.read_text().splitlines()]
    # every applied change of the systems that can be undone (all but Findable's delegations)
    assert len(plan) == (len(SYSTEMS) - 1) * small.n
    assert f"{small.n} not undoable: a delegation cannot be undone" in err
    kintone = next(c for c in plan if c["id"] == "undo-kintone-1")
    assert kintone == {
        "system": "kintone",
        "record": "1:1",
        "id": "undo-kintone-1",
        "action": "assign",
        "to": ["bob"],
        "expect": ["fay"],
    }
    merge = next(c for c in plan if c["id"] == "undo-superoffice-2")
    assert merge["action"] == "patch"
    assert {"op": "test", "path": "/PersonId", "value": 202} in merge["patch"]

    out_file = small.dir / "undo-results.jsonl"
    code, out, err = await patchassign(
        small, "run", undo, "-c", small.config, "--results", out_file
    )
    assert code == 1, out + err  # the two edited records are conflicts
    statuses = {r["id"]: r["status"] for r in results(out_file)}
    assert statuses["undo-kintone-5"] == "conflict"
    assert statuses["undo-superoffice-6"] == "conflict"
    assert sum(1 for s in statuses.values() if s == "applied") == len(plan) - 2
    now = holders(small)
    for key, value in original.items():
        assert now[key] == edited.get(key, value), key


async def test_csv_plans_with_bom_quoting_and_bad_rows(small: Setup) -> None:
    """A CSV export: header row, BOM, quoted cells with commas and quotes, several
    assignees in one cell; bad rows named by row and column; nothing sent until fixed."""
    csv = small.dir / "plan.csv"
    rows = [
        "system,record,action,to,expect,to_type,comment,merge,id",
        "kintone,1:1,assign,fay|gus,bob,,,,k1",
        'maxsight,task-000001,assign,team-b,team-a,team,"moved, as agreed: ""B"" owns it",,m1',
        'superoffice,2,merge,,,,,"{""PersonId"": 202}",s2',
        "perscom,3,assign,203,103,,,,",
    ]
    csv.write_bytes(
        (
            "\ufeff"
            + "\r\n".join([*rows, "perscom,4,asign,204,,,,,", "kintone,1:2,assign,,,,,{oops,"])
            + "\r\n"
        ).encode()
    )
    code, _, err = await patchassign(small, "run", csv, "-c", small.config)
    assert code == 2
    assert "row 6: column 'action'" in err
    assert "row 7: column 'merge': not JSON" in err
    assert writes(small.sb) == 0
    code, _, err2 = await patchassign(small, "validate", csv)
    assert code == 2  # the same status as `run` for the same bad input
    assert "row 6: column 'action'" in err2

    csv.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode())
    out_file = small.dir / "r.jsonl"
    code, out, err = await patchassign(small, "run", csv, "-c", small.config, "--results", out_file)
    assert code == 0, out + err
    assert small.sb.kintone.records["1:1"]["assignees"] == ["fay", "gus"]
    task = small.sb.maxsight.records["task-000001"]["assignment"]
    assert task["assignment_comment"] == 'moved, as agreed: "B" owns it'
    assert small.sb.superoffice.records["2"]["PersonId"] == 202
    assert small.sb.perscom.records["3"]["user_id"] == 203
    got = {r["id"]: r for r in results(out_file)}
    assert got["line-5"]["record"] == 3  # an integer cell is an integer id
    assert got["k1"]["line"] == 2

    # the same file given as JSON Lines: one line saying so, not one error per row
    as_jsonl = small.dir / "plan.jsonl"
    as_jsonl.write_bytes(csv.read_bytes())
    code, _, err = await patchassign(
        small, "run", as_jsonl, "-c", small.config, "--journal", small.dir / "j2"
    )
    assert code == 2
    assert "looks like CSV" in err
    assert len(err.strip().splitlines()) == 1


async def test_a_jsonl_plan_with_a_bom_runs(small: Setup) -> None:
    small.plan.write_bytes(b"\xef\xbb\xbf" + small.plan.read_bytes())
    code, out, err = await patchassign(small, "run", small.plan, "-c", small.config)
    assert code == 0, out + err
    assert demo_mismatches(small.sb, small.n) == []


async def test_only_the_plans_systems_need_credentials(small: Setup) -> None:
    plan = small.dir / "kintone.jsonl"
    plan.write_text(
        "\n".join(line for line in small.plan.read_text().splitlines() if '"kintone"' in line)
        + "\n"
    )
    env = {k: v for k, v in small.env.items() if "KINTONE" in k}
    only = Setup(small.sb, small.dir, plan, small.config, env, small.n)
    code, out, err = await patchassign(only, "run", plan, "-c", small.config)
    assert code == 0, out + err
    assert "20 changes" in out
    # a plan that uses a system without its credentials: one line, nothing sent
    before = writes(small.sb)
    code, out, err = await patchassign(only, "run", small.plan, "-c", small.config)
    assert code == 2
    assert "DEMO_PERSCOM_TOKEN" in err
    assert len(err.strip().splitlines()) == 1
    assert writes(small.sb) == before
    with sqlite3.connect(small.journal) as db:  # nothing kept: fixing the env just works
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 0


async def test_a_file_where_no_line_is_a_change_says_so_once(small: Setup) -> None:
    """Every line bad: no advice to skip the invalid ones (that would leave nothing)."""
    bad = small.dir / "notes.jsonl"
    bad.write_text("".join(f'{{"note": {i}}}\n' for i in range(80)))
    code, _, err = await patchassign(small, "run", bad, "-c", small.config)
    assert code == 2
    assert "none of the 80 line(s)" in err
    assert "--skip-invalid" not in err
    assert "... and 30 more" in err  # the first 50 are listed
    assert writes(small.sb) == 0


def test_a_lane_takes_more_at_a_time_only_when_taking_is_slow_beside_working() -> None:
    from patchassign.bulk import SHARED_TAKE, SHARED_TAKE_MAX, next_take

    # Near the database: a take of a millisecond, a batch worked in 100 ms.
    assert next_take(SHARED_TAKE, 0.001, 0.1) == SHARED_TAKE
    # 20 ms away, the lane waiting on its takes: twice as many, up to the most.
    size = SHARED_TAKE
    for _ in range(10):
        size = next_take(size, 0.024, 0.05)
    assert size == SHARED_TAKE_MAX
    # Steady once taking is a small part of working; back down when it is a tiny part.
    assert next_take(SHARED_TAKE_MAX, 0.024, 0.5) == SHARED_TAKE_MAX
    assert next_take(SHARED_TAKE_MAX, 0.001, 0.5) == SHARED_TAKE_MAX // 2
    assert next_take(SHARED_TAKE, 0.0, 1.0) == SHARED_TAKE  # never fewer than that
