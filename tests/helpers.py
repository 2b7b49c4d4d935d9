"""Test helpers: JSON-typed comparison independent of the code under test, strategies."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
#: The vendors' own API descriptions (PERSCOM's OpenAPI file), beside the repository.
VENDOR_SPECS = Path(__file__).resolve().parents[2] / "shared" / "vendor-specs"
#: The vendors' own pages for the endpoints we write to (the truth our fakes follow).
SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"


def canon(value: Any) -> Any:
    """A hashable form in which equal JSON values, and only those, compare equal.

    Booleans are tagged apart from numbers (Python's ``True == 1`` is not JSON's), numbers
    compare by value (``1 == 1.0``), objects regardless of key order.
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, str):
        return ("str", value)
    if value is None:
        return ("null",)
    if isinstance(value, list | tuple):
        return ("array", tuple(canon(v) for v in value))
    if isinstance(value, dict):
        return ("object", frozenset((k, canon(v)) for k, v in value.items()))
    raise TypeError(f"not JSON: {value!r}")


def same_json(a: Any, b: Any) -> bool:
    return bool(canon(a) == canon(b))


def snapshot(value: Any) -> Any:
    """A deep copy to compare against later, to prove a value was not mutated."""
    return copy.deepcopy(value)


# Keys that exercise escaping and the array/"-" rules, plus arbitrary unicode.
_tricky_keys = st.sampled_from(
    ["a", "b", "c", "", "~", "/", "~1", "~0", "a/b", "m~n", "0", "1", "-", "é", "Ω"]
)
json_keys = st.one_of(_tricky_keys, st.text(max_size=4))
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=3),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 1, 0.0, 1.0, True, False, "1", ""]),
    st.text(max_size=6),
)


def json_values(
    keys: st.SearchStrategy[str] = json_keys, max_leaves: int = 25
) -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=6),
            st.dictionaries(keys, children, max_size=6),
        ),
        max_leaves=max_leaves,
    )


def json_pairs(keys: st.SearchStrategy[str] = json_keys) -> st.SearchStrategy[tuple[Any, Any]]:
    """Two documents, often related (b an edit of a), sometimes unrelated."""
    docs = json_values(keys)
    return st.one_of(
        st.tuples(docs, docs),
        docs.flatmap(lambda a: st.tuples(st.just(a), _mutated(a, keys))),
    )


def _mutated(a: Any, keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """Strategy for a small random edit of ``a``, to get realistic diffs."""
    if isinstance(a, dict) and a:
        return st.tuples(
            st.sampled_from(sorted(a)), st.integers(0, 2), json_values(keys, 5), keys
        ).flatmap(
            lambda t: (
                _mutated(a[t[0]], keys).map(lambda v: {**a, t[0]: v})
                if t[1] == 0
                else st.just(
                    {k: v for k, v in a.items() if k != t[0]} | ({t[3]: t[2]} if t[1] == 2 else {})
                )
            )
        )
    if isinstance(a, list) and a:
        return st.tuples(
            st.integers(0, len(a) - 1), st.integers(0, 2), json_values(keys, 5)
        ).flatmap(
            lambda t: (
                _mutated(a[t[0]], keys).map(lambda v: [*a[: t[0]], v, *a[t[0] + 1 :]])
                if t[1] == 0
                else st.just(
                    [*a[: t[0]], *a[t[0] + 1 :]] if t[1] == 1 else [*a[: t[0]], t[2], *a[t[0] :]]
                )
            )
        )
    return json_values(keys, 5)
