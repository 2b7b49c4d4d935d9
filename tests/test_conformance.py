"""The public JSON Patch conformance suite (json-patch-tests 1.1.0), data-driven."""

from __future__ import annotations

import json
from typing import Any

import pytest

from patchassign import PatchError, apply_patch
from tests.helpers import CONFORMANCE, same_json, snapshot


def _cases() -> list[Any]:
    if not CONFORMANCE.is_dir():
        return [
            pytest.param(
                None, marks=pytest.mark.skip(reason=f"conformance suite not found at {CONFORMANCE}")
            )
        ]
    params = []
    for name in ("tests.json", "spec_tests.json"):
        for n, case in enumerate(json.loads((CONFORMANCE / name).read_text())):
            if "patch" not in case:
                continue  # a comment-only record
            marks = (
                [pytest.mark.skip(reason="disabled in the suite")] if case.get("disabled") else []
            )
            label = f"{name}:{n}:{case.get('comment', '')[:40]}"
            params.append(pytest.param(case, id=label, marks=marks))
    return params


@pytest.mark.parametrize("case", _cases())
def test_conformance(case: dict[str, Any]) -> None:
    """Each suite record applies to its expected document or fails with a PatchError."""
    doc = case["doc"]
    before = snapshot(doc)
    if "error" in case:
        with pytest.raises(PatchError):
            apply_patch(doc, case["patch"])
        with pytest.raises(PatchError):
            apply_patch(doc, json.dumps(case["patch"]).encode())
    else:
        result = apply_patch(doc, case["patch"])
        assert same_json(result, case.get("expected", doc))
        # The same patch decoded from JSON bytes gives the same result.
        assert same_json(apply_patch(doc, json.dumps(case["patch"]).encode()), result)
    assert same_json(doc, before), "the input document was mutated"


@pytest.mark.parametrize("case", _cases())
def test_conformance_in_place(case: dict[str, Any]) -> None:
    """In place, a failing patch leaves the document exactly as it was."""
    doc = snapshot(case["doc"])
    before = snapshot(doc)
    if "error" in case:
        with pytest.raises(PatchError):
            apply_patch(doc, case["patch"], in_place=True)
        assert same_json(doc, before)
    else:
        assert same_json(
            apply_patch(doc, case["patch"], in_place=True), case.get("expected", before)
        )
