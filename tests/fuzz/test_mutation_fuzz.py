"""Mutation fuzz through the in-process app (`tests/fuzz/mutations.py` builds the cases): for
every mutated body, content type and header set, the answer is below 500, an error is a JSON
body in the OpenAI shape with no traceback text, and a request that carries any private
marker never reaches a cloud backend.

`HR_FUZZ_EXAMPLES` sets the example count (default 150 in CI, a fixed sequence; `scripts/fuzz.sh`
runs 20,000 fresh ones).
The tallies are printed at the end (`-s` shows them).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import given
from starlette.testclient import TestClient

from tests.fuzz.harness import (
    Findings,
    FuzzApp,
    build_fuzz_app,
    client,
    collect_mode,
    fuzz_settings,
    response_problems,
)
from tests.fuzz.mutations import FuzzCase, fuzz_cases

TALLY: Counter[str] = Counter()
FINDINGS = Findings()


@pytest.fixture(scope="module")
def fuzz() -> Iterator[tuple[FuzzApp, TestClient]]:
    app = build_fuzz_app()
    # The router logs each unexpected error with its traceback; pytest keeps every record of
    # a test in memory, and one hypothesis test is thousands of requests (gigabytes in a long
    # run). The responses are what is checked.
    logging.disable(logging.CRITICAL)
    try:
        with client(app) as c:
            yield app, c
    finally:
        logging.disable(logging.NOTSET)
    print(f"\nmutation fuzz: {TALLY['cases']} cases, {TALLY['5xx']} 5xx, "
          f"{TALLY['bad_body']} bad bodies, {TALLY['private']} private, "
          f"{TALLY['private_on_cloud']} private on the cloud, statuses "
          f"{sorted((k, v) for k, v in TALLY.items() if k.isdigit())}")
    if collect_mode():
        print(FINDINGS.summary())
        assert FINDINGS.count == 0, "the fuzz found problems (samples above)"


@fuzz_settings(150)
@given(case=fuzz_cases())
def test_mutated_requests_fail_cleanly_and_private_stays_local(
        fuzz: tuple[FuzzApp, TestClient], case: FuzzCase) -> None:
    app, c = fuzz
    app.reset_calls()
    raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in case.headers]
    r = c.post(case.path, content=case.raw, headers=raw_headers)
    TALLY["cases"] += 1
    TALLY[str(r.status_code)] += 1
    problems = response_problems(r.status_code, r.headers, r.content, case.path)
    TALLY["5xx"] += r.status_code >= 500
    TALLY["bad_body"] += bool(problems)
    TALLY["private"] += case.private
    leaked = case.private and app.cloud_calls() > 0
    TALLY["private_on_cloud"] += leaked
    detail = (case.path, case.headers, case.mutations, case.raw[:600], r.status_code,
              r.content[:400])
    if collect_mode():
        for kind in [*problems, *(["private request reached the cloud"] if leaked else [])]:
            FINDINGS.add(f"{kind} ({r.status_code})", repr(detail))
        return
    assert not problems, (problems, *detail)
    assert not leaked, ("a private request reached the cloud", *detail)
