"""Coverage-guided fuzzing with atheris (libFuzzer) of what reads untrusted input.

Targets: ``patch`` (JSON Patch text, decoded and applied to a few documents, also
case-insensitively), ``plan`` (plan lines, decoded and put through each adapter's check
and prepare), ``pointer`` (pointer text, parsed and resolved). Anything but a correct
result or one of patchassign's typed errors is a crash, and libFuzzer saves the input.

Run (atheris is not a dependency: ``pip install atheris`` first):

    python -m benchmarks.fuzz patch -max_total_time=60
    python -m benchmarks.fuzz plan -max_total_time=60
    python -m benchmarks.fuzz pointer -max_total_time=60

The msgspec decoder is C and not instrumented, so the fuzzer cannot learn JSON from
coverage alone: unless a corpus directory is given, a seed corpus is written to
``./fuzz-<target>/`` (the conformance suite's patches, the plan lines of the docs) with a
dictionary of JSON Patch and plan tokens.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["patchassign"]):
    import patchassign as pa
    from patchassign.changes import decode_change
    from patchassign.errors import InvalidChange
    from patchassign.systems import ADAPTERS, Current, HttpResponse

DOCS: list[Any] = [{}, [], {"a": {"b": [1, 2, {"c": None}]}, "A": 1}, None, "x"]
CREDS: dict[str, dict[str, Any]] = {
    "kintone": {"api_token": "t"},
    "superoffice": {"token": "t"},
    "maxsight": {"api_key": "k", "assigned_by": "me"},
}
ADAPTER = {
    n: cls("https://x.example", **CREDS.get(n, {"token": "t"})) for n, cls in ADAPTERS.items()
}
RECORDS: list[Any] = [{}, {"assigneeEmail": "a@b.c", "status": "pending"}, {"x": [1]}]
TYPED = (pa.PatchError, InvalidChange)


def fuzz_patch(data: bytes) -> None:
    try:
        patch = pa.JsonPatch.from_json(data, case_insensitive=True)
    except pa.InvalidPatch:
        return
    for doc in DOCS:
        for ci in (False, True):
            try:
                out = pa.apply_patch(doc, patch, case_insensitive=ci)
            except TYPED:
                continue
            pa.make_patch(doc, out)


def fuzz_plan(data: bytes) -> None:
    try:
        change = decode_change(data)
    except InvalidChange:
        return
    adapter = ADAPTER.get(change.system)
    if adapter is None:
        return
    try:
        adapter.check(change)
    except InvalidChange:
        return
    for record in RECORDS:
        adapter.prepare(change, Current(record, "v1"))
        adapter.outcome(change, HttpResponse(200, {}, data[:64]))
        adapter.outcome(change, HttpResponse(409, {}, data[:64]))


def fuzz_pointer(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(64)
    for ci in (False, True):
        try:
            pointer = pa.Pointer.parse(text, case_insensitive=ci)
        except pa.InvalidPointer:
            continue
        for doc in DOCS:
            with contextlib.suppress(pa.PatchConflict):
                pointer.resolve(doc)


TARGETS = {"patch": fuzz_patch, "plan": fuzz_plan, "pointer": fuzz_pointer}
TOKENS = [
    '"op"',
    '"add"',
    '"remove"',
    '"replace"',
    '"move"',
    '"copy"',
    '"test"',
    '"path"',
    '"from"',
    '"value"',
    '"/a"',
    '"/-"',
    '"~0"',
    '"~1"',
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    "null",
    "true",
    "false",
    "1e999",
    "-0",
    '"system"',
    '"record"',
    '"action"',
    '"assign"',
    '"unassign"',
    '"delegate"',
    '"merge"',
    '"patch"',
    '"set"',
    '"state"',
    '"to"',
    '"expect"',
    '"guard"',
    '"kintone"',
    '"perscom"',
    '"maxsight"',
    '"superoffice"',
    '"findable"',
    '"1:1"',
    '"to_type"',
    '"team"',
]


def _seeds(target: str) -> list[str]:
    """A seed corpus directory and a dictionary for ``target`` (written once)."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    folder = Path(f"fuzz-{target}")
    folder.mkdir(exist_ok=True)
    n = 0
    if target == "patch":
        for f in sorted((root.parent / "shared" / "conformance").glob("*.json")):
            tests = json.loads(f.read_text())
            for t in tests if isinstance(tests, list) else []:
                if isinstance(t, dict) and "patch" in t:
                    (folder / f"seed-{n}").write_text(json.dumps(t["patch"]))
                    n += 1
    elif target == "plan":
        for f in sorted((root / "docs").rglob("*.md")):
            for line in f.read_text().splitlines():
                if line.startswith('{"system"'):
                    (folder / f"seed-{n}").write_text(line)
                    n += 1
    words = Path(f"fuzz-{target}.dict")
    words.write_text("".join(json.dumps(t) + "\n" for t in TOKENS))
    return [str(folder), f"-dict={words}"]


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m benchmarks.fuzz {{{'|'.join(TARGETS)}}} [libFuzzer options]")
    target = TARGETS[sys.argv[1]]
    options = sys.argv[2:]
    if not any(not o.startswith("-") for o in options):  # no corpus given
        options = [*_seeds(sys.argv[1]), *options]
    atheris.Setup([sys.argv[0], *options], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
