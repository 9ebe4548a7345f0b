#!/usr/bin/env bash
# Install hybrid-router with its dev extra into .venv and run the whole test suite.
# Starts a local Redis (127.0.0.1:6379) when none answers; the Redis tests fail without one.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'

redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG
  else
    .venv/bin/python -c "import redis,sys; sys.exit(0 if redis.Redis(port=6379,socket_timeout=1).ping() else 1)" 2>/dev/null
  fi
}
if ! redis_up; then
  if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null 2>&1 || true
  fi
  if command -v redis-server >/dev/null 2>&1; then
    mkdir -p /tmp/hybrid-router-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/hybrid-router-redis --logfile /tmp/hybrid-router-redis/redis.log
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  fi
  redis_up || echo "warning: no Redis at 127.0.0.1:6379; the Redis tests will fail" >&2
fi

# The Node client tests (tests/node: the ollama npm package, the AI SDK's Ollama provider) at the
# versions in tests/node/package-lock.json. `npm ci` runs only when the lock changed since the
# last install (a stamp in node_modules); node 20+ is expected, Debian's is the fallback.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq nodejs npm) >/dev/null 2>&1 || true
  fi
fi
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  lock_sum=$(sha256sum tests/node/package-lock.json | cut -d' ' -f1)
  stamp=tests/node/node_modules/.hybrid-router-lock.sha256
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
    npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
    echo "$lock_sum" > "$stamp"
  fi
else
  echo "warning: no node/npm; the Node client tests will skip (and fail under CI=true)" >&2
fi

# The dashboard's browser test drives Debian's Chromium through Playwright (never
# `playwright install`: it downloads a browser). Install the package when it is missing.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1 || true
fi
command -v chromium >/dev/null 2>&1 || echo "warning: no chromium; the browser test skips (fails under CI=true)" >&2

# Static checks first: lint, types, and the layer contract (pyproject.toml [tool.importlinter]).
.venv/bin/ruff check router router_simulators router_demo tests benchmarks
.venv/bin/mypy
.venv/bin/lint-imports --no-cache

export HR_REQUIRE_REDIS=1
# Examples of the privacy property tests (tests/property): 2,000 for the main invariant, 400 and
# 100 for the others. Where a private request goes turns on a few discrete draws (which of 5
# sources marks it private, whether a cloud candidate is slipped in first, which of 9 outcomes
# each attempt gets, 1-3 attempts): about 270 combinations. A combination drawn 1 time in 270 is
# missed by 2,000 random examples with probability (1 - 1/270)^2000 < 0.1%, and each run draws
# new ones (a clean clone has no example database). 10,000 cost about 2.5 min of a 2-core run;
# set HR_PRIVACY_EXAMPLES=10000 for a deeper search.
export HR_PRIVACY_EXAMPLES=${HR_PRIVACY_EXAMPLES:-2000}
# Two pytest-xdist workers (HR_TEST_WORKERS; 0 = one process): a test module stays on one
# worker, and the fault suite's modules share one (the groups are in tests/conftest.py).
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${HR_TEST_WORKERS:-2}" --dist loadgroup "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "no tests ran" >&2
  exit 1
fi
exit "$rc"
