"""Router replicas when their shared Redis goes away and comes back: each test starts a
redis-server of its own (`own_redis`) and stops it mid-load.

- a Redis stopped and restarted mid-load loses no request and leaks no slot (the replicas fall
  back to their memory stores meanwhile, and return to Redis);
- regressions of bugs this file found (now fixed): a replica over-admitting while Redis is away
  or just back (the GPU limit holds across the outage), and a second fallback right after Redis
  returns (one outage, one switch).

The fixtures and helpers are in `replica_helpers.py`. Every test needs a real Redis
(127.0.0.1:6379, or HR_TEST_REDIS_URL, for `rdb`) and `redis-server` on PATH, and FAILS without
them. Each test uses its own key prefix and deletes its keys at the end.
"""

from __future__ import annotations

import concurrent.futures
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from router_simulators.ollama import OllamaSimConfig
from router_simulators.server import SimServer, free_port
from tests.conftest import RouterProcess
from tests.e2e.replica_helpers import (
    SIM_PARALLEL,
    Result,
    assert_idle,
    chat,
    connect_redis,
    replica_policy,
    require,
    require_idle,
    sim_post,
    sim_stats,
    status,
    store_env,
    wait_until,
)

pytest_plugins = ["tests.e2e.replica_helpers"]  # its fixtures: rdb, prefix, sims, replicas
pytestmark = [pytest.mark.redis, pytest.mark.slow]


# -- 1. Redis stopped and restarted mid-load -----------------------------------------------------

class RedisServer:
    """A redis-server of this test's own on a free port: stop() is an outage, start() recovery."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--daemonize", "no"], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("could not start redis-server: " + self.log.read_text())
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path, rdb: redis.Redis) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis.log")
    server.start()
    yield server
    server.stop()


def test_redis_restart_mid_load_loses_nothing_and_leaks_no_slot(
        own_redis: RedisServer, prefix: str, sims: Callable[..., SimServer],
        replicas: Callable[..., list[RouterProcess]]) -> None:
    ollama = sims()
    procs = replicas(replica_policy(ollama.url, parallel=2), 2,
                     store_env(prefix, url=own_redis.url, lease_s=2.0))
    stop_load = threading.Event()
    results: list[Result] = []
    degraded_seen: dict[str, set[bool]] = {p.url: set() for p in procs}

    def worker(w: int) -> None:
        i = 0
        while not stop_load.is_set():
            results.append(chat(procs[(w + i) % 2].url, stream=(w + i) % 2 == 0,
                                text=f"outage {w} {i}"))
            i += 1

    def watch(until: threading.Event) -> None:
        while not until.is_set():
            for p in procs:
                degraded_seen[p.url].add(bool(status(p)["store"]["degraded"]))
            time.sleep(0.1)

    watching = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        load = [pool.submit(worker, w) for w in range(8)]
        time.sleep(2.5)
        outage_start = len(results)
        own_redis.stop()
        watcher = pool.submit(watch, watching)
        time.sleep(2.5)
        watching.set()
        watcher.result()
        during_outage = len(results) - outage_start
        own_redis.start()
        wait_until(lambda: not any(status(p)["store"]["degraded"] for p in procs), 5,
                   "both replicas to return to Redis")
        time.sleep(2.0)  # load on the restarted Redis
        stop_load.set()
        for f in load:
            f.result()
    bad = [r for r in results if r.status != 200 or not r.complete]
    assert not bad, bad[:3]
    assert during_outage > 0 and len(results) > 40, (during_outage, len(results))
    for url, seen in degraded_seen.items():
        assert True in seen, f"{url} never showed degraded during the outage"
    # Back on Redis at the end. Polled: right after a restart a replica may fall back once
    # more for a second (the stale-connection bug, see the last test).
    wait_until(lambda: not any(status(p)["store"]["degraded"] for p in procs), 5,
               "both replicas to be back on Redis after the load")
    fallbacks = [status(p)["store"]["fallbacks_total"] for p in procs]
    assert all(n >= 1 for n in fallbacks), fallbacks
    for p in procs:  # ... and the metrics say so too
        metrics = httpx.get(p.url + "/metrics", timeout=5).text
        assert "router_state_store_fallbacks_total 1.0" in metrics or (
            "router_state_store_fallbacks_total 2.0" in metrics), metrics[-2000:]
    rdb = connect_redis(own_redis.url)
    try:
        assert_idle(procs, rdb, prefix)
    finally:
        rdb.close()
    print(f"\n{len(results)} requests, {during_outage} completed during the outage, "
          f"fallbacks per replica {fallbacks}, simulator max_in_flight "
          f"{sim_stats(ollama)['max_in_flight']} (policy parallel 2)")


# -- 2. the GPU limit while the shared store is away ---------------------------------------------

def test_one_replica_keeps_its_gpu_limit_across_a_redis_outage(
        own_redis: RedisServer, prefix: str, sims: Callable[..., SimServer],
        replicas: Callable[..., list[RouterProcess]]) -> None:
    ollama = sims(OllamaSimConfig(parallel=SIM_PARALLEL, token_delay_s=0.12))  # ~2 s streams
    (proc,) = replicas(replica_policy(ollama.url, parallel=2), 1,
                       store_env(prefix, url=own_redis.url, lease_s=2.0))
    pool = concurrent.futures.ThreadPoolExecutor(4)
    peaks: dict[str, int] = {}

    def two_long_then_two_quick(phase: str, switch: Callable[[], None]) -> None:
        sim_post(ollama, "/_sim/reset", {})
        sim_post(ollama, "/_sim/config", {"token_delay_s": 0.12})
        started = [threading.Event(), threading.Event()]
        long = [pool.submit(chat, proc.url, stream=True, text=f"{phase} long {i}",
                            on_first=started[i].set) for i in range(2)]
        require(all(e.wait(10) for e in started), f"{phase}: the long streams did not start")
        switch()
        sim_post(ollama, "/_sim/config", {"token_delay_s": 0.01})
        quick = [pool.submit(chat, proc.url, text=f"{phase} quick {i}") for i in range(2)]
        outs = [f.result(timeout=30) for f in long + quick]
        require(all(o.status == 200 and o.complete for o in outs), (phase, outs))
        peaks[phase] = int(sim_stats(ollama)["max_in_flight"])

    def outage() -> None:
        own_redis.stop()
        wait_until(lambda: status(proc)["store"]["degraded"], 5, "the replica to degrade")

    def recovery() -> None:
        own_redis.start()
        wait_until(lambda: not status(proc)["store"]["degraded"], 5, "the replica to recover")

    try:
        two_long_then_two_quick("outage", outage)  # 2 on Redis leases, then Redis goes away
        two_long_then_two_quick("recovery", recovery)  # 2 on memory leases, then Redis is back
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    rdb = connect_redis(own_redis.url)
    try:
        require_idle([proc], rdb, prefix)
    finally:
        rdb.close()
    print(f"\nsimulator max_in_flight with parallel 2, one replica: {peaks}")
    assert peaks == {"outage": 2, "recovery": 2}, peaks


# -- 3. one outage, one switch -----------------------------------------------------------------

def test_a_redis_restart_is_one_fallback_not_two(
        own_redis: RedisServer, prefix: str, sims: Callable[..., SimServer],
        replicas: Callable[..., list[RouterProcess]]) -> None:
    ollama = sims()
    (proc,) = replicas(replica_policy(ollama.url, parallel=2), 1,
                       store_env(prefix, url=own_redis.url, lease_s=2.0))

    def burst(tag: str) -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(lambda i: chat(proc.url, stream=i % 2 == 0,
                                                text=f"{tag} {i}"), range(16)))
        require(all(o.status == 200 and o.complete for o in outs), (tag, outs))

    burst("before")  # concurrent requests leave several connections in the replica's pool
    rdb = connect_redis(own_redis.url)
    try:
        pooled = len(rdb.client_list()) - 1  # the replica's connections (pub/sub included)
    finally:
        rdb.close()
    require(pooled >= 3, f"only {pooled} pooled connections for the outage to leave stale")
    own_redis.stop()
    wait_until(lambda: status(proc)["store"]["degraded"], 5, "the replica to degrade")
    own_redis.start()
    wait_until(lambda: not status(proc)["store"]["degraded"], 5, "the replica to recover")
    burst("after")
    store = status(proc)["store"]
    assert (store["degraded"], store["fallbacks_total"]) == (False, 1), store
