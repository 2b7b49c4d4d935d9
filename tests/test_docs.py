"""The docs cannot rot: every Python example runs, every configuration parses, every plan
line is accepted by its system's adapter, and the tutorial works as written."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import msgspec
import pytest

from patchassign.changes import decode_change
from patchassign.config import parse_config
from patchassign.journal import Outcome
from patchassign.systems import ADAPTERS, FindableAdapter

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])


def blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(), re.S | re.M)


def ids(p: Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=ids)
def test_python_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for n, code in enumerate(blocks(page, "python")):
        compiled = compile(code, f"{page.name}[{n}]", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if compiled.co_flags & 0x80:  # CO_COROUTINE: the example uses top-level await
            asyncio.run(eval(compiled, namespace))
        else:
            exec(compiled, namespace)


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "toml")], ids=ids)
def test_configuration_examples_parse(page: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the adapter how-to's configuration names its example module
    acme = types.ModuleType("acme_adapter")

    class AcmeAdapter(FindableAdapter):
        system = "acme"

    acme.AcmeAdapter = AcmeAdapter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "acme_adapter", acme)
    env = _AnyEnv()
    for code in blocks(page, "toml"):
        config = parse_config(tomllib.loads(code), env=env, source=page.name)
        assert config.adapters


class _AnyEnv(dict[str, str]):
    """Every environment variable is set (to a placeholder token)."""

    def get(self, key: str, default: Any = None) -> str:
        return "a-token"

    def __missing__(self, key: str) -> str:
        return "a-token"


def _adapter(system: str) -> Any:
    creds: dict[str, dict[str, Any]] = {
        "kintone": {"api_token": "t"},
        "superoffice": {"token": "t"},
        "maxsight": {"api_key": "k", "assigned_by": "me"},
    }
    return ADAPTERS[system]("https://x.example", **creds.get(system, {"token": "t"}))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "json")], ids=ids)
def test_plan_lines_in_the_docs_are_valid(page: Path) -> None:
    checked = 0
    for code in blocks(page, "json"):
        for line in code.splitlines():
            if line.startswith('{"line"'):  # a results line: the journal's row
                row = msgspec.json.decode(line, type=Outcome)
                decode_change(msgspec.json.encode(row.change))
                continue
            if '"system"' not in line or '"action"' not in line:
                continue
            change = decode_change(line)
            _adapter(change.system).check(change)
            checked += 1
    if page.parent.name == "systems":
        assert checked >= 1


def test_the_tutorial_works_as_written(tmp_path: Path) -> None:
    """Sections 2-5 of the tutorial, against a real `patchassign sandbox`."""
    text = (ROOT / "docs" / "tutorial.md").read_text()
    plan = re.search(r"Save this as `plan.jsonl`:\n\n```json\n(.*?)```", text, re.S)
    assert plan is not None
    (tmp_path / "plan.jsonl").write_text(plan.group(1))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "patchassign",
            "sandbox",
            "--demo",
            "10",
            "--write-config",
            "systems.toml",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        env = dict(os.environ)
        while len([k for k in env if k.startswith("DEMO_")]) < 5:
            line = server.stderr.readline()
            assert line, "the sandbox stopped"
            if line.startswith("export "):
                key, _, value = line[len("export ") :].strip().partition("=")
                env[key] = value

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "patchassign", *args],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

        r = cli("validate", "plan.jsonl", "--config", "systems.toml")
        assert r.returncode == 0, r.stderr
        r = cli("run", "plan.jsonl", "--config", "systems.toml", "--dry-run")
        assert r.returncode == 1, r.stderr  # line 5 would be a conflict
        assert "line 5 kintone 1:5: conflict (assigned to ['bob'], expected ['zed'])" in r.stdout
        assert '"assignees":["eve"]' in r.stdout
        r = cli("run", "plan.jsonl", "--config", "systems.toml", "--results", "results.jsonl")
        assert r.returncode == 1, r.stderr
        results = (tmp_path / "results.jsonl").read_text()
        assert results.count('"status":"applied"') == 4
        assert '"current":{"to":["bob"]}' in results  # who holds line 5's record, as data
        # what is left, and the way back (section 6)
        r = cli("leftovers", "plan.jsonl.journal")
        assert r.returncode == 0, r.stderr
        assert [json.loads(line)["record"] for line in r.stdout.splitlines()] == ["1:5"]
        r = cli("undo", "plan.jsonl.journal", "-o", "undo.jsonl")
        assert r.returncode == 0, r.stderr
        assert "1 not undoable: a delegation cannot be undone" in r.stderr
        r = cli("run", "undo.jsonl", "--config", "systems.toml")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "result: every change applied" in r.stdout
    finally:
        server.terminate()
        server.communicate(timeout=10)  # also closes the pipes
