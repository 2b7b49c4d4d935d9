"""The Sandbox as a whole, and the ``patchassign sandbox`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from patchassign.errors import ConfigError
from patchassign.sandbox import SYSTEMS, Faults, PerscomServer, Sandbox

from .conftest import call

if TYPE_CHECKING:
    import aiohttp


async def test_starts_every_fake_on_loopback_with_distinct_ports() -> None:
    async with Sandbox(demo=2) as sb:
        described = sb.describe()
        assert list(described) == list(SYSTEMS)
        urls = [d["url"] for d in described.values()]
        assert all(u.startswith("http://127.0.0.1:") for u in urls)
        assert len(set(urls)) == len(SYSTEMS) == 6
        assert all(len(s.records) == 2 for s in sb)
        for s in sb:
            assert s.token not in repr(s)
            assert s.token not in repr(sb)
    assert all(not s.url for s in sb)


def test_refuses_non_loopback_hosts_and_unknown_systems() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        PerscomServer(host="0.0.0.0")
    with pytest.raises(ConfigError, match="unknown system"):
        Sandbox(systems=["jira"])
    with pytest.raises(ConfigError, match="invalid fault"):
        Sandbox(faults={"throttle": 5})


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"faults": Faults(throttle=2.0)}, "throttle"),  # built in Python: checked too
        ({"faults": {"perscom": Faults(burst=0)}}, "burst"),
        ({"faults": 5}, "expected Faults or a mapping"),
        ({"demo": -1}, "demo must be"),
        ({"demo": 10**9}, "demo must be"),
        ({"demo": "5"}, "demo must be"),
        ({"systems": 5}, "systems must be system names"),
        ({"systems": ["perscom", 1]}, "systems must be system names"),
        ({"records": 5}, "records must map system names"),
        ({"records": {"perscom": 5}}, "expected a list of records"),
        ({"records": {"perscom": {"id": 1}}}, "expected a list of records"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Sandbox(**kwargs)


@pytest.mark.parametrize(
    ("records", "says"),
    [
        ({"perscom": [{"id": 1}, {"user_id": 5}]}, "perscom, record 2: missing field 'id'"),
        ({"perscom": [7]}, "perscom, record 1: expected an object, got int"),
        ({"kintone": [{"id": "1"}]}, "kintone, record 1: missing field 'app'"),
        ({"findable": [{"id": None}]}, "findable, record 1: .*ids are strings"),
    ],
)
async def test_records_a_server_cannot_take_are_config_errors_and_stop_the_servers(
    records: dict[str, Any], says: str
) -> None:
    sb = Sandbox(records=records, systems=list(records))
    with pytest.raises(ConfigError, match=f"sandbox records for {says}"):
        await sb.start()
    assert all(not s.url for s in sb)  # started, then stopped again: nothing left listening


def test_the_sandbox_command_says_which_seed_record_is_wrong(tmp_path: Path) -> None:
    seed = tmp_path / "records.json"
    seed.write_text(json.dumps({"perscom": [{"user_id": 5}]}))
    proc = subprocess.run(
        [sys.executable, "-m", "patchassign", "sandbox", "--records", str(seed)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "sandbox records for perscom, record 1: missing field 'id'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_one_system_may_be_named_by_itself() -> None:
    assert list(Sandbox(systems="kintone").servers) == ["kintone"]


async def test_per_system_faults_and_seeding_from_a_file(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    seed = tmp_path / "records.json"
    seed.write_text(json.dumps({"findable": [{"id": "x1", "assigneeEmail": "ada@example.com"}]}))
    async with Sandbox.from_file(
        seed, faults={"perscom": {"throttle": 1.0}}, systems=["perscom", "findable"]
    ) as sb:
        assert sb.perscom.faults.throttle == 1.0
        assert sb.findable.faults == Faults(seed=1)
        f = sb.findable
        a = await call(
            session,
            "GET",
            f"{f.url}/assignments/x1",
            headers={"Authorization": f"Bearer {f.token}"},
        )
        assert a.body["assigneeEmail"] == "ada@example.com"
        with pytest.raises(AttributeError, match="without kintone"):
            _ = sb.kintone
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    with pytest.raises(ValueError, match="expected an object"):
        Sandbox.from_file(bad)


def test_cli_sandbox_serves_until_terminated() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "patchassign", "sandbox", "--json", "--demo", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("}"):
                break
        described = json.loads("".join(lines))
        assert set(described) == set(SYSTEMS)
        import urllib.request

        req = urllib.request.Request(
            f"{described['findable']['url']}/assignments/asg-000001",
            headers={"Authorization": f"Bearer {described['findable']['token']}"},
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.load(r)["id"] == "asg-000001"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "{nope"], "--faults is not JSON"),
        (["--faults", '{"throttle": 3}'], "invalid fault settings"),
        (["--systems", "jira"], "unknown system"),
        (["--records", "/nonexistent.json"], "cannot read sandbox records"),
    ],
)
def test_cli_sandbox_bad_options_exit_2_without_traceback(args: list[str], message: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "patchassign", "sandbox", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
