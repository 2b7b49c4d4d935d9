"""Credentials never appear in logs, reports, results, the journal or exceptions."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from patchassign.bulk import Options, PreflightFailed, run_plan
from patchassign.config import parse_config
from patchassign.errors import ConfigError
from patchassign.sandbox import Faults

from .test_run import make, patchassign


def everything_written(folder: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


async def test_a_verbose_run_with_faults_leaks_no_token(tmp_path: Path) -> None:
    faults = Faults(throttle=0.1, retry_after=1, unavailable=0.1, drop=0.05, seed=8)
    async for s in make(tmp_path, 30, faults):
        code, out, err = await patchassign(
            s, "run", s.plan, "-c", s.config, "--verbose", "--results", tmp_path / "r.jsonl"
        )
        assert code == 0, err
        assert "DEBUG patchassign.dispatch: retrying" in err  # the logs did say things
        written = everything_written(tmp_path)  # journal (+ WAL), results, plan, config
        for token in s.env.values():
            assert token not in out
            assert token not in err
            assert token.encode() not in written


class Echo:
    """A PERSCOM-like server whose error message quotes the request's Authorization."""

    url = ""

    async def patch(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        return web.json_response(
            {"error": {"message": f"token {auth} may not do this", "status": 403}}, status=403
        )


@pytest_asyncio.fixture
async def echo() -> AsyncIterator[Echo]:
    e = Echo()
    app = web.Application()
    app.router.add_patch("/v2/assignment-records/{id}", e.patch)
    app.router.add_get("/v2/assignment-records/{id}", e.patch)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    e.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield e
    await runner.cleanup()


async def test_a_server_echoing_the_token_is_scrubbed(echo: Echo, tmp_path: Path) -> None:
    token = "very-secret-perscom-token"
    config = parse_config(
        {"systems": {"perscom": {"url": echo.url, "token_env": "P", "rate": 0}}},
        env={"P": token},
    )
    plan = tmp_path / "plan.jsonl"
    plan.write_text('{"system": "perscom", "record": 1, "action": "assign", "to": "7"}\n')
    results = tmp_path / "results.jsonl"
    err = io.StringIO()
    # The preflight read is refused (403): nothing is written, and its message is scrubbed.
    with pytest.raises(PreflightFailed):
        await run_plan(Options(plan=plan, config=config, progress="none"), err=err)
    assert "credentials refused" in err.getvalue()
    assert "token ******** may not do this" in err.getvalue()
    assert token not in err.getvalue()
    err = io.StringIO()
    report = await run_plan(
        Options(plan=plan, config=config, results=results, progress="none", preflight=False),
        err=err,
    )
    text = report.render()
    assert "token ******** may not do this" in text
    assert token not in text
    assert token.encode() not in everything_written(tmp_path)
    assert token not in err.getvalue()


def test_scrub_and_reprs(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(
        {
            "systems": {
                "kintone": {"url": "https://k.example", "api_token_env": "K"},
                "findable": {"url": "https://f.example", "token_env": "F"},
            }
        },
        env={"K": "tok-one,tok-two", "F": "fin-tok"},
    )
    assert config.scrub("a tok-two b fin-tok c") == "a ******** b ******** c"
    everything = repr(config) + repr(config.adapters) + str(vars(config))
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("patchassign").debug("config %r %s", config, config.adapters)
    for value in ("tok-one", "tok-two", "fin-tok"):
        assert value not in everything
        assert value not in caplog.text
    req = config.adapters["findable"].read(
        __import__("patchassign.changes", fromlist=["Delegate"]).Delegate(
            system="findable", record="a", to="e@x.example"
        )
    )
    assert "fin-tok" not in repr(req)
    assert req.headers["Authorization"] == "Bearer fin-tok"  # only where it must be


def test_tls_verification_off_is_logged_by_the_cli_run(tmp_path: Path) -> None:
    import subprocess

    cfg = tmp_path / "s.toml"
    cfg.write_text(
        'verify_tls = false\n[systems.findable]\nurl = "https://127.0.0.1:9"\ntoken_env = "F"\n'
    )
    plan = tmp_path / "p.jsonl"
    plan.write_text("")
    r = subprocess.run(
        [sys.executable, "-m", "patchassign", "run", str(plan), "-c", str(cfg)],
        capture_output=True,
        text=True,
        env={**os.environ, "F": "x"},
        timeout=60,
        check=False,
    )
    assert "TLS certificate verification is OFF" in r.stderr


def test_every_form_a_credential_is_sent_in_is_scrubbed() -> None:
    """Issue: base64(login:password), percent-encoded echoes and the half of a key left
    by a cut message were not scrubbed."""
    import base64
    from urllib.parse import quote

    config = parse_config(
        {
            "systems": {
                "kintone": {"url": "https://k.example", "login": "ada", "password_env": "KP"},
                "superoffice": {
                    "url": "https://s.example",
                    "user": "bob",
                    "password_env": "SP",
                },
                "findable": {"url": "https://f.example", "token_env": "F"},
            }
        },
        env={"KP": "kintone-pass-1", "SP": "so/pass word+9", "F": "fin-tok-abcdefghijklmnop"},
    )
    basic = base64.b64encode(b"bob:so/pass word+9").decode()
    kintone = base64.b64encode(b"ada:kintone-pass-1").decode()
    for leak in (
        basic,
        kintone,
        quote("so/pass word+9", safe=""),
        "fin-tok-abcdefghijklmnop",
        "fin-tok-abcdefghijklmnop"[:13],  # what a cut message leaves of the key
        "defghijklmnop",  # its second half
    ):
        scrubbed = config.scrub(f"server said: got {leak}!")
        assert leak not in scrubbed, leak
        assert "********" in scrubbed
    assert config.scrub("nothing secret here") == "nothing secret here"


def test_a_credential_of_a_few_characters_is_masked_alone_not_inside_words() -> None:
    # A test token "x" masked every "x" of every message ("ma******** items e********ceeded").
    config = parse_config(
        {"systems": {"findable": {"url": "https://f.example", "token_env": "F"}}},
        env={"F": "x"},
    )
    assert config.scrub("max items exceeded") == "max items exceeded"
    assert config.scrub("token x refused; got=x;") == "token ******** refused; got=********;"
    assert config.scrub("Authorization: Bearer x") == "Authorization: Bearer ********"


def test_a_url_with_credentials_is_not_printed_in_an_error() -> None:
    import pytest

    from patchassign import ConfigError

    for url in ("ftp://ada:s3cret-pw@k.example", "https://ada:s3cret-pw@k.example/?q=1"):
        with pytest.raises(ConfigError) as e:
            parse_config(
                {"systems": {"findable": {"url": url, "token_env": "F"}}}, env={"F": "tok"}
            )
        assert "s3cret-pw" not in str(e.value)
        assert "must not embed credentials" in str(e.value)


def test_kintone_tokens_per_app_from_the_configuration() -> None:
    config = parse_config(
        {
            "systems": {
                "kintone": {
                    "url": "https://k.example",
                    "app_tokens_env": {"1": "K1", "7": "K7"},
                }
            }
        },
        env={"K1": "tok-app-one", "K7": "tok-app-7a,tok-app-7b"},
    )
    adapter = config.adapters["kintone"]
    from patchassign.changes import Assign

    read = adapter.read(Assign(system="kintone", record="7:3", to="eve"))
    assert read.headers["X-Cybozu-API-Token"] == "tok-app-7a,tok-app-7b"
    assert config.scrub("x tok-app-one y tok-app-7b") == "x ******** y ********"
    assert "tok-app" not in repr(config) + repr(config.adapters)
    for bad, message in (
        ({"app_tokens_env": {"seven": "K1"}}, "app_tokens_env"),
        ({"app_tokens_env": {"2": "UNSET"}}, "UNSET is not set"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config({"systems": {"kintone": {"url": "https://k.example", **bad}}}, env={})
