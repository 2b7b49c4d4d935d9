"""Timing, tables, and finding a Python >= 3.12 for the fastjsonpatch column.

Every figure in a table comes from one process run, so the ratios compare like with like
on a noisy machine: each cell is the median of several batches, each batch long enough
(>= 0.1 s) to swamp timer noise.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV312 = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "patchassign-bench" / "py312"
)
_REEXEC = "PATCHASSIGN_BENCH_CHILD"


def timeit(fn: Callable[[], object], *, min_batch: float = 0.1, repeat: int = 5) -> float:
    """Median seconds per call of ``fn``."""
    fn()  # warm up
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_batch:
            break
        n *= 2 if dt == 0 else max(2, min(10, int(min_batch / dt) + 1))
    samples = [dt / n]
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds:,.2f} s"


def table(
    title: str, rows: list[tuple[str, dict[str, float | None]]], columns: list[str], ours: str
) -> str:
    """A Markdown table: time per column, and each peer's time as a multiple of ours."""
    peers = [c for c in columns if c != ours]
    head = ["scenario", *columns, *(f"{p} / {ours}" for p in peers)]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cells in rows:
        base = cells.get(ours)
        out = [name]
        out += [fmt_time(v) if (v := cells.get(c)) is not None else "n/a" for c in columns]
        for p in peers:
            v = cells.get(p)
            out.append(f"{v / base:,.1f}x" if v is not None and base else "n/a")
        lines.append("| " + " | ".join(out) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, {platform.system()}"


def _python312() -> str | None:
    """A working interpreter >= 3.12 (pyenv's shims may exist without one behind them)."""
    candidates = [os.environ.get("PATCHASSIGN_BENCH_PYTHON", "")]
    for version in ("3.12", "3.13"):
        candidates += sorted(
            glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}*/bin/python3"))
        )
        candidates.append(shutil.which(f"python{version}") or "")
    for python in filter(None, candidates):
        probe = subprocess.run(
            [python, "-c", "import sys; print(sys.version_info >= (3, 12))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return python
    return None


def reexec_with_fastjsonpatch(module: str) -> bool:
    """Run ``module`` again under a Python >= 3.12 that has fastjsonpatch, if possible.

    Returns True when the child ran (its output is ours); False when this process
    should run the benchmark itself, without the fastjsonpatch column.
    """
    if os.environ.get(_REEXEC) or sys.version_info >= (3, 12):
        return False
    python = _python312()
    if python is None:
        print(
            "note: no Python >= 3.12 found; the fastjsonpatch column is skipped.", file=sys.stderr
        )
        return False
    vpy = VENV312 / "bin" / "python"
    if not vpy.exists():
        print(f"setting up {VENV312} for the fastjsonpatch column (once)...", file=sys.stderr)
        subprocess.run([python, "-m", "venv", str(VENV312)], check=True)
    pip = subprocess.run(
        [
            str(vpy),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "fastjsonpatch",
            "jsonpatch",
            "json-merge-patch",
            "msgspec",
            "-e",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if pip.returncode != 0:
        print(pip.stderr, file=sys.stderr)
        print("note: could not install fastjsonpatch; its column is skipped.", file=sys.stderr)
        return False
    env = {**os.environ, _REEXEC: "1"}
    subprocess.run([str(vpy), "-m", module, *sys.argv[1:]], check=True, cwd=ROOT, env=env)
    return True


def sandbox_process(per_system: int, config: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``patchassign sandbox`` in its own process with ``per_system`` demo records each,
    and a systems.toml for it written to ``config`` (``--write-config``): the process and
    the environment that holds its tokens (the ``export`` lines it prints to stderr, all
    written before its URLs come on stdout)."""
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "patchassign",
            "sandbox",
            "--json",
            "--demo",
            str(per_system),
            "--write-config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    assert server.stderr is not None
    "".join(iter(server.stdout.readline, "}\n"))  # serving: the URLs, as JSON
    os.set_blocking(server.stderr.fileno(), False)
    said = os.read(server.stderr.fileno(), 1 << 16).decode()
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in said.splitlines()
        if line.startswith("export ")
    )
    return server, env
