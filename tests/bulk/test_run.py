"""``patchassign run`` as a user runs it: a subprocess against the sandbox (in this process)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from patchassign.cli import _demo_config
from patchassign.journal import Journal
from patchassign.sandbox import (
    SYSTEMS,
    Faults,
    Sandbox,
    demo_mismatches,
    demo_plan,
    exact_faults,
)


@dataclass
class Setup:
    sb: Sandbox
    dir: Path
    plan: Path
    config: Path
    env: dict[str, str]
    n: int

    @property
    def total(self) -> int:
        """How many changes the demo plan holds: ``n`` per system."""
        return self.n * len(SYSTEMS)

    @property
    def journal(self) -> Path:
        return self.plan.with_name(self.plan.name + ".journal")


async def patchassign(
    setup: Setup, *args: str | Path, timeout: float = 120, stdin: bytes | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "patchassign",
        *map(str, args),
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **setup.env},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_plan(path: Path, n: int, extra: list[bytes] | None = None) -> None:
    with open(path, "wb") as f:
        for change in demo_plan(n):
            f.write(msgspec.json.encode(change) + b"\n")
        for line in extra or []:
            f.write(line + b"\n")


async def make(tmp_path: Path, n: int, faults: Any = None) -> AsyncIterator[Setup]:
    async with Sandbox(demo=n, faults=faults) as sb:
        config = tmp_path / "systems.toml"
        env = _demo_config(sb, config)
        plan = tmp_path / "plan.jsonl"
        write_plan(plan, n)
        yield Setup(sb, tmp_path, plan, config, env, n)


@pytest_asyncio.fixture
async def small(tmp_path: Path) -> AsyncIterator[Setup]:
    async for s in make(tmp_path, 20):
        yield s


def results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def holders(s: Setup) -> dict[tuple[str, int], Any]:
    """Who holds each demo record, per system (the fields the demo plan changes)."""
    out: dict[tuple[str, int], Any] = {}
    for i in range(1, s.n + 1):
        out["perscom", i] = s.sb.perscom.records[str(i)]["user_id"]
        got = s.sb.maxsight.records[f"task-{i:06d}"].get("assignment") or {}
        out["maxsight", i] = (got.get("assigned_to_id"), got.get("assigned_to_type"))
        out["kintone", i] = list(s.sb.kintone.records[f"1:{i}"]["assignees"])
        rec = s.sb.superoffice.records[str(i)]
        out["superoffice", i] = (rec["PersonId"], rec.get("ContactDepartment"))
        ticket = s.sb.helpdesk.records[f"HD-{i:06d}"]
        out["helpdesk", i] = (ticket["assignee"], ticket["queue"])
    return out


def writes(sb: Sandbox) -> int:
    return sum(sum(s.stats.writes.values()) for s in sb)


async def test_a_plan_from_standard_input_runs_and_resumes(small: Setup) -> None:
    """``generate | patchassign run -c systems.toml --journal J -``: the plan is copied
    once (it is read more than once), and named ``-``. Without ``--journal`` it is a
    usage error: the journal's default place is next to the plan's file."""
    data = small.plan.read_bytes()
    code, _, err = await patchassign(small, "run", "-", "-c", small.config, stdin=data)
    assert code == 2, err
    assert "a plan read from standard input needs --journal" in err
    assert writes(small.sb) == 0
    journal = small.dir / "piped.journal"
    code, out, err = await patchassign(
        small, "run", "-", "-c", small.config, "--journal", journal, stdin=data
    )
    assert code == 0, err
    assert "result: every change applied" in out
    assert demo_mismatches(small.sb, small.n) == []
    assert "patchassign-plan-" not in out + err  # the copy's name is never shown
    with Journal(journal) as j:
        assert j.meta("plan") == "-"
    # The same plan again: the journal knows it by its content; nothing is sent twice.
    sent = writes(small.sb)
    code, out, err = await patchassign(
        small, "run", "-", "-c", small.config, "--journal", journal, "--resume", stdin=data
    )
    assert code == 0, err
    assert writes(small.sb) == sent
    # Another plan on that journal is refused, named as given.
    code, _, err = await patchassign(
        small,
        "run",
        "-",
        "-c",
        small.config,
        "--journal",
        journal,
        "--resume",
        stdin=b"".join(data.splitlines(keepends=True)[1:]),
    )
    assert code == 2
    assert "belongs to another plan (-," in err
    # The preflight of such a plan reads a record of each of its systems.
    code, out, err = await patchassign(small, "check", "-c", small.config, "-", stdin=data)
    assert code == 0, err
    assert sorted(re.findall(r"^check: (\w+) .*: reachable, authenticated", out, re.M)) == sorted(
        SYSTEMS
    ), out
    # A dry run keeps no journal: it needs none.
    code, out, err = await patchassign(
        small, "run", "-", "-c", small.config, "--dry-run", stdin=data
    )
    assert code == 0, err


async def test_a_run_applies_the_plan_and_reports(small: Setup) -> None:
    out_file = small.dir / "results.jsonl"
    code, out, err = await patchassign(
        small, "run", small.plan, "--config", small.config, "--results", out_file
    )
    assert code == 0, err
    # the report goes to stdout (`> report.txt` keeps it); checks and progress to stderr
    assert "result: every change applied" in out
    assert f"{small.total} changes in" in out
    assert "latency per change: p50" in out
    assert "result:" not in err
    assert "check: kintone" in err
    assert demo_mismatches(small.sb, small.n) == []
    rows = results(out_file)
    assert [r["line"] for r in rows] == list(range(1, small.total + 1))
    assert {r["status"] for r in rows} == {"applied"}
    assert rows[0]["system"] == "perscom"
    assert rows[0]["record"] == 1
    assert rows[2]["record"] == "1:1"
    # each results line carries the change itself, and what the record held before
    assert rows[2]["change"] == {
        "action": "assign",
        "system": "kintone",
        "record": "1:1",
        "id": "kintone-1",
        "to": ["fay"],
        "expect": ["bob"],
    }
    assert rows[2]["before"] == {"to": ["bob"]}
    assert rows[2]["after"] == {"to": ["fay"]}
    # Kintone's and PERSCOM's writes went in batches: each line says which, and where
    assert rows[2]["batch"].startswith("kintone-w")
    assert isinstance(rows[2]["position"], int)
    assert rows[0]["batch"].startswith("perscom-w")
    assert "batch" not in rows[1]  # Maxsight has no bulk endpoint
    assert rows[1]["before"] == {"to": "team-a", "to_type": "team"}
    assert rows[1]["after"] == {"to": "team-b", "to_type": "team"}
    # nothing of the credentials anywhere
    journal_dump = "\n".join(sqlite3.connect(small.journal).iterdump())
    for token in small.env.values():
        assert token not in err
        assert token not in out_file.read_text()
        assert token not in journal_dump


async def test_bad_lines_are_all_reported_and_nothing_is_sent(small: Setup) -> None:
    write_plan(
        small.plan,
        small.n,
        [
            b'{"system": "kintone", "record": "1:1", "action": "assign"}',
            b"not json",
            b'{"system": "perscom", "record": 1, "action": "assign", "to": "eve"}',
            b'{"system": "jira", "record": 1, "action": "assign", "to": "eve"}',
        ],
    )
    code, _, err = await patchassign(small, "run", small.plan, "--config", small.config)
    assert code == 2
    assert f"line {small.total + 1}: field 'to'" in err
    assert f"line {small.total + 2}: not valid JSON" in err
    assert f"line {small.total + 3}: field 'to': a PERSCOM user is an integer user_id" in err
    assert f"line {small.total + 4}: system 'jira' is not in the configuration" in err
    assert "4 invalid line(s)" in err
    assert "nothing was sent" in err
    assert "Traceback" not in err
    assert sum(s.stats.count() for s in small.sb) == 0


async def test_skip_invalid_sends_the_rest_and_exits_1(small: Setup) -> None:
    write_plan(small.plan, small.n, [b"not json"])
    out_file = small.dir / "r.jsonl"
    code, out, _ = await patchassign(
        small, "run", small.plan, "-c", small.config, "--skip-invalid", "--results", out_file
    )
    assert code == 1
    assert "NOT everything applied" in out
    rows = results(out_file)
    assert len(rows) == small.total + 1
    assert rows[-1]["status"] == "invalid"
    assert rows[-1]["line"] == small.total + 1
    assert demo_mismatches(small.sb, small.n) == []


async def test_dry_run_reads_and_shows_but_writes_nothing(small: Setup) -> None:
    code, out, err = await patchassign(small, "run", small.plan, "-c", small.config, "--dry-run")
    assert code == 0, err
    assert writes(small.sb) == 0
    assert all(
        status == 200 for s in small.sb for (endpoint, status) in s.stats.requests
    )  # reads only
    lines = [line for line in out.splitlines() if line.startswith("line ")]
    assert len(lines) == small.total
    assert any(
        "kintone 1:1: PUT http://127.0.0.1:" in line and '"assignees":["fay"]' in line
        for line in lines
    )
    assert any(
        "findable asg-000001: POST" in line and '"toUpn":"fay@example.com"' in line
        for line in lines
    )
    assert f"would write {small.total}" in out
    assert not small.journal.exists()


async def test_conflicts_and_failures_are_reported_with_exit_1(small: Setup) -> None:
    small.sb.kintone.records["1:3"]["assignees"] = ["zed"]
    small.sb.findable.records["asg-000004"]["status"] = "completed"
    code, out, _ = await patchassign(small, "run", small.plan, "-c", small.config)
    assert code == 1
    assert "conflict" in out
    assert "kintone conflict" in out
    assert "zed" in out
    assert "findable conflict" in out
    assert "completed" in out


async def test_a_journal_is_not_reused_by_accident(small: Setup) -> None:
    code, _, err = await patchassign(small, "run", small.plan, "-c", small.config)
    assert code == 0, err
    code, _, err = await patchassign(small, "run", small.plan, "-c", small.config)
    assert code == 2
    assert "already holds this plan" in err
    assert "--resume" in err
    # resuming a finished run does nothing, and says so
    before = sum(s.stats.count() for s in small.sb)
    code, out, err = await patchassign(small, "run", small.plan, "-c", small.config, "--resume")
    assert code == 0, err
    assert f"{small.total} already done" in out
    assert sum(s.stats.count() for s in small.sb) == before
    # a changed plan is refused
    write_plan(small.plan, small.n - 1)
    code, _, err = await patchassign(small, "run", small.plan, "-c", small.config, "--resume")
    assert code == 2
    assert "belongs to another plan" in err


async def test_configuration_errors_are_one_line(small: Setup) -> None:
    env_less = Setup(small.sb, small.dir, small.plan, small.config, {}, small.n)
    saved = {k: os.environ.pop(k) for k in small.env if k in os.environ}
    try:
        code, _, err = await patchassign(env_less, "run", small.plan, "-c", small.config)
    finally:
        os.environ.update(saved)
    assert code == 2
    assert "environment variable DEMO_PERSCOM_TOKEN is not set" in err
    assert len(err.strip().splitlines()) == 1
    bad = small.dir / "bad.toml"
    bad.write_text('[systems.kintone]\nurl = "http://127.0.0.1:1"\ncolour = "blue"\n')
    code, _, err = await patchassign(small, "run", small.plan, "-c", bad)
    assert code == 2
    assert "systems.kintone" in err
    assert "colour" in err
    code, _, err = await patchassign(small, "run", small.dir / "missing.jsonl", "-c", small.config)
    assert code == 2
    assert "no such file" in err


async def test_a_run_with_faults_applies_everything_once(tmp_path: Path) -> None:
    every = Faults(throttle=0.05, retry_after=1, unavailable=0.05, drop=0.03, editor=0.1, seed=9)
    async for s in make(tmp_path, 200, exact_faults(every)):
        code, out, err = await patchassign(s, "run", s.plan, "-c", s.config, "--progress", "log")
        assert code == 0, out + err
        assert "progress:" in err
        stamp = next(line for line in err.splitlines() if "progress:" in line).split()[0]
        assert stamp[:2] == "20"
        assert "T" in stamp  # log lines carry the time
        assert demo_mismatches(s.sb, s.n) == []
        for server in s.sb:
            assert max(server.stats.writes.values()) == 1
            assert sum(server.stats.writes.values()) == s.n


async def test_a_system_that_answers_429s_is_named_in_the_report_and_its_pace_shown(
    tmp_path: Path,
) -> None:
    """Maxsight behind a rate limit of 60 requests/s: the progress shows the pace the
    lane learned, and the report how many answers were 429, and that a configured
    `rate` would avoid them."""
    limited = {"maxsight": Faults(rate_limit=60.0, burst=5)}
    async for s in make(tmp_path, 150, limited):
        code, out, err = await patchassign(
            s, "run", s.plan, "-c", s.config, "--progress", "log", "--progress-interval", "0.5"
        )
        assert code == 0, out + err
        refused = s.sb.maxsight.stats.count(status=429)
        assert refused > 0
        line = next(line for line in out.splitlines() if line.startswith("maxsight: "))
        assert line.startswith(f"maxsight: {refused:,} answers were 429 (too many requests), ")
        assert "slowdown(s): a `rate` (requests/s) under the system's limit" in line
        assert "[systems.maxsight]" in line
        assert re.search(r"maxsight \d+/150 (paused, |throttled, )?paced at \d+/s", err), err
        assert not any(line.startswith(("kintone: ", "perscom: ")) for line in out.splitlines())
        assert demo_mismatches(s.sb, s.n) == []


DONE_ITEMS = "SELECT count(*) FROM items WHERE status NOT IN ('pending', 'taken')"


async def kill_at_random(setup: Setup, rng: random.Random, *extra: str) -> tuple[int, int]:
    """Start a run, SIGKILL it once its journal shows progress.

    Returns the exit status (``-9``: killed) and the outcomes journaled by then.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "patchassign",
        "run",
        str(setup.plan),
        "-c",
        str(setup.config),
        "--progress",
        "none",
        "--concurrency",
        "8",
        *extra,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **setup.env},
    )
    start = 0
    if setup.journal.exists():
        with sqlite3.connect(setup.journal) as db:
            start = db.execute(DONE_ITEMS).fetchone()[0]
    target = start + rng.randint(1, max(1, (len(SYSTEMS) * setup.n - start) // 3))
    seen = start
    for _ in range(400):
        await asyncio.sleep(0.05)
        if proc.returncode is not None:
            break
        if setup.journal.exists():
            try:
                with sqlite3.connect(setup.journal) as db:
                    seen = db.execute(DONE_ITEMS).fetchone()[0]
            except sqlite3.OperationalError:
                continue
            if seen >= target:
                break
    if proc.returncode is None:
        proc.send_signal(signal.SIGKILL)
    return await proc.wait(), int(seen)


async def test_a_resume_starts_at_the_pace_the_stopped_run_had_learned(tmp_path: Path) -> None:
    """A system with its own rate limit (Maxsight, 60 requests/s): the first run learns
    it from a burst of 429s and a pause. The journal keeps the pace, and a resume starts
    at it: no slowdown, no pause."""
    faults = {"maxsight": Faults(rate_limit=60.0, burst=5)}
    async for s in make(tmp_path, 150, faults):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "patchassign",
            "run",
            str(s.plan),
            "-c",
            str(s.config),
            "--progress",
            "none",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **s.env},
        )
        stats = s.sb.maxsight.stats
        for _ in range(300):  # until it paced itself and went on for a while
            await asyncio.sleep(0.1)
            if stats.count(status=429) and stats.count() > 150:
                break
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 130
        with Journal(s.journal) as j:
            kept = json.loads(j.meta("paces") or "{}")
        assert 10.0 < kept.get("maxsight", 0.0) < 200.0, kept
        code, out, err = await patchassign(s, "run", s.plan, "-c", s.config, "--resume")
        assert code == 0, err
        assert demo_mismatches(s.sb, s.n) == []
        throttled = [line for line in out.splitlines() if line.startswith("maxsight: ")]
        assert not any("slowdown" in line for line in throttled), out
        with Journal(s.journal) as j:
            assert "maxsight" in json.loads(j.meta("paces") or "{}")


async def test_killed_runs_resume_without_applying_anything_twice(tmp_path: Path) -> None:
    """kill -9 at random points, three times, then finish: same state, nothing twice."""
    faults = Faults(latency=0.02, jitter=0.02, drop=0.02, seed=3)
    rng = random.Random(1)
    async for s in make(tmp_path, 120, faults):
        original = holders(s)
        extra: tuple[str, ...] = ()
        journaled = []
        for _ in range(3):
            code, seen = await kill_at_random(s, rng, *extra)
            assert code == -signal.SIGKILL  # killed mid-run, not finished
            journaled.append(seen)
            extra = ("--resume",)
        assert journaled == sorted(set(journaled))  # each run got further
        assert journaled[-1] < len(SYSTEMS) * s.n, journaled
        out_file = s.dir / "results.jsonl"
        code, _, err = await patchassign(
            s, "run", s.plan, "-c", s.config, "--resume", "--results", out_file
        )
        assert code == 0, err
        assert demo_mismatches(s.sb, s.n) == []
        for server in s.sb:
            assert max(server.stats.writes.values()) == 1, server
            assert sum(server.stats.writes.values()) == s.n, server
        rows = results(out_file)
        assert len(rows) == len(SYSTEMS) * s.n
        # Every record started with team A: a change a killed run applied without
        # journaling it is found in place by the next run and reported as `recovered`,
        # never as `unchanged` (nothing here was already right).
        statuses = Counter(r["status"] for r in rows)
        assert set(statuses) <= {"applied", "recovered"}, statuses
        # and undo puts every record back, the recovered ones included (from their
        # `expect`), but for recovered merges and sets: what those records held before the
        # killed run wrote them is not known
        unknown = {
            (r["system"], int(r["id"].rsplit("-", 1)[1]))  # demo ids: "<system>-<i>"
            for r in rows
            if r["status"] == "recovered" and r["change"]["action"] in ("merge", "set")
        }
        undo = s.dir / "undo.jsonl"
        code, _, err = await patchassign(s, "undo", s.journal, "-o", undo)
        assert code == 0, err
        assert f"{s.n} not undoable: a delegation" in err
        if unknown:
            assert f"{len(unknown)} not undoable: the record's earlier value is not known" in err
        else:
            assert "not known" not in err
        code, out, err = await patchassign(s, "run", undo, "-c", s.config)
        assert code == 0, out + err
        now = holders(s)
        assert {k: v for k, v in now.items() if k not in unknown} == {
            k: v for k, v in original.items() if k not in unknown
        }


async def test_an_unreachable_system_ends_unsent_and_a_resume_sends_it(small: Setup) -> None:
    """A system at a closed port: preflight stops the run before any write; without
    preflight its changes end ``unsent`` after the outage budget while the others are
    applied; once it is back, ``--resume`` finishes the job."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    good = small.config.read_text()
    broken = small.config.with_name("broken.toml")
    broken.write_text(
        good.replace(small.sb.superoffice.url, closed).replace("[retry]\n", "[retry]\noutage = 1\n")
    )
    code, _, err = await patchassign(small, "run", small.plan, "-c", broken)
    assert code == 1
    assert "superoffice" in err
    assert "preflight check failed" in err
    assert sum(s.stats.writes.total() for s in small.sb) == 0  # nothing was written

    code, out, err = await patchassign(small, "run", small.plan, "-c", broken, "--no-preflight")
    assert code == 1, err
    assert "stopped: unreachable" in err
    assert f"127.0.0.1:{closed.rsplit(':', 1)[1]}" in err
    with sqlite3.connect(small.journal) as db:
        rows = dict(db.execute("SELECT system || ':' || status, count(*) FROM items GROUP BY 1"))
    assert rows["superoffice:unsent"] == small.n
    assert (
        sum(n for k, n in rows.items() if k.endswith(":applied")) == (len(SYSTEMS) - 1) * small.n
    )  # all but the stopped one
    assert "leftovers" in out
    assert "--resume sends them" in out

    code, out, err = await patchassign(small, "run", small.plan, "-c", small.config, "--resume")
    assert code == 0, out + err
    assert not demo_mismatches(small.sb, small.n)
    assert max(n for s in small.sb for n in s.stats.writes.values()) == 1  # nothing twice


def test_one_journal_reached_by_two_names_is_still_locked(tmp_path: Path) -> None:
    """Issue: the lock was a second file named after the path, so a symlink (or a hard
    link) to the journal let two runs share it and apply records twice."""
    import pytest

    from patchassign.journal import Journal, JournalError

    real = tmp_path / "plan.journal"
    link = tmp_path / "link.journal"
    hard = tmp_path / "hard.journal"
    with Journal(real) as j:
        j.set_meta("plan", "p")
        link.symlink_to(real)
        os.link(real, hard)
        for other in (link, hard):
            with pytest.raises(JournalError, match="in use by another run"):
                Journal(other)
    with Journal(link) as again:  # free once the first run is gone
        assert again.meta("plan") == "p"


async def test_lines_appended_to_the_plan_during_a_run_are_not_sent(
    small: Setup, monkeypatch: Any
) -> None:
    """Issue: the plan was read again after validation, and lines appended meanwhile were
    sent unvalidated. Now the plan is read once, into the journal: what is appended after
    that is not part of the run (and a resume refuses the changed plan)."""
    import io

    from patchassign import bulk
    from patchassign.config import load_config
    from patchassign.journal import Journal

    load = Journal.load

    def load_then_append(self: Journal, *args: Any, **kw: Any) -> None:
        load(self, *args, **kw)
        with open(small.plan, "ab") as f:  # someone appends right after loading
            f.write(b'{"system": "perscom", "record": 1, "action": "assign", "to": "999"}\n')
            f.write(b"not even json\n")

    monkeypatch.setattr(Journal, "load", load_then_append)
    for name, value in small.env.items():
        monkeypatch.setenv(name, value)
    report = await bulk.run_plan(
        bulk.Options(plan=small.plan, config=load_config(small.config), progress="none"),
        err=io.StringIO(),
        out=io.StringIO(),
    )
    assert sum(report.run_counts.values()) == len(SYSTEMS) * small.n  # not one more
    assert report.invalid == 0
    assert small.sb.perscom.records["1"]["user_id"] != 999


def test_a_full_journal_is_a_journal_error_naming_the_file_and_what_to_do(
    tmp_path: Path,
) -> None:
    """Issue: a full disk gave a raw sqlite3 traceback. ``max_page_count`` plays the full
    disk: the journal cannot grow past the pages it has."""
    import hashlib

    import pytest

    from patchassign.changes import Assign
    from patchassign.dispatch import Result
    from patchassign.journal import Journal, JournalError

    path = tmp_path / "plan.journal"
    with Journal(path, batch=10_000) as j:
        items = [
            (n, Assign(system="x", record=n, to="eve", id=f"line-{n}"), None, None, None)
            for n in range(1, 2001)
        ]
        j.load(items, plan="plan.jsonl", digest=hashlib.sha256())
        j.start()
        pages = j._db.execute("PRAGMA page_count").fetchone()[0]
        j._db.execute(f"PRAGMA max_page_count={pages}")
        for n in range(1, 2001):
            j.record(
                n, Result(index=n, id=None, system="x", record=n, status="applied", error="e" * 200)
            )
        with pytest.raises(JournalError) as e:
            j.flush()
        j._db.execute("PRAGMA max_page_count=1000000")  # room again, to close cleanly
    message = str(e.value)
    assert str(path) in message
    assert "cannot be written" in message
    assert "--resume" in message


async def test_a_journal_with_random_bytes_is_one_line_exit_2(small: Setup) -> None:
    code, _, err = await patchassign(small, "run", small.plan, "-c", small.config)
    assert code == 0, err
    data = bytearray(small.journal.read_bytes())
    data[100:4000] = os.urandom(3900)
    small.journal.write_bytes(bytes(data))
    for wal in small.journal.parent.glob(small.journal.name + "-*"):
        wal.unlink()
    code, _, err = await patchassign(small, "run", small.plan, "-c", small.config, "--resume")
    assert code == 2, err
    assert "Traceback" not in err
    assert str(small.journal) in err
    assert len(err.strip().splitlines()) == 1


async def test_sigterm_during_validation_sends_nothing(small: Setup) -> None:
    """Issue: SIGTERM while a big plan was being validated still let requests out
    (validation holds the event loop; the cancellation landed after sends began)."""
    from patchassign.sandbox import demo_change

    big = small.dir / "big.jsonl"
    with open(big, "wb") as f:
        for i in range(1, 60_001):
            for system in ("perscom", "kintone", "maxsight", "superoffice", "findable"):
                f.write(msgspec.json.encode(demo_change(system, i)) + b"\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "patchassign",
        "run",
        str(big),
        "-c",
        str(small.config),
        "--no-preflight",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **small.env},
    )
    # Started (imports take ~0.3 s) and busy validating 300,000 lines (~2.4 s here).
    await asyncio.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, err.decode()
    assert sum(s.stats.count() for s in small.sb) == 0  # not one request went out


async def test_results_that_cannot_be_written_name_the_file_and_the_journal(
    small: Setup,
) -> None:
    """Issue: results on a full disk exited 2 ("bad input") with "No space left on
    device:" and no file name, although everything was applied and journaled. Linux's
    /dev/full plays the full disk."""
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full here")
    code, out, err = await patchassign(
        small, "run", small.plan, "-c", small.config, "--results", full
    )
    text = out + err
    assert code == 1, text
    assert f"results could not be written to {full} (No space left on device)" in text
    assert str(small.journal) in text
    assert "free space and run again with --resume --results FILE" in text
    assert "every change applied" in text  # the report is still there
    assert "Traceback" not in text


async def test_a_results_file_that_cannot_be_made_is_said_before_anything_is_sent(
    small: Setup,
) -> None:
    """A results path in a folder that does not exist was found out at the end of the
    run (the whole plan applied, then "free space and run again")."""
    for bad, message in [
        (small.dir / "no-such-folder" / "results.jsonl", "no such directory"),
        (small.dir, "a directory, not a file"),
    ]:
        code, _, err = await patchassign(
            small, "run", small.plan, "-c", small.config, "--results", bad
        )
        assert code == 2, err
        assert f"patchassign run: --results {bad}: {message}" in err
        assert "Traceback" not in err
    assert sum(s.stats.count() for s in small.sb) == 0  # not one request went out
    assert not small.journal.exists()


async def test_a_resume_lets_late_writes_settle_before_reading(tmp_path: Path) -> None:
    """Issue: kill -9 while PERSCOM (no version token) held writes, then resume: the
    resume read the records before the held writes landed and wrote them again. Now it
    waits out the settle time first, and nothing is applied twice."""
    n = 40
    faults = {"late": 0.5, "hold": 2.0, "writes_only": True, "seed": 6}
    async with Sandbox(demo=n, faults=faults, systems=["perscom"]) as sb:
        config = tmp_path / "systems.toml"
        env = _demo_config(sb, config)
        text = config.read_text().replace("timeout = 5.0", "timeout = 1.0")
        # One write per request, so that several are held when the run is killed.
        text = text.replace("[systems.perscom]\n", "[systems.perscom]\nbatch = 0\n")
        assert "batch = 0" in text
        config.write_text(text.replace("settle = 1.0", "settle = 1.5"))
        plan = tmp_path / "plan.jsonl"
        write_plan(plan, n)
        lines = [ln for ln in plan.read_text().splitlines() if '"perscom"' in ln]
        plan.write_text("\n".join(lines) + "\n")
        s = Setup(sb, tmp_path, plan, config, env, n)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "patchassign",
            "run",
            str(plan),
            "-c",
            str(config),
            "--progress",
            "none",
            "--concurrency",
            "8",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, **env},
        )
        for _ in range(200):  # kill once writes are being held
            await asyncio.sleep(0.05)
            if sb.perscom.stats.late >= 3:
                break
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        code, out, err = await patchassign(s, "run", plan, "-c", config, "--resume")
        assert code == 0, out + err
        assert "to settle before reading those records" in err
        assert demo_mismatches(sb, n, ["perscom"]) == []
        assert max(sb.perscom.stats.writes.values()) == 1
