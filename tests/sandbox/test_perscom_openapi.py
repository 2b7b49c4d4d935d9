"""The PERSCOM fake held to PERSCOM's own OpenAPI file, with schemathesis.

Every operation the fake serves is fuzzed with requests the file says are valid and with
requests it says are not, and every answer is checked against the file: documented status,
content type, response schema and headers, no server error, authentication enforced.
Where the real server does something the file does not say, the fake follows the server
and the test says so (each allowance below names its source); docs/systems/perscom.md
lists them under "Documented and assumed".

``PERSCOM_OPENAPI_EXAMPLES=600`` runs more examples per operation (40 by default; a run of
600 each found nothing more on 2026-11-24).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core import NotSet
from schemathesis.core.result import Ok

from patchassign.sandbox.perscom import PerscomServer
from tests.helpers import VENDOR_SPECS

SPEC = VENDOR_SPECS / "perscom-assignment-records.openapi.json"
if not SPEC.exists():  # the vendors' files live beside the repository (CI has them)
    pytest.skip(f"PERSCOM's OpenAPI file not found at {SPEC}", allow_module_level=True)
RAW = json.loads(SPEC.read_text())
SCHEMA = schemathesis.openapi.from_dict(RAW)
#: The body of a create, an update and each resource of a batch update.
RECORD = RAW["components"]["schemas"]["AssignmentRecord"]
TOKEN = "schemathesis-token"
RECORDS = 40

#: What patchassign sends and the fake therefore serves.
SERVED = [
    "GET /{version}/assignment-records/{assignment_record}",
    "PATCH /{version}/assignment-records/{assignment_record}",
    "PATCH /{version}/assignment-records/batch",
    "POST /{version}/assignment-records",
    "GET /{version}/assignment-records",
]
#: Deliberately not served: patchassign never deletes records or creates them in batches.
#: The fake answers these 405 (tested below) instead of pretending.
NOT_SERVED = [
    "DELETE /{version}/assignment-records/{assignment_record}",
    "POST /{version}/assignment-records/batch",
    "DELETE /{version}/assignment-records/batch",
]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
    missing_required_header,
]
EXAMPLES = settings(
    max_examples=int(os.environ.get("PERSCOM_OPENAPI_EXAMPLES", "40")),
    derandomize=True,  # the same requests in every run: CI is reproducible
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def perscom() -> Iterator[PerscomServer]:
    """The fake on 127.0.0.1, in a thread of its own: schemathesis calls synchronously."""
    loop = asyncio.new_event_loop()
    server = PerscomServer(token=TOKEN)
    server.seed([PerscomServer.demo_record(i) for i in range(1, RECORDS + 1)])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def refused_for_a_documented_reason(case: Any, response: Any) -> bool:
    """A schema-valid request the real server refuses all the same (422, Laravel's
    ``error.errors``), for a rule the OpenAPI file cannot state:

    - an id that names nothing (``exists:`` rules on ``user_id``, ``unit_id``, ...);
    - ``author_id: null``, which the file marks nullable and the server refuses (its rule
      is ``integer``, not ``nullable``: Laravel's "must be an integer");
    - a create without a body, or a batch without ``resources``: the file does not mark
      the body (or ``resources``) required, the server requires ``user_id`` (which the
      file's schema requires) and ``resources`` (Orion), or a batch whose keys are not
      record ids (the file names its one property ``{key}``).
    """
    if response.status_code != 422:
        return False
    errors: dict[str, list[str]] = response.json()["error"]["errors"]
    for field, messages in errors.items():
        name = field.rsplit(".", 1)[-1]
        for message in messages:
            if message.startswith("The selected ") and message.endswith(" is invalid."):
                continue  # exists:
            if (
                name == "author_id"
                and message.endswith("must be an integer.")
                and null_author(case)
            ):
                continue
            if field == "resources" or (field == "user_id" and "required" in message):
                continue  # no body: the file does not mark the body required
            return False
    return True


def violations(value: Any, schema: dict[str, Any] = RECORD) -> list[str]:
    """How a body breaks the file's ``AssignmentRecord`` schema (OpenAPI 3.0: ``nullable``
    beside ``type``; an integer is not a boolean). The oracle for what must be refused,
    read from the file, not from the fake."""
    if not isinstance(value, dict):
        return [f"not an object: {value!r:.40}"]
    out = [f"{name} missing" for name in schema.get("required", []) if name not in value]
    for name, rule in schema["properties"].items():
        if name not in value:
            continue
        got = value[name]
        if got is None:
            if not rule.get("nullable"):
                out.append(f"{name} is null")
            continue
        kind = {"integer": int, "string": str}[rule["type"]]
        if type(got) is not kind or ("enum" in rule and got not in rule["enum"]):
            out.append(f"{name}: {got!r:.40}")
    return out


def body_violations(label: str, case: Any) -> list[str]:
    body = {} if isinstance(case.body, NotSet) else case.body
    if label.endswith("/batch"):
        resources = body.get("resources") if isinstance(body, dict) else None
        if not isinstance(resources, dict):
            return [f"resources: {resources!r:.40}"]
        return [f"{key}: {v}" for key, one in resources.items() for v in violations(one)]
    return violations(body)


def check_bodies(label: str, case: Any, response: Any) -> None:
    """A write whose body breaks the file's schema is refused (422, nothing written); one
    that keeps it is accepted, or refused only for a rule the file cannot state."""
    if case.method.upper() == "GET" or response.status_code in (401, 404, 405):
        return  # no body; a (negative) credential refused; no record (a documented 404)
    broken = body_violations(label, case)
    if broken:
        assert response.status_code == 422, (broken, response.status_code, response.text)
    elif response.status_code >= 400:
        assert refused_for_a_documented_reason(case, response), (
            response.status_code,
            response.text,
        )


def null_author(case: Any) -> bool:
    body = case.body if isinstance(case.body, dict) else {}
    if "author_id" in body:
        return body["author_id"] is None
    resources = body.get("resources")
    return isinstance(resources, dict) and any(
        isinstance(r, dict) and "author_id" in r and r["author_id"] is None
        for r in resources.values()
    )


def operation(label: str) -> Any:
    return SCHEMA.find_operation_by_label(label)


@pytest.mark.parametrize("label", SERVED)
def test_valid_requests_get_documented_answers(
    label: str, perscom: PerscomServer, http: requests.Session
) -> None:
    op = operation(label)

    @EXAMPLES
    @given(case=op.as_strategy())
    def check(case: Any) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        response = case.call(base_url=perscom.url, session=http, headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)
        check_bodies(label, case, response)

    check()


@pytest.mark.parametrize("label", SERVED)
def test_invalid_requests_are_refused_with_documented_answers(
    label: str, perscom: PerscomServer, http: requests.Session
) -> None:
    """Invalid bodies are refused by the oracle above. schemathesis's own
    ``negative_data_rejection`` is not used: Laravel does not validate query strings (an
    unknown ``include`` is filtered out, ``with_trashed=-3`` is not refused) and reads a
    body that is not JSON as no input, so the real server answers such requests by the
    body's rules too, not with a 4xx for the query."""
    op = operation(label)

    @EXAMPLES
    @given(case=op.as_strategy(GenerationMode.NEGATIVE))
    def check(case: Any) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        response = case.call(base_url=perscom.url, session=http, headers=headers)
        version = case.path_parameters.get("version")
        if response.status_code == 404 and version not in ("v1", "v2"):
            # A path that names no route is 404 on any server; the file documents 404
            # only where a record is named.
            assert response.json()["error"]["type"] == "NotFoundHttpException"
            return
        case.validate_response(response, checks=CHECKS, headers=headers)
        check_bodies(label, case, response)

    check()


@pytest.mark.parametrize("label", NOT_SERVED)
def test_operations_not_served_say_so(
    label: str, perscom: PerscomServer, http: requests.Session
) -> None:
    op = operation(label)
    case = op.Case(
        path_parameters={"version": "v2", "assignment_record": 1},
        body={},
        media_type="application/json",
    )
    response = case.call(
        base_url=perscom.url, session=http, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 405
    assert response.json()["error"]["type"] == "MethodNotAllowedHttpException"


def test_the_spec_covers_every_operation() -> None:
    """Nothing in the file is left out of the two lists above unnoticed."""
    labels = set()
    for result in SCHEMA.get_all_operations():
        assert isinstance(result, Ok), result  # every operation in the file is usable
        labels.add(result.ok().label)
    assert labels == set(SERVED) | set(NOT_SERVED)
