"""`hybrid-router serve --workers 2`: two worker processes on one port, sharing Redis state.

A real `serve --workers 2` process (Redis state, a key prefix of the test's own) in front of
the Ollama simulator on loopback:

- it answers on its one port, and both workers are live replicas in the Redis registry, each a
  child of the serve process;
- the two workers share one slot ledger: concurrent requests never put more than the policy's
  `parallel` on the simulator (whose own limit is far higher);
- SIGTERM drains: a stream in flight finishes with `[DONE]`, the command exits 0 and no worker
  is left behind.

Needs a real Redis (127.0.0.1:6379 or HR_TEST_REDIS_URL) and FAILS without one, like the replica
suite whose fixtures and helpers it reuses (`replica_helpers.py`).
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from router_simulators.ollama import OllamaSimConfig
from router_simulators.server import SimServer, free_port
from tests.conftest import AWS_ENV
from tests.e2e.replica_helpers import (
    HTTP,
    chat,
    replica_policy,
    sim_post,
    sim_stats,
    store_env,
    wait_until,
)

pytest_plugins = ["tests.e2e.replica_helpers"]  # its fixtures: rdb, prefix, sims
pytestmark = [pytest.mark.redis, pytest.mark.slow]


class WorkersProcess:
    """`hybrid-router serve --workers N` in a child process on a free loopback port."""

    def __init__(self, policy: dict[str, object], tmp: Path, env: dict[str, str],
                 workers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        policy_path = tmp / f"policy-{self.port}.yaml"
        policy_path.write_text(yaml.safe_dump(policy))
        self.log = tmp / f"router-{self.port}.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router.cli", "serve", "--workers", str(workers),
             "--policy", str(policy_path), "--port", str(self.port)],
            env={**os.environ, **AWS_ENV, "ROUTER_LOG_LEVEL": "info", **env},
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 40.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("router exited: " + self.log.read_text())
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("router did not start: " + self.log.read_text())
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def serve_workers(tmp_path: Path) -> Iterator[Callable[..., WorkersProcess]]:
    started: list[WorkersProcess] = []

    def start(policy: dict[str, object], env: dict[str, str], workers: int = 2,
              ) -> WorkersProcess:
        p = WorkersProcess(policy, tmp_path, env, workers)
        started.append(p)
        p.wait_ready()
        return p

    yield start
    for p in started:
        p.stop()


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def worker_pids(rdb: redis.Redis, prefix: str) -> set[int]:
    """Pids of the replicas in the Redis registry (default ids are hostname:pid)."""
    return {int(str(k).rsplit(":", 1)[1]) for k in rdb.scan_iter(match=prefix + "replica:*")}


def test_two_workers_share_one_port_one_ledger_and_drain_on_sigterm(
        rdb: redis.Redis, prefix: str, sims: Callable[..., SimServer],
        serve_workers: Callable[..., WorkersProcess]) -> None:
    ollama = sims(OllamaSimConfig(parallel=16, token_delay_s=0.01))
    router = serve_workers(replica_policy(ollama.url, parallel=2), store_env(prefix))

    # Both workers are live replicas on the shared store, and both are children of `serve`.
    wait_until(lambda: len(worker_pids(rdb, prefix)) == 2, 10, "two replicas in Redis")
    pids = worker_pids(rdb, prefix)
    assert {parent_pid(p) for p in pids} == {router.proc.pid}, pids
    store = HTTP.get(router.url + "/v1/router/status", timeout=10).json()["store"]
    assert store["kind"] == "redis" and not store["degraded"], store

    # One ledger for both workers: never more than `parallel` requests on the simulator.
    sim_post(ollama, "/_sim/reset", {})

    def one(i: int) -> bool:
        # A fresh connection per request, so the kernel spreads them over both workers.
        body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": f"w {i}"}]}
        r = httpx.post(router.url + "/v1/chat/completions", json=body, timeout=30)
        return r.status_code == 200 and r.headers.get("x-router-backend") == "local"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one, range(24)))
    stats = sim_stats(ollama)
    assert stats["completed"] == 24, stats
    assert stats["max_in_flight"] == 2, stats

    # SIGTERM while a stream runs: it finishes, the command exits 0, no worker is left.
    streaming = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(chat, router.url, stream=True, text="drain me",
                              on_first=streaming.set)
        assert streaming.wait(10), "the stream did not start"
        router.proc.send_signal(signal.SIGTERM)
        still_running = not running.done()  # ~20 tokens at 10 ms: the signal came mid-stream
        result = running.result(timeout=30)
    assert still_running
    assert result.status == 200 and result.complete, result
    assert router.proc.wait(30) == 0, router.log.read_text()
    wait_until(lambda: all(parent_pid(p) is None for p in pids), 5, "workers gone")
