"""The other commands: validate, diff, apply, demo; and the journal and config on their own."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from patchassign.changes import Assign
from patchassign.cli import main
from patchassign.config import load_config, parse_config
from patchassign.dispatch import Limits, Result
from patchassign.errors import ConfigError
from patchassign.journal import Journal, JournalError
from patchassign.report import Progress
from patchassign.systems import KintoneAdapter, PerscomAdapter


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_diff_prints_a_patch_and_a_merge_patch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write(tmp_path / "a.json", {"owner": "ada", "team": "A", "n": 1})
    b = write(tmp_path / "b.json", {"owner": "eve", "team": "A"})
    assert main(["diff", str(a), str(b)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"op": "replace", "path": "/owner", "value": "eve"},
        {"op": "remove", "path": "/n"},
    ]
    assert main(["diff", str(a), str(b), "--guard"]) == 0
    ops = json.loads(capsys.readouterr().out)
    assert {"op": "test", "path": "/owner", "value": "ada"} in ops
    assert main(["diff", str(a), str(b), "--merge"]) == 0
    assert json.loads(capsys.readouterr().out) == {"owner": "eve", "n": None}


def test_apply_with_case_insensitive_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = write(tmp_path / "doc.json", {"Department": "Sales"})
    patch = write(tmp_path / "p.json", [{"op": "replace", "path": "department", "value": "Ops"}])
    assert main(["apply", str(doc), str(patch), "--case-insensitive"]) == 0
    assert json.loads(capsys.readouterr().out) == {"Department": "Ops"}
    assert main(["apply", str(doc), str(patch)]) == 1  # strict: no such member
    assert "department" in capsys.readouterr().err
    merge = write(tmp_path / "m.json", {"department": None})
    assert main(["apply", str(doc), str(merge), "--merge", "--case-insensitive"]) == 0
    assert json.loads(capsys.readouterr().out) == {}
    # The hints name the CLI's own fix: --merge, or the arguments' order.
    assert main(["apply", str(doc), str(merge)]) == 1
    assert "got an object (an RFC 7396 merge patch? pass --merge)" in capsys.readouterr().err
    assert main(["apply", str(patch), str(doc)]) == 1
    assert "the arguments are DOC PATCH: " + str(patch) in capsys.readouterr().err


def test_diff_and_apply_read_standard_input_and_pipes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-`` is standard input; a pipe (the shell's ``<(...)``) is read like a file; a
    directory or two ``-`` are usage errors that say so."""
    import os
    import threading

    b = write(tmp_path / "b.json", {"owner": "eve"})
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"owner": "ada"}')))
    assert main(["diff", "-", str(b)]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"op": "replace", "path": "/owner", "value": "eve"}
    ]
    patch = write(tmp_path / "p.json", [{"op": "add", "path": "/team", "value": "A"}])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b'{"owner": "ada"}')))
    assert main(["apply", "-", str(patch)]) == 0
    assert json.loads(capsys.readouterr().out) == {"owner": "ada", "team": "A"}

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(b'{"owner": "ada", "n": 1}')

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert main(["diff", str(fifo), str(b), "--merge"]) == 0
    finally:
        writer.join(10)
    assert json.loads(capsys.readouterr().out) == {"owner": "eve", "n": None}

    assert main(["diff", "-", "-"]) == 2
    assert "only one of the files can be -" in capsys.readouterr().err
    assert main(["apply", str(tmp_path), str(patch)]) == 2
    assert f"{tmp_path} is a directory" in capsys.readouterr().err
    assert main(["validate", str(tmp_path)]) == 2
    assert f"{tmp_path} is a directory" in capsys.readouterr().err


def test_validate_reads_a_plan_from_standard_input_and_pipes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan is read more than once (its format guessed, then validated): standard input
    and pipes are copied first, and messages name them as given."""
    import os
    import threading

    line = b'{"action": "assign", "system": "perscom", "record": 1, "to": "5"}\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(line * 3)))
    assert main(["validate", "-"]) == 0
    assert capsys.readouterr().out.startswith("-: 3 valid change(s) (3 perscom), 0 invalid")
    csv = b"action,system,record,to\nassign,perscom,1,5\nassign,perscom,2,\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(csv)))
    assert main(["validate", "-"]) == 2  # row 3 has no "to"
    captured = capsys.readouterr()
    assert "-: 1 valid change(s) (1 perscom), 1 invalid" in captured.out
    assert "row 3:" in captured.err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe{\x00")))
    assert main(["validate", "--plan", "-"]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "patchassign validate: - is UTF-16 text: a JSON Lines plan is UTF-8; save it as UTF-8\n"
    )

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(line)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert main(["validate", str(fifo)]) == 0
    finally:
        writer.join(10)
    assert capsys.readouterr().out.startswith(f"{fifo}: 1 valid change(s)")
    assert main(["validate", str(tmp_path / "nothing.jsonl")]) == 2
    assert "no such file: " in capsys.readouterr().err

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())  # nothing piped: said, not waited for
    assert main(["validate", "-"]) == 2
    assert "- reads the plan from standard input: pipe one in" in capsys.readouterr().err
    assert main(["diff", "-", str(fifo)]) == 2
    assert "- reads a JSON document from standard input: pipe one in" in capsys.readouterr().err


def test_a_plan_written_as_a_json_array_is_told_to_be_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write(
        tmp_path / "plan.json",
        [{"system": "perscom", "record": 1, "action": "assign", "to": "7"}],
    )
    assert main(["validate", str(plan)]) == 2
    assert "a JSON array of changes, not a JSON Patch: a plan is JSON Lines" in (
        capsys.readouterr().err
    )
    assert main(["validate", str(plan), "--plan"]) == 2
    said = capsys.readouterr()
    assert "line 1: Expected `object`, got `array` (a plan is JSON Lines" in said.out + said.err


def test_validate_tells_a_csv_plan_by_its_header_whatever_its_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export.txt"
    export.write_text("system;record;action;to\r\nperscom;1;assign;7\r\n")
    assert main(["validate", str(export)]) == 0
    assert "1 valid change(s) (1 perscom)" in capsys.readouterr().out
    # Excel's "Unicode text": UTF-16 with a byte order mark, tab-separated (it was
    # taken for a JSON Patch: "not valid JSON ... (byte 0)").
    export.write_bytes("system\trecord\taction\tto\r\nperscom\t1\tassign\t7\r\n".encode("utf-16"))
    assert main(["validate", str(export)]) == 0
    assert "1 valid change(s) (1 perscom)" in capsys.readouterr().out


def test_validate_a_patch_and_a_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "p.json", [{"op": "add", "path": "/a", "value": 1}])
    assert main(["validate", str(good)]) == 0
    assert "valid JSON Patch of 1 operation" in capsys.readouterr().out
    bad = write(tmp_path / "bad.json", [{"op": "move", "path": "/a"}])
    assert main(["validate", str(bad)]) == 2
    assert "from" in capsys.readouterr().err
    plan = tmp_path / "plan.jsonl"
    plan.write_text(
        '{"system": "kintone", "record": "1:1", "action": "assign", "to": "eve"}\n'
        "\n"
        '{"system": "kintone", "record": "1:2", "action": "asign", "to": "eve"}\n'
    )
    assert main(["validate", str(plan)]) == 2  # bad input: the same status as `run`
    captured = capsys.readouterr()
    assert "line 3:" in captured.err
    assert "asign" in captured.err
    assert "1 valid change(s) (1 kintone), 1 invalid" in captured.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diff", "nope.json", "nope.json"], "no such file"),
        (["apply", "x.json", "y.json"], "no such file"),
        (["run", "plan.jsonl"], "--config"),
        (
            ["run", "plan.jsonl", "-c", "s.toml", "--progress-interval", "nan"],
            "--progress-interval must be between 0 and 86400 seconds",
        ),
    ],
)
def test_user_errors_are_one_line_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) if "-c" not in args and args[0] == "run" else _nothing():
        code = main(args)
        assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_not_json_input_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = tmp_path / "a.json"
    a.write_text("{not json")
    assert main(["diff", str(a), str(a)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("patchassign diff:")
    assert "not JSON" in err
    assert len(err.strip().splitlines()) == 1


def test_demo_runs_and_verifies() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "patchassign", "demo", "--records", "40", "--progress", "log"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "result: every change applied" in r.stdout
    assert "verified: all 240 records are now with team B, each change applied once" in r.stderr


# -- config -----------------------------------------------------------------------------------


def test_config_builds_adapters_and_limits_with_secrets_from_the_environment(
    tmp_path: Path,
) -> None:
    path = tmp_path / "systems.toml"
    path.write_text(
        """
concurrency = 32
[retry]
attempts = 4
[systems.kintone]
url = "https://acme.kintone.com"
api_token_env = "K_TOKENS"
app = 7
concurrency = 20
[systems.perscom]
url = "https://api.perscom.io"
token_env = "P_TOKEN"
tenant = "42"
"""
    )
    cfg = load_config(path, env={"K_TOKENS": "t1, t2", "P_TOKEN": "perscom-s3cret"})
    assert isinstance(cfg.adapters["kintone"], KintoneAdapter)
    assert isinstance(cfg.adapters["perscom"], PerscomAdapter)
    assert cfg.limits["kintone"] == Limits(concurrency=20)
    assert cfg.limits["perscom"].rate == pytest.approx(1000 / 60)  # the documented default
    assert cfg.concurrency == 32
    assert cfg.retry.attempts == 4
    assert "t1" not in repr(cfg)
    assert "s3cret" not in repr(cfg.adapters)


def test_a_limit_for_a_system_the_configuration_does_not_name_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("P_TOKEN", "x")
    config = tmp_path / "systems.toml"
    config.write_text('[systems.perscom]\nurl = "https://p.example"\ntoken_env = "P_TOKEN"\n')
    plan = tmp_path / "plan.jsonl"
    plan.write_text('{"system": "perscom", "record": 1, "action": "assign", "to": "5"}\n')
    code = main(["run", str(plan), "-c", str(config), "--limit", "persom=2", "--dry-run"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--limit persom=...:" in err
    assert "configures no system 'persom' (systems: perscom)" in err


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("perscom=", "expected SYSTEM=CONCURRENCY[:RATE[:BURST]], e.g. perscom=8:10:5 (whole"),
        ("perscom=a:b", "expected SYSTEM=CONCURRENCY[:RATE[:BURST]]"),
        ("perscom=1:2:3:4", "expected SYSTEM=CONCURRENCY[:RATE[:BURST]]"),
        ("perscom=0", "--limit 'perscom=0': concurrency: Expected `int` >= 1"),
        ("perscom=5:-1", "--limit 'perscom=5:-1': rate: Expected `float` >= 0.0001"),
        ("perscom=5:inf", "--limit 'perscom=5:inf': rate: Expected `float` <= 1000000.0"),
        ("perscom=5:1e-9", "rate: Expected `float` >= 0.0001"),
    ],
)
def test_a_bad_limit_says_the_form_or_the_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, said: str
) -> None:
    plan = tmp_path / "plan.jsonl"
    plan.write_text('{"system": "perscom", "record": 1, "action": "assign", "to": "5"}\n')
    assert main(["run", str(plan), "-c", str(tmp_path / "none.toml"), "--limit", spec]) == 2
    err = capsys.readouterr().err
    assert said in err
    assert "invalid literal" not in err


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "systems"),
        ({"systems": {}}, "no systems configured"),
        ({"systems": {"jira": {"url": "x"}}}, "jira"),
        ({"systems": {"findable": {"url": "https://f", "token_env": "NOPE"}}}, "NOPE is not set"),
        (
            {"systems": {"findable": {"url": "ftp://f", "token_env": "T"}}},
            "absolute http(s) URL",
        ),
        (
            {"systems": {"findable": {"url": "https://f", "token": "abc"}}},
            'unknown field `token` (secrets are read from the environment: token_env = "VARIABLE"',
        ),
        ({"concurrency": 0, "systems": {}}, "concurrency"),
        # A rate past either end is a slip, not a limit (0 turns the system's own off):
        (
            {"systems": {"findable": {"url": "https://f", "token_env": "T", "rate": 1e-9}}},
            "systems.findable: rate: Expected `float` >= 0.0001",
        ),
        (
            {"systems": {"findable": {"url": "https://f", "token_env": "T", "rate": float("inf")}}},
            "systems.findable: rate: Expected `float` <= 1000000.0",
        ),
        # A misplaced or misspelt key is answered with where it goes or what is known.
        (
            {"perscom": {"url": "https://p"}, "systems": {}},
            "unknown field `perscom` (a system's settings go in a [systems.perscom] table)",
        ),
        (
            {"sytems": {}},
            "unknown field `sytems` (known: concurrency, retry, systems, verify_tls)",
        ),
        (
            {"retry": {"attempt": 3}, "systems": {}},
            "retry: Object contains unknown field `attempt` (known: attempts, auth_stop,",
        ),
        (
            {"systems": {"kintone": {"url": "https://k", "ap": 1}}},
            "systems.kintone: Object contains unknown field `ap` (known: api_token_env, app,",
        ),
    ],
)
def test_config_errors_name_the_setting(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data, env={"T": "x"})


# -- journal ----------------------------------------------------------------------------------


def result(index: int, status: str = "applied", **kw: Any) -> Result:
    return msgspec.convert(
        {
            "index": index,
            "id": f"c{index}",
            "system": "kintone",
            "record": f"1:{index}",
            "status": status,
            **kw,
        },
        Result,
    )


def stored(path: Path) -> int:
    """Items with an outcome, as another process sees the file."""
    with sqlite3.connect(path) as db:
        return int(
            db.execute(
                "SELECT count(*) FROM items WHERE status NOT IN ('pending', 'taken')"
            ).fetchone()[0]
        )


def load(j: Journal, n: int) -> None:
    import hashlib

    j.load(
        [
            (i, Assign(system="kintone", record=f"1:{i}", to="eve", id=f"c{i}"), None, None, None)
            for i in range(1, n + 1)
        ],
        plan="plan.jsonl",
        digest=hashlib.sha256(b"abc"),
    )


def test_journal_is_a_queue_that_batches_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path, batch=3, interval=3600) as j:
        load(j, 5)
        with pytest.raises(JournalError, match="holds a plan already"):
            load(j, 5)
        j.start()
        assert j.pending() == {"kintone": 5}
        taken = j.take("kintone", 0, 4)
        assert [i.line for i in taken] == [1, 2, 3, 4]
        assert taken[1].change == Assign(system="kintone", record="1:2", to="eve", id="c2")
        assert j.take("kintone", 4, 10)[0].line == 5
        assert j.take("kintone", 5, 10) == []
        assert j.pending() == {}
        j.record(1, result(0, before={"to": ["ada"]}, after={"to": ["eve"]}))
        j.record(2, result(1, "conflict", error="assigned to zed", current={"to": ["zed"]}))
        assert stored(path) == 0  # buffered, not written yet
        j.record(3, result(2, "failed", error="HTTP 404", elapsed=0.5))
        assert stored(path) == 3  # a batch of 3 went in one transaction
        with pytest.raises(JournalError, match="in use by another run"):
            Journal(path)
        j.record(4, result(3, "cancelled", unconfirmed=True))
        j.finish(interrupted=True)
    # line 5 was taken and never finished: the run was killed with it in flight
    with Journal(path) as j:
        assert j.count() == 5
        assert j.counts() == {
            ("kintone", "applied"): 1,
            ("kintone", "conflict"): 1,
            ("kintone", "failed"): 1,
            ("kintone", "cancelled"): 1,
            ("kintone", "taken"): 1,
        }
        assert j.todo() == 2
        assert j.todo(retry_failed=True) == 3
        j.start(retry_failed=True)
        again = j.take("kintone", 0, 10)
        # in doubt (read before writing): the one a killed run had in flight, the one
        # with an unconfirmed write; not the failure whose write never went out
        assert [(i.line, i.doubt) for i in again] == [(3, False), (4, True), (5, True)]
        j.record(4, result(3, "applied", attempts=2))
        rows = {r.line: r for r in j.rows()}
        assert rows[4].status == "applied"
        assert rows[4].attempts == 2
        assert rows[1].record == "1:1"  # as the plan gave it, not as a result said
        assert rows[1].before == {"to": ["ada"]}
        assert rows[2].current == {"to": ["zed"]}
        assert rows[2].change["id"] == "c2"
        assert [line for line, _ in j.changes(["conflict", "taken"])] == [2, 3, 5]


def test_not_a_journal_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match="not a usable journal"):
        Journal(path)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_is_bars_on_a_terminal_and_timed_lines_otherwise() -> None:
    import asyncio

    tty = _Tty()
    states = {"kintone": "throttled", "perscom": "running"}
    bar = Progress({"kintone": 3, "perscom": 1}, tty, "auto", states=lambda: states)
    assert bar.mode == "bar"
    bar.start()
    for system, status in (("kintone", "applied"), ("kintone", "conflict"), ("perscom", "applied")):
        bar.update(system, status)
    await asyncio.sleep(0.3)
    await bar.aclose()
    text = tty.getvalue()
    assert "kintone" in text
    assert "2/3" in text
    assert "1/1" in text
    assert "throttled, 1 not applied" in text
    assert max(len(line) for line in text.replace("\r", "\n").splitlines()) <= 200
    log = io.StringIO()
    lines = Progress(
        {"kintone": 10}, log, "auto", interval=0.05, states=lambda: {"kintone": "paused"}
    )
    assert lines.mode == "log"
    lines.start()
    await asyncio.sleep(0.2)  # nothing completes: lines still come, on the timer
    assert log.getvalue().count("progress: 0/10 (0%)") >= 2
    lines.update("kintone", "applied")
    await lines.aclose()
    last = log.getvalue().splitlines()[-1]
    assert last.split()[0].startswith("20")  # a timestamp
    assert "1/10 (10%)" in last
    assert "kintone 1/10 paused" in last
    paced = io.StringIO()
    shown = Progress(
        {"kintone": 5, "maxsight": 5, "perscom": 5},
        paced,
        "log",
        states=lambda: {"kintone": "throttled", "maxsight": "running", "perscom": "running"},
        paces=lambda: {"kintone": 48.4, "maxsight": 1234.5},
    )
    line = shown.line()
    assert "kintone 0/5 throttled, paced at 48/s" in line
    assert "maxsight 0/5 paced at 1,234/s" in line
    assert "perscom 0/5 |" in line + " |"
    quiet = io.StringIO()
    none = Progress({"kintone": 1}, quiet, "none")
    none.start()
    none.update("kintone", "applied")
    await none.aclose()
    assert quiet.getvalue() == ""


async def test_progress_asks_what_the_plan_has_left_off_the_event_loop() -> None:
    """With other workers, the counts follow the plan's tally in the journal: a query to
    a database that may be a network away, made in a thread, not on the event loop."""
    import asyncio
    import threading

    asked: list[str] = []

    def left() -> dict[str, int]:
        asked.append(threading.current_thread().name)
        return {"kintone": 4}  # other workers did 6 of 10

    log = io.StringIO()
    shown = Progress({"kintone": 10}, log, "log", interval=0.05, left=left)
    shown.start()
    await asyncio.sleep(0.2)
    await shown.aclose()
    assert asked
    assert asked[0] != threading.main_thread().name
    assert "progress: 6/10 (60%)" in log.getvalue()


async def test_log_lines_are_printed_above_the_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    """`-v` lines go to whatever stderr is when they are written: while the bars are drawn,
    rich's proxy, which prints them above the bars instead of gluing them onto one."""
    import asyncio
    import logging
    import sys

    from patchassign.cli import _Stderr

    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    log = logging.getLogger("patchassign.test-bars")
    log.propagate = False
    log.addHandler(_Stderr())
    log.setLevel(logging.INFO)
    bar = Progress({"kintone": 2}, tty, "bar")
    bar.start()
    try:
        assert sys.stderr is not tty  # redirected while the bars are live
        log.info("retrying kintone 1:1 after 429")
        bar.update("kintone", "applied")
        await asyncio.sleep(0.3)
    finally:
        await bar.aclose()
        log.handlers.clear()
    assert sys.stderr is tty
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", tty.getvalue())
    # the log line is a line of its own, before the last drawing of the bars
    lines = text.replace("\r", "\n").split("\n")
    assert any(line.strip() == "retrying kintone 1:1 after 429" for line in lines), lines
    assert text.rindex("retrying kintone") < text.rindex("1/2")


ACME = """
from patchassign.systems import FindableAdapter


class Acme(FindableAdapter):
    system = "acme"

    def __init__(self, url, token, team="a"):
        super().__init__(url, token)
        self.team = team
"""


def test_a_custom_adapter_from_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acme_mod.py").write_text(ACME)
    monkeypatch.syspath_prepend(str(tmp_path))
    table = {"adapter": "acme_mod:Acme", "url": "https://acme.example", "token_env": "A"}
    config = parse_config(
        {"systems": {"acme": {**table, "team": "b", "concurrency": 3}}}, env={"A": "acme-tok"}
    )
    acme = config.adapters["acme"]
    assert type(acme).__name__ == "Acme"
    assert acme.team == "b"  # type: ignore[attr-defined]
    assert config.limits["acme"].concurrency == 3
    assert config.scrub("x acme-tok y") == "x ******** y"
    bad = [
        ({"url": "https://a.example"}, "not a built-in system"),
        ({**table, "adapter": "nope_mod:Acme"}, "cannot be imported"),
        ({**table, "adapter": "acme_mod:Missing"}, "cannot be imported"),
        ({**table, "colour": 1}, "unexpected keyword"),
    ]
    for t, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_config({"systems": {"acme": t}}, env={"A": "x"})
    with pytest.raises(ConfigError, match="system = 'other'"):
        parse_config({"systems": {"other": table}}, env={"A": "x"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status"], "patchassign status: error: the journal is required"),
        (["undo", "a.journal", "--journal", "b.journal"], "two journals given"),
    ],
)
def test_the_journal_is_given_once(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--join"], "--join needs --journal postgresql://"),
        (["run", "--join", "--journal", "x.journal"], "--join needs --journal postgresql://"),
        (["run"], "give the plan to run"),
        (["run", "p.jsonl", "--lease", "0.1"], "--lease must be between"),
        (
            ["run", "--join", "--journal", "postgresql://u@h/d", "--dry-run"],
            "--dry-run works on a plan",
        ),
        (["status", "nope.journal"], "no such journal: nope.journal"),
        (["status", "--journal", "nope.journal"], "no such journal: nope.journal"),
        (["status", "postgresql://u:pw@127.0.0.1:1/d"], "cannot connect"),
        (["leftovers", "postgresql://u@127.0.0.1:1/d?schema=x-y"], "plain name"),
    ],
)
def test_worker_and_status_usage_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path / "systems.toml", None)
    config.write_text("")
    extra = ["-c", str(config)] if args[0] == "run" else []
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert "pw@" not in err
