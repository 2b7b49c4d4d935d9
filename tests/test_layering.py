"""The core, the change model, plans and the adapters never import aiohttp (no I/O)."""

from __future__ import annotations

import subprocess
import sys

CORE = [
    "patchassign",
    "patchassign.pointer",
    "patchassign.patch",
    "patchassign.merge",
    "patchassign.diff",
    "patchassign.errors",
    # adapters and plans are pure too: bytes in, bytes out
    "patchassign.changes",
    "patchassign.plan",
    "patchassign.systems",
]


def test_core_imports_with_aiohttp_blocked() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'aiohttp' or name.startswith('aiohttp.'):\n"
        "            raise ImportError('the core must not import ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "assert 'aiohttp' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_dispatcher_knows_no_system_by_name() -> None:
    """DESIGN: dispatch.py drives adapters through the protocol only; per-system
    knowledge (limits included) lives in the adapters. Docstrings may give examples."""
    import ast
    from pathlib import Path

    import patchassign.dispatch

    tree = ast.parse(Path(patchassign.dispatch.__file__).read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    names = {"perscom", "maxsight", "kintone", "superoffice", "findable"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            assert not any(n in node.value.lower() for n in names), node.value
        if isinstance(node, ast.Name | ast.Attribute):
            text = node.id if isinstance(node, ast.Name) else node.attr
            assert not any(n in text.lower() for n in names), text


def test_adapters_carry_their_systems_documented_limits() -> None:
    from patchassign.dispatch import Dispatcher, Limits
    from patchassign.systems import KintoneAdapter, MaxsightAdapter, PerscomAdapter

    k = KintoneAdapter("https://k.example", api_token="t")
    p = PerscomAdapter("https://p.example", "t")
    m = MaxsightAdapter("https://m.example", "k")
    d = Dispatcher([k, p, m], limits={"maxsight": Limits(concurrency=3)})
    assert d.limits["kintone"].concurrency == 50  # Kintone blocks a domain past 100
    assert d.limits["perscom"].rate is not None
    assert abs(d.limits["perscom"].rate - 1000 / 60) < 1e-9  # 1,000 a minute
    assert d.limits["maxsight"] == Limits(concurrency=3)  # the caller's word wins


def test_psycopg_is_needed_only_for_a_postgresql_journal() -> None:
    """PostgreSQL is an extra: without psycopg, everything else (SQLite journals
    included) works, and a postgresql:// journal is a clear error."""
    code = (
        "import sys, tempfile, pathlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'psycopg' or name.startswith('psycopg'):\n"
        "            raise ImportError('no ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import patchassign, patchassign.cli, patchassign.bulk\n"
        "from patchassign.journal import open_journal, JournalError\n"
        "with open_journal(pathlib.Path(tempfile.mkdtemp()) / 'j') as j:\n"
        "    assert not j.loaded\n"
        "try:\n"
        "    open_journal('postgresql://u@127.0.0.1:1/db')\n"
        "except JournalError as e:\n"
        "    assert \"pip install 'patchassign[postgres]'\" in str(e), e\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_only_the_journal_speaks_sql() -> None:
    """DESIGN: the journal owns all SQL (the sandbox's throwaway server only creates
    databases)."""
    from pathlib import Path

    import patchassign

    root = Path(patchassign.__file__).parent
    allowed = {root / "sandbox" / "postgres.py"}
    for path in root.rglob("*.py"):
        if "journal" in path.parts or path in allowed:
            continue
        text = path.read_text()
        for module in ("sqlite3", "psycopg"):
            assert f"import {module}" not in text, (path, module)
