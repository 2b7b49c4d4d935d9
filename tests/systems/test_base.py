"""What every adapter relies on: encoding, header safety, secrets, Retry-After."""

from __future__ import annotations

import pickle
import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import yarl

from patchassign.errors import ConfigError
from patchassign.systems import (
    HttpRequest,
    HttpResponse,
    PerscomAdapter,
    Secret,
    check_header,
    parse_retry_after,
    segment,
)
from patchassign.systems._base import base_url


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("../admin", "..%2Fadmin"),
        ("a b/c", "a%20b%2Fc"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("x?y#z%", "x%3Fy%23z%25"),
        ("ok-1.2_~", "ok-1.2_~"),
        (42, "42"),
        ("é", "%C3%A9"),
    ],
)
def test_a_segment_cannot_change_the_path(raw: str | int, encoded: str) -> None:
    assert segment(raw) == encoded
    url = yarl.URL(f"http://h/v5/tasks/{segment(raw)}/update-assignment", encoded=True)
    assert url.raw_path.split("/")[3] == encoded
    assert url.raw_path.endswith("/update-assignment")
    assert url.raw_path.count("/") == 4


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00b", "a\x7fb"])
def test_header_values_with_control_characters_are_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="control character"):
        check_header("If-Match", value)
    with pytest.raises(ConfigError):
        Secret(value)


@pytest.mark.parametrize(
    ("value", "says"), [(5, "got int"), (None, "got NoneType"), (b"t", "got bytes"), ("", "empty")]
)
def test_a_credential_that_is_not_text_is_a_config_error(value: object, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Secret(value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="credential"):
        PerscomAdapter("https://perscom.example/api", value)  # type: ignore[arg-type]


def test_secrets_never_show_themselves() -> None:
    s = Secret("hunter2-token")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert "hunter2" not in f"{s} {s!r}"
    assert s.reveal() == "hunter2-token"
    with pytest.raises(TypeError):
        pickle.dumps(s)
    req = HttpRequest("GET", "http://h/x", {"Authorization": "Bearer hunter2-token"})
    assert "hunter2" not in repr(req)


def test_retry_after_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 120 ") == 120.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30.0)
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(earlier, now=now.timestamp()) == 0.0
    assert parse_retry_after("99999999") == 86_400.0
    for bad in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(bad) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://h", "absolute http(s) URL"),
        ("/relative", "absolute http(s) URL"),
        ("http://h/x?q=1", "query or fragment"),
        ("http://u:p@h", "credentials"),
        ("http://h\r\n/x", "CR/LF refused"),
        ("https://", "absolute http(s) URL"),
        # Said when the configuration is read, not as a connection error per change:
        ("http://exa mple.com", "spaces or control characters"),
        ("https://h.example/api v2", "spaces or control characters"),
        ("http://h\t/", "spaces or control characters"),
        ("http://h:abc", "port must be a number from 1 to 65535"),
        ("http://h:99999", "port must be a number from 1 to 65535"),
        ("http://h:0", "port must be a number from 1 to 65535"),
        ("http://:80", "names no host"),
        # (bare ValueErrors from urllib, and a traceback from the CLI)
        ("http://[::1", "is not a URL"),
        ("http://[zz]/", "is not a URL"),
    ],
)
def test_base_urls_are_validated(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        base_url(url)


@pytest.mark.parametrize(
    "url", ["http://[::1]:8080/api", "https://h.example/a%20b/", "http://h:", "http://h:65535"]
)
def test_base_urls_that_are_fine(url: str) -> None:
    assert base_url(url) == url.rstrip("/")


def test_response_headers_match_case_insensitively() -> None:
    r = HttpResponse(429, {"retry-after": "3"}, b"{}")
    assert r.header("Retry-After") == "3"
    assert r.header("X-Other") is None
    assert HttpResponse(200, {}, b"not json").json() is None


@pytest.mark.parametrize("value", ["²", "³", "1²", "\u0663", "\uff15", "1e3", "-5", "inf"])
def test_retry_after_with_non_ascii_or_odd_digits_is_ignored_not_a_crash(value: str) -> None:
    """``"²".isdigit()`` is true and ``float("²")`` fails: headers are read as ASCII."""
    from patchassign.systems import parse_retry_after

    assert parse_retry_after(value) is None


def test_maxsight_rate_limit_headers_with_odd_digits_do_not_crash() -> None:
    from patchassign.changes import Assign
    from patchassign.systems import HttpResponse, MaxsightAdapter, Retry

    adapter = MaxsightAdapter("https://m.example", "k", assigned_by="me")
    change = Assign(system="maxsight", record="t1", to="eve")
    for secs, after in (("²", None), ("3", 3.0)):
        answer = HttpResponse.from_json(429, {"message": "slow"}, {"X-RateLimit-Retry-Secs": secs})
        outcome = adapter.outcome(change, answer)
        assert isinstance(outcome, Retry)
        assert outcome.throttled
        assert outcome.after == after


def test_a_retry_policy_with_an_endless_timeout_is_refused() -> None:
    import msgspec

    from patchassign import RetryPolicy

    for field in ("timeout", "deadline", "cap"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert({field: float("inf")}, RetryPolicy)
