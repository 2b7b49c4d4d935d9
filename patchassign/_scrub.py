"""Masking credentials in text a server sent back (errors, retry reasons): every form a
credential is sent in, so that none reaches a log, a result, the journal or a report."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, quote_plus

__all__ = ["Scrubber", "header_secrets"]

_MASK = "********"
_WINDOW = 8  # this many characters of a credential in a row are masked
#: A credential this short (a test token ``x``) is masked where it stands alone, not
#: inside words: masking every ``x`` would garble every message, and 1-3 characters
#: are no secret worth the garbling.
_SHORT = 4


class Scrubber:
    """Masks credentials in every form they are sent in (see :meth:`Config.scrub`)."""

    __slots__ = ("exact", "short", "windows")

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in values:
            forms |= {value, quote(value, safe=""), quote_plus(value)}
        forms.discard("")
        short = sorted((f for f in forms if len(f) < _SHORT), key=len, reverse=True)
        self.exact = sorted((f for f in forms if len(f) >= _SHORT), key=len, reverse=True)
        self.short = (
            re.compile("|".join(rf"(?<!\w){re.escape(f)}(?!\w)" for f in short)) if short else None
        )
        self.windows = {
            form[i : i + _WINDOW]
            for form in forms
            if len(form) >= _WINDOW
            for i in range(len(form) - _WINDOW + 1)
        }

    def __call__(self, text: str) -> str:
        for form in self.exact:
            if form in text:
                text = text.replace(form, _MASK)
        if self.short is not None:
            text = self.short.sub(_MASK, text)
        windows = self.windows
        if not windows or len(text) < _WINDOW:
            return text
        covered = [False] * len(text)
        hit = False
        for i in range(len(text) - _WINDOW + 1):
            if text[i : i + _WINDOW] in windows:
                covered[i : i + _WINDOW] = [True] * _WINDOW
                hit = True
        if not hit:
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            if covered[i]:
                while i < len(text) and covered[i]:
                    i += 1
                out.append(_MASK)
            else:
                out.append(text[i])
                i += 1
        return "".join(out)


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The credentials in an adapter's auth headers, in the forms they are sent in: each
    whole value, its parts of 8 or more characters (a token after ``Bearer``, each of a
    comma-separated list), and what a base64 ``login:password`` part decodes to."""
    out: list[str] = []
    for value in headers.values():
        out.append(value)
        for part in re.split(r"[\s,]+", value):
            if len(part) < _WINDOW:
                continue
            out.append(part)
            try:
                decoded = base64.b64decode(part, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                continue
            login, colon, password = decoded.partition(":")
            if colon and login and password:
                out.append(decoded)
                if len(password) >= _WINDOW:
                    out.append(password)
    return out
