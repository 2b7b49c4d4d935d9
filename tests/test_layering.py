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
