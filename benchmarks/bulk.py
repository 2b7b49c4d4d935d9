"""``patchassign run`` on plans of growing length: time and peak memory of the run process.

For each size, the sandbox (``patchassign sandbox``, a separate process) is seeded with
``size / 6`` records per system (six systems), the demo plan that moves all of them to team B is written
to a file, and ``patchassign run`` runs it in a fresh process (journal, results file,
report, everything as a user runs it), which reports its own peak resident memory.

Run: python -m benchmarks.bulk [--sizes 10000,100000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from benchmarks._harness import machine, sandbox_process


def _child(args: list[str]) -> None:
    """Run the CLI in this process, then print its peak RSS as the last line."""
    from patchassign.cli import main

    code = main(args)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"code": code, "maxrss_mib": rss}))


def one(size: int, concurrency: int, folder: Path) -> dict[str, float | int]:
    from patchassign.sandbox import SYSTEMS, demo_plan

    per_system = size // len(SYSTEMS)  # the plan has ``size`` lines
    server, env = sandbox_process(per_system, folder / "systems.toml")
    try:
        plan = folder / f"plan-{size}.jsonl"
        with open(plan, "wb") as f:
            for change in demo_plan(per_system):
                f.write(msgspec.json.encode(change) + b"\n")
        t = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.bulk",
                "--child",
                "run",
                str(plan),
                "-c",
                str(folder / "systems.toml"),
                "--progress",
                "none",
                "--concurrency",
                str(concurrency),
                "--results",
                str(folder / "results.jsonl"),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=False,
        )
        elapsed = time.perf_counter() - t
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        if got["code"] != 0:
            print(proc.stderr, file=sys.stderr)
        lines = len((folder / "results.jsonl").read_bytes().splitlines())
        load = re.search(r"loaded in ([\d.,]+) s", proc.stdout)
        rate = re.search(r"changes in [\d.,]+ s \(([\d,]+)/s\)", proc.stdout)
        return {
            "load": float(load.group(1).replace(",", "")) if load else float("nan"),
            "rate": float(rate.group(1).replace(",", "")) if rate else float("nan"),
            "size": size,
            "code": got["code"],
            "maxrss": got["maxrss_mib"],
            "elapsed": elapsed,
            "results": lines,
            "journal_mib": (plan.with_name(plan.name + ".journal").stat().st_size) / 2**20,
        }
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description="Bulk run time and memory by plan length.")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    print(machine())
    print(
        "\n| plan lines | exit | peak RSS of `patchassign run` | load into the journal "
        "| wall time (incl. start-up) | changes/s (run) | results lines | journal size |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as d:
            r = one(size, args.concurrency, Path(d))
        print(
            f"| {r['size']:,} | {r['code']} | {r['maxrss']:,.1f} MiB | {r['load']:,.1f} s "
            f"| {r['elapsed']:,.1f} s | {r['rate']:,.0f} | {r['results']:,} "
            f"| {r['journal_mib']:,.1f} MiB |",
            flush=True,
        )


if __name__ == "__main__":
    main()
