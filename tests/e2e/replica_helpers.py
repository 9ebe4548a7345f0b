"""Fixtures and helpers of the replica suite (`test_replicas.py`, `test_replicas_redis_outage.py`):
real `hybrid-router serve` processes sharing one Redis, and the checks on them.

- fixtures (`rdb`, `prefix`, `sims`, `replicas`; the test modules load them with
  `pytest_plugins`): a Redis client that FAILS the test when no Redis answers, a key prefix of
  the test's own (its keys deleted at the end), simulators, and router replicas started at once
  (optionally with a monotonic clock shifted as on another host);
- the replicas' environment and policy (`store_env`, `replica_policy`);
- `chat`: one chat completion over raw HTTP, summed up in a `Result`;
- status and simulator calls, `require` (a precondition that an `xfail` cannot swallow),
  `wait_until`, and `assert_idle` / `require_idle`: no slot held or queued by any replica or
  in Redis.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from router_simulators.bedrock import BedrockSimConfig
from router_simulators.bedrock import create_app as bedrock_app
from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy

REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SLOT = "local|gpt-oss:20b"  # slot key of gpt-oss-20b on the backend named `local`
HTTP = httpx.Client(timeout=30.0, trust_env=False)
SIM_PARALLEL = 16  # the simulator's own limit: far above the policy's, so it never hides a breach


# -- fixtures ------------------------------------------------------------------------------------

def connect_redis(url: str) -> redis.Redis:
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2,
                                  socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no Redis": fail loudly
        client.close()
        pytest.fail(f"the replica tests need a real Redis at {url} ({exc!r}); start "
                    "redis-server or set HR_TEST_REDIS_URL", pytrace=False)
    return client


@pytest.fixture
def rdb() -> Iterator[redis.Redis]:
    client = connect_redis(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(rdb: redis.Redis) -> Iterator[str]:
    p = f"hre2e:{uuid.uuid4().hex}:"
    yield p
    keys = list(rdb.scan_iter(match=p + "*"))
    if keys:
        rdb.delete(*keys)


@pytest.fixture
def sims() -> Iterator[Callable[..., SimServer]]:
    started: list[SimServer] = []

    def make(ollama: OllamaSimConfig | None = None, bedrock: bool = False) -> SimServer:
        if bedrock:
            sim = SimServer(lambda: bedrock_app(BedrockSimConfig()))
        else:
            cfg = ollama or OllamaSimConfig(parallel=SIM_PARALLEL, token_delay_s=0.01)
            sim = SimServer(lambda: ollama_app(cfg))
        started.append(sim.start())
        return sim

    yield make
    for s in started:
        s.stop()


def shifted_python(tmp: Path, offset_s: int) -> str:
    """A python launcher whose CLOCK_MONOTONIC runs `offset_s` ahead (a Linux time namespace):
    a replica started with it behaves like one on another host with a longer uptime."""
    cmd = ["unshare", "-r", "-T", f"--monotonic={offset_s}", f"--boottime={offset_s}"]
    try:
        probe = subprocess.run([*cmd, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no time namespaces here ({exc!r})")
    if probe.returncode != 0:
        pytest.skip(f"no time namespaces here: {probe.stderr.decode().strip()}")
    launcher = tmp / f"python-monotonic-plus-{offset_s}"
    launcher.write_text(f'#!/bin/sh\nexec {" ".join(cmd)} "{sys.executable}" "$@"\n')
    launcher.chmod(0o755)
    return str(launcher)


@pytest.fixture
def replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             ) -> Iterator[Callable[..., list[RouterProcess]]]:
    """Start n router processes at once (in threads: each start is mostly imports)."""
    procs: list[RouterProcess] = []

    def start(policy: dict[str, Any], n: int, env: dict[str, str],
              clock_offset_s: int = 0) -> list[RouterProcess]:
        with monkeypatch.context() as m, concurrent.futures.ThreadPoolExecutor(n) as pool:
            if clock_offset_s:  # RouterProcess runs `sys.executable -m router.cli serve`
                m.setattr(sys, "executable", shifted_python(tmp_path, clock_offset_s))
            futures = [pool.submit(RouterProcess, policy, tmp_path, env) for _ in range(n)]
            errors = []
            mine = []
            for f in futures:
                try:
                    mine.append(f.result())
                except Exception as exc:  # noqa: BLE001 - reported after the others are kept
                    errors.append(exc)
        procs.extend(mine)
        if errors:
            raise errors[0]
        for p in mine:
            store = status(p)["store"]
            assert store["kind"] == "redis" and not store["degraded"], store
        return mine

    yield start
    for p in procs:
        p.stop()


def store_env(prefix: str, *, url: str = REDIS_URL, lease_s: float = 10.0,
              op_timeout_s: float = 0.5) -> dict[str, str]:
    # 0.5 s instead of the 50 ms default: on a busy 2-core CI a slow round trip would switch a
    # replica to its memory store, and these tests (except the outage one) are about Redis.
    return {"ROUTER_REDIS_URL": url, "ROUTER_REDIS_PREFIX": prefix,
            "ROUTER_REDIS_LEASE_S": str(lease_s), "ROUTER_REDIS_OP_TIMEOUT_S": str(op_timeout_s),
            "ROUTER_WATCH_POLICY": "false"}


def replica_policy(ollama_url: str, bedrock_url: str | None = None, *, parallel: int = 2,
                   wait_s: float = 30.0, probe_s: float = 0.5, **over: Any) -> dict[str, Any]:
    policy = base_policy(ollama_url, bedrock_url, **over)
    policy["backends"]["local"].update(parallel=parallel, probe_interval_s=probe_s)
    targets = ["local", "bedrock"] if bedrock_url else ["local"]
    policy["routes"] = [{"name": "default", "targets": targets, "max_queue_wait_s": wait_s}]
    return policy


# -- helpers -------------------------------------------------------------------------------------

@dataclass
class Result:
    status: int
    backend: str | None
    reason: str | None
    complete: bool  # finish_reason "stop" and, for streams, [DONE] without an in-band error
    code: str | None = None
    detail: str = ""


def chat(url: str, *, stream: bool = False, model: str = "gpt-oss-20b", text: str = "hello",
         key: str | None = None, on_first: Callable[[], None] | None = None) -> Result:
    """One chat completion over raw HTTP; `on_first` runs when the first bytes arrive."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    with HTTP.stream("POST", url + "/v1/chat/completions", json=body, headers=headers,
                     timeout=30) as r:
        raw = b""
        for piece in r.iter_raw():
            if not raw and on_first is not None:
                on_first()
            raw += piece
    backend, reason = r.headers.get("x-router-backend"), r.headers.get("x-router-reason")
    if r.status_code != 200:
        code = (orjson.loads(raw).get("error") or {}).get("code") if raw else None
        return Result(r.status_code, backend, reason, False, code, raw.decode(errors="replace"))
    if not stream:
        finish = orjson.loads(raw)["choices"][0]["finish_reason"]
        return Result(200, backend, reason, finish == "stop", detail=raw.decode())
    events = [x[6:] for x in raw.decode().split("\n") if x.startswith("data: ")]
    chunks = [orjson.loads(e) for e in events if e != "[DONE]"]
    finishes = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
    ok = bool(events) and events[-1] == "[DONE]" and "stop" in finishes and not any(
        "error" in c for c in chunks)
    return Result(200, backend, reason, ok, detail=raw.decode()[-300:])


# Sent with every status call: a policy with keys must include it as an ops key (OPS_KEY_ENTRY).
OPS_KEY = "sk-e2e-ops"
OPS_KEY_ENTRY = {"name": "e2e-ops", "sha256": hashlib.sha256(OPS_KEY.encode()).hexdigest(),
                 "ops": True}


def status(proc: RouterProcess) -> dict[str, Any]:
    return HTTP.get(proc.url + "/v1/router/status", timeout=10,  # type: ignore[no-any-return]
                    headers={"authorization": f"Bearer {OPS_KEY}"}).json()


def local_queue(proc: RouterProcess) -> dict[str, Any]:
    return status(proc)["backends"]["local"]["queues"]["gpt-oss-20b"]  # type: ignore[no-any-return]


def sim_stats(sim: SimServer) -> dict[str, Any]:
    return HTTP.get(sim.url + "/_sim/stats", timeout=5).json()  # type: ignore[no-any-return]


def sim_post(sim: SimServer, path: str, body: dict[str, Any]) -> None:
    assert HTTP.post(sim.url + path, json=body, timeout=5).status_code == 200


def require(ok: bool, what: object) -> None:
    """A precondition, or a check other than the one a known-bug xfail is about: it fails with
    `Failed`, not AssertionError, so `xfail(raises=AssertionError)` cannot swallow it."""
    if not ok:
        pytest.fail(f"unexpected: {what}")


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def ledger(rdb: redis.Redis, prefix: str) -> dict[str, list[Any]]:
    """The slot key's held/queue/qexp zsets in Redis (see redis_store.py's key layout)."""
    return {part: rdb.zrange(f"{prefix}{{{SLOT}}}:{part}", 0, -1, withscores=True)
            for part in ("held", "queue", "qexp")}


def idle_problems(procs: list[RouterProcess], rdb: redis.Redis, prefix: str) -> list[Any]:
    problems: list[Any] = []
    for p in procs:
        st = status(p)
        q, store = st["backends"]["local"]["queues"]["gpt-oss-20b"], st["store"]
        counts = (q["in_flight"], q["queued"], store["leases_held"], store["waiting"],
                  store["memory_leases_held"])
        if any(counts):
            problems.append((p.url, q, store))
    left = {part: v for part, v in ledger(rdb, prefix).items() if v}
    if left:
        problems.append(("redis", left, time.time()))
    return problems


def assert_idle(procs: list[RouterProcess], rdb: redis.Redis, prefix: str) -> None:
    """No slot held or queued, by any replica or in Redis. Polled for 0.5 s (a stream's lease
    is released just after its [DONE] goes out), which is shorter than any lease used here,
    so an unreleased lease cannot expire meanwhile and pass for a released one."""
    deadline = time.monotonic() + 0.5
    while (problems := idle_problems(procs, rdb, prefix)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not problems, problems


def require_idle(procs: list[RouterProcess], rdb: redis.Redis, prefix: str) -> None:
    try:
        assert_idle(procs, rdb, prefix)
    except AssertionError as exc:
        pytest.fail(f"slots left held: {exc}")
