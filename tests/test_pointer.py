from __future__ import annotations

from typing import Any

import pytest

from patchassign import InvalidPatch, InvalidPointer, PatchConflict, Pointer
from patchassign.pointer import escape, unescape

RFC_DOC: dict[str, Any] = {
    "foo": ["bar", "baz"],
    "": 0,
    "a/b": 1,
    "c%d": 2,
    "e^f": 3,
    "g|h": 4,
    "i\\j": 5,
    'k"l': 6,
    " ": 7,
    "m~n": 8,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", RFC_DOC),
        ("/foo", ["bar", "baz"]),
        ("/foo/0", "bar"),
        ("/", 0),
        ("/a~1b", 1),
        ("/c%d", 2),
        ("/e^f", 3),
        ("/g|h", 4),
        ("/i\\j", 5),
        ('/k"l', 6),
        ("/ ", 7),
        ("/m~0n", 8),
    ],
)
def test_rfc6901_section5_examples(text: str, expected: Any) -> None:
    """Every example of RFC 6901 section 5 resolves to the value the RFC gives."""
    assert Pointer.parse(text).resolve(RFC_DOC) == expected


@pytest.mark.parametrize("tokens", [(), ("a",), ("a/b", "~"), ("~1",), ("", ""), ("~01/",)])
def test_format_then_parse_round_trips(tokens: tuple[str, ...]) -> None:
    p = Pointer(tokens)
    assert Pointer.parse(str(p)).tokens == tokens
    assert Pointer.parse(str(p)) == p


def test_escape_order_is_tilde_first() -> None:
    """``~1`` decodes to ``/`` before ``~0`` to ``~``: ``~01`` is ``~1``, not ``/``."""
    assert unescape("~01") == "~1"
    assert escape("~1") == "~01"
    assert escape("a/b~c") == "a~1b~0c"


@pytest.mark.parametrize("text", ["/a~", "/a~2", "/~a", "a~"])
def test_bad_escape_is_invalid_pointer(text: str) -> None:
    with pytest.raises(InvalidPointer) as info:
        Pointer.parse(text, case_insensitive=True)
    assert info.value.pointer == text
    assert isinstance(info.value, InvalidPatch)
    assert isinstance(info.value, ValueError)


def test_strict_mode_requires_leading_slash() -> None:
    with pytest.raises(InvalidPointer, match="start with '/'"):
        Pointer.parse("foo")


def test_non_string_pointer_is_invalid() -> None:
    with pytest.raises(InvalidPointer):
        Pointer.parse(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("/foo/01", "bad-index"),
        ("/foo/1e0", "bad-index"),
        ("/foo/-1", "bad-index"),
        ("/foo/ 1", "bad-index"),
        ("/foo/\u0661", "bad-index"),  # ARABIC-INDIC DIGIT ONE: a digit, not an index
        ("/foo/2", "bad-index"),
        ("/foo/-", "bad-index"),
        ("/nope", "missing"),
        ("/foo/0/x", "not-a-container"),
    ],
)
def test_unresolvable_pointers_say_why(text: str, reason: str) -> None:
    with pytest.raises(PatchConflict) as info:
        Pointer.parse(text).resolve(RFC_DOC)
    assert info.value.reason == reason
    assert not Pointer.parse(text).exists(RFC_DOC)


@pytest.mark.parametrize(
    "text", ["/department", "department", "Department", "/DEPARTMENT", "dEpArTmEnT"]
)
def test_case_insensitive_names_the_existing_key(text: str) -> None:
    doc = {"Department": "Sales", "id": 1}
    assert Pointer.parse(text, case_insensitive=True).resolve(doc) == "Sales"


def test_case_insensitive_prefers_the_exact_key() -> None:
    doc = {"Name": 1, "name": 2}
    assert Pointer.parse("name", case_insensitive=True).resolve(doc) == 2
    assert Pointer.parse("Name", case_insensitive=True).resolve(doc) == 1


def test_case_insensitive_ambiguity_names_both_keys() -> None:
    doc = {"Name": 1, "NAME": 2}
    with pytest.raises(PatchConflict, match="'NAME' and 'Name'") as info:
        Pointer.parse("name", case_insensitive=True).resolve(doc)
    assert info.value.reason == "ambiguous"
    with pytest.raises(PatchConflict):
        Pointer.parse("name", case_insensitive=True).exists(doc)


def test_case_insensitive_uses_casefold() -> None:
    assert Pointer.parse("STRASSE", case_insensitive=True).resolve({"straße": 1}) == 1


def test_strict_mode_is_case_sensitive() -> None:
    with pytest.raises(PatchConflict):
        Pointer.parse("/department").resolve({"Department": 1})


def test_pointer_value_semantics() -> None:
    p = Pointer.parse("/a/b")
    assert p / "c" / 0 == Pointer(("a", "b", "c", "0"))
    assert p.parent == Pointer(("a",))
    assert Pointer().parent == Pointer()
    assert len(p) == 2
    assert list(p) == ["a", "b"]
    assert p.is_prefix_of(Pointer.parse("/a/b/c"))
    assert not p.is_prefix_of(Pointer.parse("/a"))
    assert hash(p) == hash(Pointer.parse("/a/b"))
    assert p != Pointer.parse("/a/b", case_insensitive=True)
    assert repr(Pointer.parse("x", case_insensitive=True)) == "Pointer('/x', case_insensitive=True)"
    with pytest.raises(TypeError):
        Pointer([1])  # type: ignore[list-item]


def test_a_pointer_built_from_text_is_parsed_not_split_into_characters() -> None:
    # Pointer("/a/b") was the tokens "/", "a", "/", "b" (str() "/~1/a/~1/b"), although
    # its repr is written Pointer('/a/b').
    p = Pointer("/a/b")
    assert p == Pointer.parse("/a/b") == Pointer(["a", "b"])
    assert p.resolve({"a": {"b": 1}}) == 1
    assert eval(repr(p), {"Pointer": Pointer}) == p  # the repr round-trips
    assert Pointer("A/b", case_insensitive=True).tokens == ("A", "b")
    with pytest.raises(InvalidPointer, match="must be empty or start with '/'"):
        Pointer("a/b")
