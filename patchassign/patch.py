"""JSON Patch (RFC 6902): typed operations, validation, and a non-mutating apply.

Applying a patch never mutates its input unless ``in_place=True``. Instead of a deep copy
it copies only the containers on the changed paths (each at most once per patch) and
shares every unchanged subtree with the input, so a 2-operation patch on a 10 MB document
costs microseconds. The result may also hold the patch's own values by reference. Treat
documents as immutable values; if you mutate results, pass ``independent=True`` (or use
``in_place=True``, which copies inserted values) to get a result that shares nothing.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeAlias, overload

import msgspec

from patchassign._json import a_type_name, deep_copy, json_equal, type_name, why_not_json
from patchassign.errors import (
    MISSING,
    ConfigError,
    InvalidPatch,
    InvalidPointer,
    LimitExceeded,
    PatchConflict,
    depth_limited,
)
from patchassign.pointer import array_index, find_key, format_tokens, parse_tokens, resolve_tokens

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "ALL_OPS",
    "Add",
    "Copy",
    "JsonPatch",
    "Move",
    "Operation",
    "PatchLike",
    "Remove",
    "Replace",
    "Test",
    "apply_patch",
]


class Add(msgspec.Struct, tag="add", tag_field="op", frozen=True):
    """``add``: set an object member or insert into an array (``-`` appends)."""

    path: str
    value: Any


class Remove(msgspec.Struct, tag="remove", tag_field="op", frozen=True):
    """``remove``: delete the value at ``path``, which must exist."""

    path: str


class Replace(msgspec.Struct, tag="replace", tag_field="op", frozen=True):
    """``replace``: set the value at ``path``, which must exist."""

    path: str
    value: Any


class Move(msgspec.Struct, tag="move", tag_field="op", frozen=True):
    """``move``: remove the value at ``from`` and add it at ``path``."""

    from_: str = msgspec.field(name="from")
    path: str


class Copy(msgspec.Struct, tag="copy", tag_field="op", frozen=True):
    """``copy``: add the value at ``from`` at ``path`` as well."""

    from_: str = msgspec.field(name="from")
    path: str


class Test(msgspec.Struct, tag="test", tag_field="op", frozen=True):
    """``test``: fail unless the value at ``path`` equals ``value`` (JSON equality)."""

    __test__: ClassVar[bool] = False  # not a test case, for pytest collecting user imports

    path: str
    value: Any


Operation: TypeAlias = Add | Remove | Replace | Move | Copy | Test
PatchLike: TypeAlias = "JsonPatch | Iterable[Operation | Mapping[str, Any]] | str | bytes"

ALL_OPS: Final = frozenset({"add", "remove", "replace", "move", "copy", "test"})

_OP_TYPES: Final = (Add, Remove, Replace, Move, Copy, Test)
_ADD, _REMOVE, _REPLACE, _MOVE, _COPY, _TEST = range(6)
_KIND: Final[dict[type[Any], int]] = {t: i for i, t in enumerate(_OP_TYPES)}
_NAME: Final = ("add", "remove", "replace", "move", "copy", "test")

_decoder: Final = msgspec.json.Decoder(list[Operation])
_any_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()

# (kind, path text, path tokens, from text, from tokens, value)
_Step: TypeAlias = tuple[int, str, tuple[str, ...], str, tuple[str, ...], Any]


_new_object = object.__new__  # a JsonPatch without __init__ (see JsonPatch._new)


class JsonPatch(Sequence[Operation]):
    """An immutable, validated RFC 6902 patch: a sequence of typed operations.

    Build one from JSON (``JsonPatch.from_json``), from Python data (``JsonPatch([...])``
    with operation structs or dicts), or let ``apply_patch`` do it for you.

    Args:
        operations: Operation structs (``Add``, ``Remove``...) or mappings such as
            ``{"op": "add", "path": "/a", "value": 1}``.
        allowed_ops: If given, the operation names this patch may use, such as
            ``{"add", "remove", "replace", "test"}`` for a server without move/copy.
        case_insensitive: Accept paths without the leading ``/`` (for servers that
            resolve paths case-insensitively). Such a patch applies only with
            ``case_insensitive=True``.

    Raises:
        InvalidPatch: An operation is malformed or not allowed; the error names it.
    """

    __slots__ = ("_compiled", "_ops", "_relative")

    _ops: tuple[Operation, ...]
    _compiled: tuple[_Step, ...] | None
    _relative: int | None

    def __init__(
        self,
        operations: Iterable[Operation | Mapping[str, Any]] = (),
        *,
        allowed_ops: Iterable[str] | None = None,
        case_insensitive: bool = False,
    ) -> None:
        if not isinstance(operations, list | tuple):
            _refuse_non_array(operations)
        ops = operations if isinstance(operations, list | tuple) else list(operations)
        if not all(type(o) in _KIND for o in ops):
            try:
                ops = _convert(ops)  # checks the values' depth itself
            except RecursionError:
                raise InvalidPatch(str(LimitExceeded("the patch document"))) from None
        else:
            _refuse_too_deep(ops)  # type: ignore[arg-type]
        self._init(tuple(ops), allowed_ops, case_insensitive)  # type: ignore[arg-type]

    def _init(
        self,
        ops: tuple[Operation, ...],
        allowed_ops: Iterable[str] | None,
        case_insensitive: bool,
    ) -> None:
        self._ops = ops
        self._compiled, self._relative = _compile(ops)
        if self._relative is not None and not case_insensitive:
            i = self._relative
            op = ops[i]
            field, text = (
                ("from", op.from_)
                if isinstance(op, Move | Copy) and _rel(op.from_)
                else ("path", op.path)
            )
            raise InvalidPointer(
                "a JSON Pointer must be empty or start with '/'",
                pointer=text,
                index=i,
                op=_NAME[_KIND[type(op)]],
                field=field,
            )
        if allowed_ops is not None:
            self.ensure_allowed(allowed_ops)

    @classmethod
    def _new(cls, ops: tuple[Operation, ...], *, trusted: bool = False) -> Self:
        """Wrap operations built by this package.

        ``trusted`` ops (from ``make_patch`` and the merge conversions) have well-formed
        absolute pointers by construction: their pointers are parsed on first use, not
        now. Others (slices, sums) are compiled at once and may hold relative paths.
        """
        self = _new_object(cls)
        if trusted:
            self._ops = ops
            self._compiled = None
            self._relative = None
        else:
            self._init(ops, None, True)
        return self

    @classmethod
    def _trusted(cls, ops: tuple[Operation, ...]) -> Self:
        """``_new(ops, trusted=True)``, without its branches: ``make_patch``'s exit."""
        self = _new_object(cls)
        self._ops = ops
        self._compiled = None
        self._relative = None
        return self

    @property
    def _steps(self) -> tuple[_Step, ...]:
        steps = self._compiled
        if steps is None:
            steps, self._relative = _compile(self._ops)
            self._compiled = steps
        return steps

    @classmethod
    def from_json(
        cls,
        data: bytes | bytearray | memoryview | str,
        *,
        allowed_ops: Iterable[str] | None = None,
        case_insensitive: bool = False,
    ) -> Self:
        """Decode and validate a JSON Patch document in one pass.

        Raises:
            InvalidPatch: The text is not JSON, not an array, or an operation is
                malformed or not allowed.
        """
        try:
            ops = _decoder.decode(data)
        except msgspec.ValidationError as e:
            _refuse_duplicates(data, None)
            raise _invalid_from_msgspec(e, lambda: _any_decoder.decode(data)) from None
        except msgspec.DecodeError as e:
            raise InvalidPatch(f"not valid JSON: {why_not_json(data, e)}") from None
        except UnicodeDecodeError:
            raise InvalidPatch("not valid JSON: the text is not valid UTF-8") from None
        except RecursionError:
            raise InvalidPatch(str(LimitExceeded("the patch document"))) from None
        _refuse_duplicates(data, ops)
        self = cls.__new__(cls)
        self._init(tuple(ops), allowed_ops, case_insensitive)
        return self

    @classmethod
    def coerce(cls, patch: PatchLike, *, case_insensitive: bool = False) -> JsonPatch:
        """Return ``patch`` as a ``JsonPatch``.

        Accepts a ``JsonPatch``, JSON text or bytes, an iterable of operation structs or
        mappings, or a ``jsonpatch.JsonPatch`` object.
        """
        if isinstance(patch, JsonPatch):
            return patch
        if isinstance(patch, str | bytes | bytearray | memoryview):
            return cls.from_json(patch, case_insensitive=case_insensitive)
        foreign = getattr(patch, "patch", None)  # jsonpatch.JsonPatch and its kin
        if isinstance(foreign, list) and not isinstance(patch, list | tuple):
            return cls(foreign, case_insensitive=case_insensitive)
        return cls(patch, case_insensitive=case_insensitive)

    def ensure_allowed(self, allowed_ops: Iterable[str]) -> None:
        """Raise ``InvalidPatch`` for the first operation not in ``allowed_ops``
        (``ConfigError`` for a name there that is no operation)."""
        allowed = frozenset(allowed_ops)
        if unknown := allowed - ALL_OPS:
            raise ConfigError(f"unknown operation names in allowed_ops: {sorted(unknown)}")
        for i, step in enumerate(self._steps):
            name = _NAME[step[0]]
            if name not in allowed:
                raise InvalidPatch(
                    f"operation {name!r} is not allowed here (allowed: {', '.join(sorted(allowed))})",
                    index=i,
                    op=name,
                    field="op",
                )

    @depth_limited
    def apply(
        self,
        doc: Any,
        *,
        in_place: bool = False,
        case_insensitive: bool = False,
        independent: bool = False,
    ) -> Any:
        """Apply this patch to ``doc``; see ``apply_patch``."""
        steps = self._steps
        if self._relative is not None and not case_insensitive:
            raise InvalidPointer(
                "a JSON Pointer must be empty or start with '/' (this patch was built for"
                " case-insensitive paths)",
                pointer=self._steps[self._relative][1],
                index=self._relative,
                op=_NAME[self._steps[self._relative][0]],
            )
        if type(doc) is not dict and type(doc) is not list and _other_container(doc):
            if in_place:
                raise _in_place_refused(doc)
            doc = _plain(doc)  # e.g. OrderedDicts from json's object_pairs_hook
        try:
            result = _Engine(doc, case_insensitive, in_place).run(steps)
        except _NotPlain as e:
            # A mapping or sequence that is not a plain dict/list on a written path
            # (an OrderedDict inside a list...): once, on a plain copy of the document.
            if in_place:
                raise _in_place_refused(e.node) from None
            result = _Engine(_plain(doc), case_insensitive, False).run(steps)
        if independent and not in_place:
            result = deep_copy(result)
        return result

    def to_json(self) -> bytes:
        """Encode as compact JSON."""
        return _encoder.encode(self._ops)

    def to_list(self) -> list[dict[str, Any]]:
        """The operations as plain dicts, as ``jsonpatch`` and ``json.dumps`` expect."""
        return msgspec.to_builtins(list(self._ops))  # type: ignore[no-any-return]

    @property
    def operations(self) -> tuple[Operation, ...]:
        """The operations, in order."""
        return self._ops

    def __iter__(self) -> Iterator[Operation]:
        return iter(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    @overload
    def __getitem__(self, index: int) -> Operation: ...
    @overload
    def __getitem__(self, index: slice) -> JsonPatch: ...
    def __getitem__(self, index: int | slice) -> Operation | JsonPatch:
        if isinstance(index, slice):
            return JsonPatch._new(self._ops[index])
        return self._ops[index]

    def __add__(self, other: object) -> JsonPatch:
        if not isinstance(other, JsonPatch):
            return NotImplemented
        return JsonPatch._new(self._ops + other._ops)

    def __eq__(self, other: object) -> bool:
        """Equal when the operations are, comparing values with JSON types."""
        if not isinstance(other, JsonPatch):
            return NotImplemented
        if len(self._steps) != len(other._steps):
            return False
        for a, b in zip(self._steps, other._steps, strict=True):
            if a[:5] != b[:5] or not json_equal(a[5], b[5]):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"JsonPatch({list(self._ops)!r})"


def apply_patch(
    doc: Any,
    patch: PatchLike,
    *,
    in_place: bool = False,
    case_insensitive: bool = False,
    independent: bool = False,
) -> Any:
    """Apply a JSON Patch to a document and return the result.

    Atomic: when any operation fails, nothing is changed (also with ``in_place=True``)
    and the error names the operation by index, op and path.

    Args:
        doc: The JSON document (dicts, lists, str, int, float, bool, None).
        patch: A ``JsonPatch``, JSON text or bytes, a list of operation dicts or structs,
            or a ``jsonpatch.JsonPatch``.
        in_place: Mutate ``doc`` instead of sharing its unchanged parts. Values inserted
            from the patch are copied so the result owns all of its containers. Always
            use the return value: replacing the root cannot happen in place.
        case_insensitive: Resolve object keys case-insensitively, with the leading ``/``
            optional; an existing key is updated under its existing spelling.
        independent: Return a result that shares no container with ``doc`` or ``patch``
            (a deep copy: costs time proportional to the document).

    Returns:
        The patched document. Unless ``in_place`` or ``independent`` is set, it shares
        unchanged subtrees with ``doc`` and may hold the patch's values by reference:
        treat both as immutable.

    Raises:
        InvalidPatch: The patch document is malformed (before anything is applied).
        PatchConflict: An operation does not fit the document (missing path, failed
            ``test``, ambiguous key); ``index``, ``op`` and ``path`` say which.
    """
    p = JsonPatch.coerce(patch, case_insensitive=case_insensitive)
    return p.apply(
        doc, in_place=in_place, case_insensitive=case_insensitive, independent=independent
    )


# --------------------------------------------------------------------------- compile


def _rel(text: str) -> bool:
    return bool(text) and text[0] != "/"


def _compile(ops: tuple[Operation, ...]) -> tuple[tuple[_Step, ...], int | None]:
    """Parse every pointer once; return the steps and the first relative-path index."""
    steps: list[_Step] = []
    relative: int | None = None
    for i, op in enumerate(ops):
        kind = _KIND[type(op)]
        path = op.path
        try:
            tokens = parse_tokens(path, case_insensitive=True)
        except InvalidPointer as e:
            raise InvalidPointer(
                e.problem, pointer=path, index=i, op=_NAME[kind], field="path"
            ) from None
        if relative is None and _rel(path):
            relative = i
        if kind in (_MOVE, _COPY):
            frm = op.from_  # type: ignore[union-attr]
            try:
                ftokens = parse_tokens(frm, case_insensitive=True)
            except InvalidPointer as e:
                raise InvalidPointer(
                    e.problem, pointer=frm, index=i, op=_NAME[kind], field="from"
                ) from None
            if relative is None and _rel(frm):
                relative = i
            if kind == _MOVE and len(ftokens) < len(tokens) and tokens[: len(ftokens)] == ftokens:
                raise InvalidPatch(
                    f"cannot move {frm!r} into its own child {path!r}",
                    index=i,
                    op="move",
                    field="from",
                )
            steps.append((kind, path, tokens, frm, ftokens, None))
        else:
            if kind == _REMOVE and not tokens:
                raise InvalidPatch(
                    "cannot remove the whole document", index=i, op="remove", field="path"
                )
            steps.append((kind, path, tokens, "", (), getattr(op, "value", None)))
    return tuple(steps), relative


_BY_NAME: Final[dict[Any, type[Any]]] = dict(zip(_NAME, _OP_TYPES, strict=True))
_WITH_VALUE: Final = frozenset({Add, Replace, Test})


def _from_dicts(ops: Sequence[Any]) -> list[Operation] | None:
    """Build structs from plain, well-formed dicts; ``None`` for anything else.

    About 5x faster than ``msgspec.convert`` on tagged unions. Whatever it declines
    goes through ``msgspec.convert``, which validates and words the errors.
    """
    out: list[Operation] = []
    for o in ops:
        if type(o) is not dict:
            return None
        op = o.get("op")
        path = o.get("path")
        cls = _BY_NAME.get(op) if type(op) is str else None
        if cls is None or type(path) is not str:
            return None
        if cls in _WITH_VALUE:
            if "value" not in o:
                return None
            value = o["value"]
            if type(value) is dict or type(value) is list:
                _refuse_too_deep_value(value, len(out))
            out.append(cls(path, value))
        elif cls is Remove:
            out.append(Remove(path))
        else:
            frm = o.get("from")
            if type(frm) is not str:
                return None
            out.append(cls(frm, path))
    return out


def _convert(ops: Sequence[Any]) -> list[Operation]:
    if (fast := _from_dicts(ops)) is not None:
        return fast
    for i, o in enumerate(ops):
        if not isinstance(o, Mapping) and type(o) not in _KIND:
            raise InvalidPatch(f"an operation must be a JSON object, got {a_type_name(o)}", index=i)
    plain = [msgspec.to_builtins(o) if type(o) in _KIND else o for o in ops]
    try:
        converted = msgspec.convert(plain, list[Operation], strict=True)
        _refuse_too_deep(converted)
        return converted
    except msgspec.ValidationError as e:
        raise _invalid_from_msgspec(e, lambda: plain) from None
    except UnicodeEncodeError:  # a lone surrogate (json.loads makes them from "\ud800")
        for i, o in enumerate(plain):
            try:
                msgspec.json.encode(o)
            except UnicodeEncodeError:
                raise InvalidPatch(
                    "a string is not valid Unicode (it holds a lone surrogate)", index=i
                ) from None
        raise InvalidPatch("a string is not valid Unicode (it holds a lone surrogate)") from None


class _Members(dict[str, Any]):
    """A decoded object that remembers a member name it saw twice."""

    twice: str | None = None


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    out = _Members(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                out.twice = k
                break
            seen.add(k)
    return out


def _refuse_duplicates(
    data: bytes | bytearray | memoryview | str, ops: list[Operation] | None
) -> None:
    """Refuse an operation that names a member twice (RFC 6902 A.13: ambiguous).

    msgspec, like JavaScript, keeps the last of duplicate members, so ``"path"`` twice
    would apply to the second path silently. When the member names appear in the text no
    more often than the decoded operations have them (nearly always), a byte count
    clears the document; otherwise it is checked exactly.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if ops is not None:
        n = len(ops)
        froms = sum(type(o) is Move or type(o) is Copy for o in ops)
        values = sum(type(o) is Add or type(o) is Replace or type(o) is Test for o in ops)
        if (
            raw.count(b'"op"') <= n
            and raw.count(b'"path"') <= n
            and raw.count(b'"from"') <= froms
            and raw.count(b'"value"') <= values
        ):
            return
    try:
        parsed = json.loads(raw, object_pairs_hook=_members)
    except (ValueError, RecursionError):
        return  # msgspec's verdict on the text stands
    if not isinstance(parsed, list):
        return
    for i, op in enumerate(parsed):
        if isinstance(op, _Members) and op.twice is not None:
            raise InvalidPatch(
                f"the member {op.twice!r} appears twice in one operation (ambiguous)",
                index=i,
                field=op.twice,
            )


def _refuse_non_array(operations: object) -> None:
    """A patch is an array of operations: say what was given instead."""
    if isinstance(operations, Mapping):
        hint = (
            " (one operation? put it in a list: [{...}])"
            if "op" in operations
            else " (an RFC 7396 merge patch? use apply_merge_patch)"
        )
        raise InvalidPatch(f"a JSON Patch is an array of operations, got an object{hint}")
    if isinstance(operations, str | bytes | bytearray | memoryview):
        raise InvalidPatch(
            "a JSON Patch is an array of operations, got text (decode it with "
            "JsonPatch.from_json, or pass it to apply_patch)"
        )
    if operations is None or isinstance(operations, bool | int | float):
        raise InvalidPatch(f"a JSON Patch is an array of operations, got {a_type_name(operations)}")
    if not isinstance(operations, Iterable):
        raise InvalidPatch(
            f"a JSON Patch is an array of operations, got {type(operations).__name__}"
        )


_MSGSPEC_AT: Final = re.compile(r" - at `\$(?P<loc>[^`]*)`$")
_LOC: Final = re.compile(r"^\[(?P<index>\d+)\](?:\.(?P<field>[A-Za-z_]+))?")
_MSGSPEC_TYPE: Final = re.compile(r"`(str|int|float|bool|null|object|array)`")
_TYPE_WORDS: Final = {
    "str": "a string",
    "int": "a number",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
    "object": "an object",
    "array": "an array",
}
_MISSING_FIELD: Final = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def _invalid_from_msgspec(e: msgspec.ValidationError, raw: Any) -> InvalidPatch:
    """Turn msgspec's validation message into an ``InvalidPatch`` naming op and field."""
    text = str(e)
    index: int | None = None
    field: str | None = None
    m = _MSGSPEC_AT.search(text)
    if m:
        text = text[: m.start()]
        loc = _LOC.match(m.group("loc"))
        if loc:
            index = int(loc.group("index"))
            field = loc.group("field")
    if text.startswith("Expected "):
        text = "e" + text[1:]
    if missing := _MISSING_FIELD.match(text):
        field = missing.group("field")
        text = f"missing required member {field!r}"
    op_name: str | None = None
    if index is not None:
        try:
            item = raw()[index]
            candidate = item.get("op") if isinstance(item, Mapping) else None
            op_name = candidate if isinstance(candidate, str) else None
        except Exception:  # only for the message; the InvalidPatch stands anyway
            op_name = None
    text = _MSGSPEC_TYPE.sub(lambda m: _TYPE_WORDS.get(m.group(1), m.group(1)), text)
    if field == "op" and text.startswith("Invalid value"):
        text = f"unknown op {op_name!r} (expected one of: {', '.join(_NAME)})"
        op_name = None
    elif text.startswith("expected an object") and field is None:
        text = "an operation must be a JSON object, " + text.split(", ", 1)[-1]
    elif text.startswith("expected an array") and index is None:
        text = "a JSON Patch must be a JSON array of operations, " + text.split(", ", 1)[-1]
    return InvalidPatch(text, index=index, op=op_name, field=field)


# --------------------------------------------------------------------------- apply

_LOG_DSET, _LOG_LINS, _LOG_LPOP, _LOG_LSET = range(4)


class _Engine:
    """Applies compiled steps; copy-on-write by default, or in place with an undo log.

    Copy-on-write: ``owned`` maps id -> container for the containers this run created
    (copies of the input's containers on changed paths). Only owned containers are
    written; any other is copied first and the copy linked into its (owned) parent.
    The map holds references, so an id cannot be reused while the run lasts.

    In place: every container of ``doc`` is written directly and each write is logged;
    on failure the log is replayed backwards, leaving ``doc`` as it was.
    """

    __slots__ = ("ci", "log", "owned", "root")

    def __init__(self, root: Any, case_insensitive: bool, in_place: bool) -> None:
        self.root = root
        self.ci = case_insensitive
        self.owned: dict[int, Any] | None = None if in_place else {}
        self.log: list[tuple[Any, ...]] | None = [] if in_place else None

    def run(self, steps: tuple[_Step, ...]) -> Any:
        i = 0
        try:
            for i, (kind, path, tokens, frm, ftokens, value) in enumerate(steps):  # noqa: B007
                if kind == _ADD:
                    self.add(tokens, self.incoming(value))
                elif kind == _REPLACE:
                    self.replace(tokens, self.incoming(value))
                elif kind == _REMOVE:
                    self.remove(tokens)
                elif kind == _TEST:
                    actual = resolve_tokens(self.root, tokens, self.ci)
                    if not json_equal(actual, value):
                        raise PatchConflict(
                            f"test failed: expected {_short(value)}, found {_short(actual)}",
                            reason="test-failed",
                            expected=value,
                            actual=actual,
                        )
                else:
                    try:
                        if kind == _MOVE:
                            moved = self.remove(ftokens)
                        else:
                            moved = self.share(resolve_tokens(self.root, ftokens, self.ci))
                    except PatchConflict as e:
                        e.path = frm
                        raise
                    self.add(tokens, moved)
        except _NotPlain:
            self.rollback()
            raise
        except PatchConflict as e:
            self.rollback()
            kind, path = steps[i][0], steps[i][1]
            raise PatchConflict(
                e.detail,
                reason=e.reason,
                index=i,
                op=_NAME[kind],
                path=e.path if e.path is not None else path,
                expected=e.expected,
                actual=e.actual,
            ) from None
        except BaseException:
            self.rollback()
            raise
        return self.root

    # -- values entering the document

    def incoming(self, value: Any) -> Any:
        """A patch value about to be inserted: in place, the document must own it."""
        if self.owned is None and type(value) in (dict, list):
            return deep_copy(value)
        return value

    def share(self, value: Any) -> Any:
        """A document value about to appear a second time (``copy``)."""
        if self.owned is None:
            return deep_copy(value)
        self._disown(value)
        return value

    def _disown(self, value: Any) -> None:
        # A container this run owns is about to be reachable from two places: stop
        # owning it so that a later write through either place copies it first. Only
        # owned containers can hold owned children, so the walk stays on changed paths.
        owned = self.owned
        assert owned is not None
        if owned.pop(id(value), None) is None:
            return
        children = value.values() if type(value) is dict else value
        for child in children:
            if type(child) in (dict, list):
                self._disown(child)

    # -- navigation

    def writable(self, node: Any) -> Any:
        owned = self.owned
        if owned is None or id(node) in owned:
            return node
        node = node.copy()
        owned[id(node)] = node
        return node

    def parent(self, tokens: tuple[str, ...]) -> Any:
        """The container holding ``tokens[-1]``, made writable along the way."""
        node = self.root
        if type(node) is dict or type(node) is list:
            w = self.writable(node)
            if w is not node:
                self.root = node = w
        for depth in range(len(tokens) - 1):
            token = tokens[depth]
            t = type(node)
            if t is dict:
                key = token if token in node else self.key(node, token, tokens, depth)
                if key is None:
                    raise _missing(tokens, depth)
                child = node[key]
                if type(child) is dict or type(child) is list:
                    w = self.writable(child)
                    if w is not child:
                        node[key] = w  # node is owned: no log needed
                    child = w
            elif t is list:
                idx = array_index(token, len(node), tokens[:depth], end_ok=False)
                child = node[idx]
                if type(child) is dict or type(child) is list:
                    w = self.writable(child)
                    if w is not child:
                        node[idx] = w
                    child = w
            else:
                raise _not_container(node, tokens, depth)
            node = child
        return node

    def key(
        self, node: dict[str, Any], token: str, tokens: tuple[str, ...], depth: int
    ) -> str | None:
        if not self.ci:
            return None
        return find_key(node, token, tokens[:depth])

    # -- the primitive operations

    def add(self, tokens: tuple[str, ...], value: Any) -> None:
        if not tokens:
            self.root = value
            return
        node = self.parent(tokens)
        token = tokens[-1]
        t = type(node)
        if t is dict:
            key = token if token in node else (self.key(node, token, tokens, -1) or token)
            if self.log is not None:
                self.log.append((_LOG_DSET, node, key, node.get(key, MISSING)))
            node[key] = value
        elif t is list:
            idx = array_index(token, len(node), tokens[:-1], end_ok=True)
            if self.log is not None:
                self.log.append((_LOG_LINS, node, idx))
            node.insert(idx, value)
        else:
            raise _not_container(node, tokens, len(tokens) - 1)

    def replace(self, tokens: tuple[str, ...], value: Any) -> None:
        if not tokens:
            self.root = value
            return
        node = self.parent(tokens)
        token = tokens[-1]
        t = type(node)
        if t is dict:
            key = token if token in node else self.key(node, token, tokens, -1)
            if key is None:
                raise _missing(tokens, len(tokens) - 1)
            if self.log is not None:
                self.log.append((_LOG_DSET, node, key, node[key]))
            node[key] = value
        elif t is list:
            idx = array_index(token, len(node), tokens[:-1], end_ok=False)
            if self.log is not None:
                self.log.append((_LOG_LSET, node, idx, node[idx]))
            node[idx] = value
        else:
            raise _not_container(node, tokens, len(tokens) - 1)

    def remove(self, tokens: tuple[str, ...]) -> Any:
        if not tokens:
            # Only ``move`` from the root gets here, and only onto the root itself
            # (anything else is a move into its own child, refused when compiled).
            return self.root
        node = self.parent(tokens)
        token = tokens[-1]
        t = type(node)
        if t is dict:
            key = token if token in node else self.key(node, token, tokens, -1)
            if key is None:
                raise _missing(tokens, len(tokens) - 1)
            value = node.pop(key)
            if self.log is not None:
                self.log.append((_LOG_DSET, node, key, value))
            return value
        if t is list:
            idx = array_index(token, len(node), tokens[:-1], end_ok=False)
            value = node.pop(idx)
            if self.log is not None:
                self.log.append((_LOG_LPOP, node, idx, value))
            return value
        raise _not_container(node, tokens, len(tokens) - 1)

    def rollback(self) -> None:
        log = self.log
        if not log:
            return
        for entry in reversed(log):
            kind, node = entry[0], entry[1]
            if kind == _LOG_DSET:
                if entry[3] is MISSING:
                    del node[entry[2]]
                else:
                    node[entry[2]] = entry[3]
            elif kind == _LOG_LINS:
                del node[entry[2]]
            elif kind == _LOG_LPOP:
                node.insert(entry[2], entry[3])
            else:
                node[entry[2]] = entry[3]
        log.clear()


def _missing(tokens: tuple[str, ...], depth: int) -> PatchConflict:
    at = tokens[:depth] if depth >= 0 else tokens[:-1]
    token = tokens[depth]
    where = repr(format_tokens(at)) if at else "the document root"
    return PatchConflict(
        f"{format_tokens((*at, token))!r} does not exist (no member {token!r} in the object at {where})",
        reason="missing",
    )


def _refuse_too_deep(ops: Sequence[Operation]) -> None:
    """A value nested deeper than the limit, refused on the way in (as decoding does)
    rather than by ``to_json`` or ``==`` later. One C-speed encode per container value."""
    for i, op in enumerate(ops):
        if type(op) not in _WITH_VALUE:
            continue
        value = op.value  # type: ignore[union-attr]
        if type(value) is dict or type(value) is list:
            _refuse_too_deep_value(value, i)


def _refuse_too_deep_value(value: Any, index: int) -> None:
    try:
        _encoder.encode(value)
    except RecursionError:
        raise LimitExceeded(f"the value of operation {index}") from None
    except (TypeError, msgspec.EncodeError):
        pass  # not JSON: applying it is the caller's business, as before


class _NotPlain(PatchConflict):
    """The engine met a container that is not a plain dict or list (apply retries)."""

    def __init__(self, node: Any) -> None:
        super().__init__(
            f"a {type(node).__name__} is not a plain container", reason="not-a-container"
        )
        self.node = node


def _in_place_refused(node: Any) -> PatchConflict:
    return PatchConflict(
        f"in_place needs plain dicts and lists; the document holds a {type(node).__name__} "
        "(apply without in_place to get a plain copy)",
        reason="not-a-container",
    )


def _other_container(value: Any) -> bool:
    """A mapping or sequence that is not a plain ``dict``/``list`` (nor text)."""
    return isinstance(value, Mapping) or (
        isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)
    )


def _plain(value: Any) -> Any:
    """``value`` with every mapping as a ``dict`` and every sequence as a ``list``."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray):
        return [_plain(v) for v in value]
    return value


def _not_container(node: Any, tokens: tuple[str, ...], depth: int) -> PatchConflict:
    at = tokens[:depth]
    where = repr(format_tokens(at)) if at else "the document root"
    if _other_container(node):
        return _NotPlain(node)
    return PatchConflict(
        f"cannot look up {tokens[depth]!r} in the {type_name(node)} at {where}",
        reason="not-a-container",
    )


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = _encoder.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        text = repr(value)
    else:
        if "null" in text:  # msgspec writes NaN and infinities as null: show them
            with contextlib.suppress(TypeError, ValueError, RecursionError):
                text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
