"""Schemathesis over the router's own OpenAPI document, against the in-process app with fake
backends: every generated request (valid and invalid, all phases) must get no 5xx, an error
body in the OpenAI shape with a JSON content type, nothing that looks like a traceback, and a
status, content type and body that the document declares.

`HR_FUZZ_EXAMPLES` sets the examples per operation (default 25 in CI; `scripts/fuzz.sh` runs
thousands). Tallies of every case are printed at the end of the module (`-s` shows them).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fuzz.harness import (
    BASE_URL,
    Findings,
    build_fuzz_app,
    collect_mode,
    examples,
    response_problems,
)

FUZZ = build_fuzz_app()
# The Host the app allows (loopback names); schemathesis would say `testserver`.
schema = schemathesis.openapi.from_asgi("/openapi.json", FUZZ.app, headers={"Host": "127.0.0.1"})
schema.config.generation.update(max_examples=examples(25), database="none")
TALLY: Counter[str] = Counter()
FINDINGS = Findings()
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    logging.disable(logging.CRITICAL)  # pytest would keep every log record of every case
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
    print(f"\nschemathesis: {TALLY['cases']} cases, {TALLY['5xx']} 5xx, "
          f"{TALLY['bad_error_body']} bad error bodies, {TALLY['nonconforming']} not as "
          "documented, statuses "
          f"{sorted((k, v) for k, v in TALLY.items() if k.isdigit())}")
    if collect_mode():
        print(FINDINGS.summary())
        assert FINDINGS.count == 0, "the fuzz found problems (samples above)"


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_every_input_in_shape(case: schemathesis.Case) -> None:
    response = case.call(base_url=BASE_URL)
    TALLY["cases"] += 1
    TALLY[str(response.status_code)] += 1
    headers = {k: v[0] for k, v in response.headers.items()}
    problems = response_problems(response.status_code, headers, response.content,
                                 case.path)
    if response.status_code >= 500:
        TALLY["5xx"] += 1
    if problems:
        TALLY["bad_error_body"] += 1
    if collect_mode():
        sample = f"{case.as_curl_command()}\n-> {response.status_code} {response.content[:300]!r}"
        for problem in problems:
            FINDINGS.add(f"{problem} ({case.operation.label})", sample)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # noqa: BLE001 - a FailureGroup of schemathesis failures
            TALLY["nonconforming"] += 1
            FINDINGS.add(f"{str(exc).splitlines()[2:3]} ({case.operation.label})", sample)
        return
    assert not problems, (problems, case.as_curl_command(), response.content[:500])
    case.validate_response(response, checks=CHECKS)
