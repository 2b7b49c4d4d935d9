"""JSON Pointer (RFC 6901): parse, format, resolve; optional case-insensitive keys.

Strict mode (the default) is exactly RFC 6901. Case-insensitive mode, for servers such as
SuperOffice that accept ``Department`` for ``/department``:

* the leading ``/`` is optional (``"department"`` means ``"/department"``); ``""``
  still names the whole document, so a top-level empty key is written ``"/"``;
* an object key matches exactly first, else case-insensitively (``str.casefold``); when
  two keys match only case-insensitively the lookup fails naming both (no silent pick).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, Final

from patchassign._json import type_name
from patchassign.errors import InvalidPointer, NotRepresentable, PatchConflict

__all__ = ["Pointer", "escape", "unescape"]

_BAD_ESCAPE: Final = re.compile(r"~(?![01])")
_INDEX: Final = re.compile(r"0|[1-9][0-9]*")


def escape(token: str) -> str:
    """Escape one reference token: ``~`` becomes ``~0`` and ``/`` becomes ``~1``."""
    if "~" in token:
        token = token.replace("~", "~0")
    if "/" in token:
        token = token.replace("/", "~1")
    return token


def unescape(token: str) -> str:
    """Unescape one reference token (``~1`` → ``/``, then ``~0`` → ``~``).

    Raises:
        InvalidPointer: ``~`` is followed by anything but ``0`` or ``1``.
    """
    if "~" not in token:
        return token
    if _BAD_ESCAPE.search(token):
        raise InvalidPointer("'~' must be followed by '0' or '1'", pointer=token)
    return token.replace("~1", "/").replace("~0", "~")


def parse_tokens(text: str, *, case_insensitive: bool = False) -> tuple[str, ...]:
    """Split pointer text into unescaped reference tokens.

    Raises:
        InvalidPointer: The text is not a valid pointer in the chosen mode.
    """
    if not text:
        return ()
    if text[0] == "/":
        tokens = text[1:].split("/")
    elif case_insensitive:
        tokens = text.split("/")
    else:
        raise InvalidPointer("a JSON Pointer must be empty or start with '/'", pointer=text)
    if "~" in text:
        if _BAD_ESCAPE.search(text):
            raise InvalidPointer("'~' must be followed by '0' or '1'", pointer=text)
        tokens = [t.replace("~1", "/").replace("~0", "~") if "~" in t else t for t in tokens]
    return tuple(tokens)


def format_tokens(tokens: Iterable[str]) -> str:
    """Join unescaped reference tokens into pointer text."""
    return "".join("/" + escape(t) for t in tokens)


def find_key(obj: dict[Any, Any], token: str, at: tuple[str, ...] = ()) -> str | None:
    """The key of ``obj`` that ``token`` names case-insensitively, or ``None``.

    An exact match wins; otherwise exactly one key must match by ``str.casefold``.

    Raises:
        PatchConflict: Two or more keys match only case-insensitively.
    """
    if token in obj:
        return token
    folded = token.casefold()
    found = [k for k in obj if isinstance(k, str) and k.casefold() == folded]
    if not found:
        return None
    if len(found) > 1:
        names = " and ".join(repr(k) for k in sorted(found))
        raise PatchConflict(
            f"{token!r} matches {names} in the object at {_show(at)} case-insensitively;"
            " refusing to pick one",
            reason="ambiguous",
        )
    return found[0]


def array_index(token: str, length: int, at: tuple[str, ...], *, end_ok: bool) -> int:
    """The array index that ``token`` names in an array of ``length`` items.

    ``end_ok`` admits ``length`` itself and ``-`` (both name the slot after the last
    item), as ``add`` needs.

    Raises:
        PatchConflict: The token is not an index (``01``, ``1e0``, ``-1``) or is out of range.
    """
    if token == "-":  # noqa: S105 - RFC 6901's word, not a credential
        if end_ok:
            return length
        raise PatchConflict(
            f"'-' (past the end of the array at {_show(at)}) names no existing element;"
            " only 'add' may use it",
            reason="bad-index",
        )
    if not (token.isascii() and _INDEX.fullmatch(token)):
        raise PatchConflict(
            f"{token!r} is not an array index (a non-negative integer without leading"
            f" zeros) for the array at {_show(at)}",
            reason="bad-index",
        )
    i = int(token)
    if i > length or (i == length and not end_ok):
        raise PatchConflict(
            f"index {i} is out of range for the array of length {length} at {_show(at)}",
            reason="bad-index",
        )
    return i


def step(node: Any, token: str, at: tuple[str, ...], case_insensitive: bool) -> Any:
    """Return the child of ``node`` named by ``token`` (``at`` is ``node``'s location)."""
    t = type(node)
    if t is dict or isinstance(node, dict):
        if token in node:
            return node[token]
        key = find_key(node, token, at) if case_insensitive else None
        if key is None:
            raise PatchConflict(
                f"{_show((*at, token))} does not exist (no member {token!r} in the object"
                f" at {_show(at)})",
                reason="missing",
            )
        return node[key]
    if t is list or isinstance(node, list):
        return node[array_index(token, len(node), at, end_ok=False)]
    raise PatchConflict(
        f"cannot look up {token!r} in the {type_name(node)} at {_show(at)}",
        reason="not-a-container",
    )


def resolve_tokens(doc: Any, tokens: tuple[str, ...], case_insensitive: bool = False) -> Any:
    """Return the value at ``tokens`` in ``doc``.

    Raises:
        PatchConflict: The location does not exist.
    """
    node = doc
    for depth, token in enumerate(tokens):
        node = step(node, token, tokens[:depth], case_insensitive)
    return node


def _show(tokens: tuple[str, ...]) -> str:
    return repr(format_tokens(tokens)) if tokens else "the document root"


class Pointer:
    """A parsed JSON Pointer.

    Pointers are immutable values: they compare and hash by their reference tokens and
    their mode. ``str()`` gives the normalised RFC 6901 text (always with the leading
    ``/``)::

        >>> p = Pointer.parse("/members/0/name")
        >>> p.tokens
        ('members', '0', 'name')
        >>> p.resolve({"members": [{"name": "Ada"}]})
        'Ada'
        >>> str(Pointer.parse("Department", case_insensitive=True))
        '/Department'
    """

    __slots__ = ("_ci", "_tokens")

    def __init__(self, tokens: Iterable[str] | str = (), *, case_insensitive: bool = False) -> None:
        """Build a pointer from unescaped reference tokens, or from pointer text (a
        string is parsed as :meth:`parse` does: ``Pointer("/a/b")`` is ``/a/b``, not the
        tokens ``/``, ``a``, ``/``, ``b``).

        Raises:
            InvalidPointer: The text is not a valid pointer.
            TypeError: A token is not a string.
        """
        if isinstance(tokens, str):
            tokens = parse_tokens(tokens, case_insensitive=case_insensitive)
        self._tokens = tuple(tokens)
        for t in self._tokens:
            if not isinstance(t, str):
                raise TypeError(f"reference tokens must be str, not {type(t).__name__}")
        self._ci = case_insensitive

    @classmethod
    def parse(cls, text: str, *, case_insensitive: bool = False) -> Pointer:
        """Parse pointer text.

        Args:
            text: RFC 6901 pointer text, such as ``"/a/b~1c"``.
            case_insensitive: Resolve keys case-insensitively and allow the leading
                ``/`` to be left out.

        Raises:
            InvalidPointer: The text is not a valid pointer in the chosen mode.
        """
        if not isinstance(text, str):
            raise InvalidPointer("a JSON Pointer must be a string", pointer=repr(text))
        return cls(
            parse_tokens(text, case_insensitive=case_insensitive), case_insensitive=case_insensitive
        )

    @property
    def tokens(self) -> tuple[str, ...]:
        """The unescaped reference tokens."""
        return self._tokens

    @property
    def case_insensitive(self) -> bool:
        """Whether keys resolve case-insensitively."""
        return self._ci

    @property
    def parent(self) -> Pointer:
        """The pointer one level up (the root is its own parent)."""
        return Pointer(self._tokens[:-1], case_insensitive=self._ci)

    def __truediv__(self, token: str | int) -> Pointer:
        """Append a reference token: ``Pointer() / "a" / 0`` is ``/a/0``."""
        return Pointer((*self._tokens, str(token)), case_insensitive=self._ci)

    def resolve(self, doc: Any) -> Any:
        """Return the value this pointer names in ``doc``.

        Raises:
            PatchConflict: The location does not exist (``reason`` says why).
        """
        return resolve_tokens(doc, self._tokens, self._ci)

    def exists(self, doc: Any) -> bool:
        """Whether this pointer names a value in ``doc``."""
        try:
            resolve_tokens(doc, self._tokens, self._ci)
        except PatchConflict as e:
            if e.reason == "ambiguous":
                raise
            return False
        return True

    def is_prefix_of(self, other: Pointer) -> bool:
        """Whether ``other`` is this location or inside it."""
        n = len(self._tokens)
        return other._tokens[:n] == self._tokens

    def __iter__(self) -> Iterator[str]:
        return iter(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __str__(self) -> str:
        return format_tokens(self._tokens)

    def __repr__(self) -> str:
        ci = ", case_insensitive=True" if self._ci else ""
        return f"Pointer({str(self)!r}{ci})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pointer):
            return NotImplemented
        return self._tokens == other._tokens and self._ci == other._ci

    def __hash__(self) -> int:
        return hash((self._tokens, self._ci))


def non_string_name(doc: Any) -> tuple[str, Any] | None:
    """Where ``doc`` has an object member whose name is not a string (a Python dict with
    an ``int`` key, say: not JSON), as ``(pointer text of that object, the name)``;
    ``None`` when every name is a string. A walk of the whole document: for error paths."""
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    return path, k
                if isinstance(v, dict | list):
                    stack.append((f"{path}/{escape(k)}", v))
        elif isinstance(value, list):
            stack.extend(
                (f"{path}/{i}", v) for i, v in enumerate(value) if isinstance(v, dict | list)
            )
    return None


def refuse_non_string_names(*docs: Any) -> None:
    """After a ``TypeError`` from a diff's walk: raise ``NotRepresentable`` where a
    document has an object member named by something other than a string (no pointer
    can name it); return when none has (the ``TypeError`` was something else)."""
    for doc in docs:
        bad = non_string_name(doc)
        if bad is not None:
            path, name = bad
            raise NotRepresentable(
                f"the object has a member named {name!r} ({type(name).__name__}): JSON "
                "object member names are strings, the only names a patch's paths can hold",
                path=path,
            )
