#!/usr/bin/env bash
# The long fuzz run: the mutation fuzz (20,000 fresh cases by default) and schemathesis over
# /openapi.json (1,000 examples per operation, every phase), both against the in-process app
# with fake backends. Prints each fuzzer's tallies: cases, 5xx, bad error bodies, private
# requests that reached the cloud, and one sample request per kind of problem. Exits non-zero
# when any was found. About 10 minutes on 2 cores.
#   MUTATION_EXAMPLES=20000 SCHEMA_EXAMPLES=1000 scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HR_FUZZ_RANDOM=1 HR_FUZZ_COLLECT=1  # fresh cases; tally every problem, do not stop
rc=0
HR_FUZZ_EXAMPLES=${MUTATION_EXAMPLES:-20000} .venv/bin/python -m pytest -q -p no:cacheprovider \
  -s -o timeout=1800 tests/fuzz/test_mutation_fuzz.py || rc=$?
HR_FUZZ_EXAMPLES=${SCHEMA_EXAMPLES:-1000} .venv/bin/python -m pytest -q -p no:cacheprovider \
  -s -o timeout=1800 tests/fuzz/test_schemathesis.py || rc=$?
exit "$rc"
