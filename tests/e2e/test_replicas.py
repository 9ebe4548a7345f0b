"""Several router replicas sharing one Redis (issue "Several router replicas sharing one set of
GPUs", item 5): real `hybrid-router serve` processes on one Redis and one Ollama simulator.

- the shared capacity ledger never lets the replicas together exceed the GPU's `parallel`
  (measured on the simulator, whose own limit is set far higher so it cannot hide a breach);
- a replica killed with SIGKILL while holding the only slot gives it back within the lease;
- a breaker opened on one replica is honoured by another that has sent nothing;
- a daily spend cap (per backend and per key) spent on one replica refuses on the others;
- the Redis round trips one request costs on the request path (printed, bounded);
- a regression of a bug this file found (now fixed): a breaker shared by hosts whose clocks
  differ.

Redis going away and coming back is tested in `test_replicas_redis_outage.py`; the fixtures and
helpers of both are in `replica_helpers.py`. Every test needs a real Redis (127.0.0.1:6379, or
HR_TEST_REDIS_URL) and FAILS without one. Each test uses its own key prefix and deletes its keys
at the end.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
import redis
from openai import OpenAI

from router_simulators.ollama import OllamaSimConfig
from router_simulators.server import SimServer
from tests.conftest import RouterProcess
from tests.e2e.replica_helpers import (
    OPS_KEY_ENTRY,
    SIM_PARALLEL,
    assert_idle,
    chat,
    local_queue,
    replica_policy,
    require,
    sim_post,
    sim_stats,
    status,
    store_env,
    wait_until,
)

pytest_plugins = ["tests.e2e.replica_helpers"]  # its fixtures: rdb, prefix, sims, replicas
pytestmark = [pytest.mark.redis, pytest.mark.slow]


# -- 1. the shared ledger caps in-flight requests across replicas ---------------------------------

def test_three_replicas_never_exceed_the_gpu_parallel(
        rdb: redis.Redis, prefix: str, sims: Callable[..., SimServer],
        replicas: Callable[..., list[RouterProcess]]) -> None:
    ollama = sims()
    procs = replicas(replica_policy(ollama.url, parallel=2), 3, store_env(prefix))
    sim_post(ollama, "/_sim/reset", {})
    clients = [OpenAI(base_url=p.url + "/v1", api_key="x", max_retries=0, timeout=60)
               for p in procs]

    def one(i: int) -> tuple[int, str, str | None, str]:
        client = clients[i % 3]
        messages: Any = [{"role": "user", "content": f"replica load {i}"}]
        if i % 3 == 1:
            with client.chat.completions.with_streaming_response.create(
                    model="gpt-oss-20b", messages=messages, stream=True) as resp:
                text, finish = "", None
                for chunk in resp.parse():
                    if chunk.choices:
                        text += chunk.choices[0].delta.content or ""
                        finish = chunk.choices[0].finish_reason or finish
                return i, resp.headers["x-router-backend"], finish, text
        raw = client.chat.completions.with_raw_response.create(model="gpt-oss-20b",
                                                               messages=messages)
        done = raw.parse()
        return (i, raw.headers["x-router-backend"], done.choices[0].finish_reason,
                done.choices[0].message.content or "")

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(30)))
    assert all(r[1] == "local" and r[2] == "stop" and r[3] for r in results), results
    stats = sim_stats(ollama)
    assert stats["completed"] == 30, stats
    assert stats["max_in_flight"] == 2, stats  # never more; and the load did reach 2
    assert_idle(procs, rdb, prefix)
    for p in procs:
        assert status(p)["store"]["fallbacks_total"] == 0  # it was Redis all along


# -- 2. a replica killed mid-request gives its slot back within the lease -----------------------

def test_killed_replica_frees_its_slot_within_the_lease(
        rdb: redis.Redis, prefix: str, sims: Callable[..., SimServer],
        replicas: Callable[..., list[RouterProcess]]) -> None:
    lease_s = 1.0
    ollama = sims(OllamaSimConfig(parallel=4, token_delay_s=0.4))  # a ~7 s stream
    a, b = replicas(replica_policy(ollama.url, parallel=1), 2,
                    store_env(prefix, lease_s=lease_s))
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        streaming = threading.Event()
        held = pool.submit(chat, a.url, stream=True, text="slow", on_first=streaming.set)
        assert streaming.wait(10), "replica A's stream did not start"
        assert local_queue(b)["in_flight"] == 1  # B sees A's lease through Redis
        sim_post(ollama, "/_sim/config", {"token_delay_s": 0.01})  # B's answer is quick
        queued = pool.submit(chat, b.url, text="queued behind A")
        wait_until(lambda: local_queue(b)["queued"] == 1, 5, "B's request to queue")
        assert not queued.done()
        killed_at = time.monotonic()
        a.proc.kill()  # SIGKILL: no release, no shutdown; only the lease expiry frees the slot
        result = queued.result(timeout=lease_s + 10)
        served_after = time.monotonic() - killed_at
        with pytest.raises(httpx.HTTPError):
            held.result(timeout=5)  # A's client lost its connection
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    print(f"\nqueued request served {served_after:.2f}s after the holder was killed "
          f"(lease {lease_s}s)")
    assert result.status == 200 and result.backend == "local" and result.complete, result
    assert served_after < lease_s + 3, served_after
    assert sim_stats(ollama)["requests"] == 2
    assert_idle([b], rdb, prefix)


# -- 3. a breaker opened on one replica is honoured by another -----------------------------------

OTHER_HOST = 1_000_000  # B's monotonic clock runs 11.6 days ahead of A's


@pytest.mark.parametrize("b_clock_offset_s", [
    pytest.param(0, id="same-host"),
    pytest.param(OTHER_HOST, id="other-host-clock"),
])
def test_breaker_opened_on_one_replica_is_honoured_by_another(
        b_clock_offset_s: int, rdb: redis.Redis, prefix: str, sims: Callable[..., SimServer],
        replicas: Callable[..., list[RouterProcess]]) -> None:
    ollama, bedrock = sims(), sims(bedrock=True)
    # Probes answer (faults hit chat only) and would half-open the breaker: probe rarely.
    policy = replica_policy(ollama.url, bedrock.url, probe_s=60,
                            circuit={"failure_threshold": 2, "open_for_s": 30,
                                     "local_open_for_s": 30})
    if b_clock_offset_s:
        (a,) = replicas(policy, 1, store_env(prefix))
        (b,) = replicas(policy, 1, store_env(prefix), clock_offset_s=b_clock_offset_s)
    else:
        a, b = replicas(policy, 2, store_env(prefix))
    sim_post(ollama, "/_sim/faults", {"faults": [{"kind": "status", "status": 500,
                                                  "times": -1}]})
    for _ in range(6):
        out = chat(a.url)
        require(out.status == 200 and out.complete and out.backend == "bedrock", out)
        if status(a)["backends"]["local"]["breaker"] == "open":
            break
    require(status(a)["backends"]["local"]["breaker"] == "open", "A's breaker did not open")
    tried = sim_stats(ollama)["requests"]
    require(tried >= 2, tried)
    out = chat(b.url)  # B has sent nothing yet
    require(out.status == 200 and out.complete, out)
    assert (out.backend, out.reason) == ("bedrock", "local_unhealthy"), out
    assert sim_stats(ollama)["requests"] == tried  # B did not try local
    assert status(b)["backends"]["local"]["breaker"] == "open"


# -- 4. the daily spend cap holds across replicas -----------------------------------------------

def test_spend_caps_hold_across_replicas(
        rdb: redis.Redis, prefix: str, sims: Callable[..., SimServer],
        replicas: Callable[..., list[RouterProcess]]) -> None:
    ollama, bedrock = sims(), sims(bedrock=True)
    price = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}  # 1 token = 0.001 USD
    backend_budget = 0.1
    keys = [{"name": "capped", "sha256": hashlib.sha256(b"sk-capped").hexdigest(),
             "daily_budget_usd": 1e-9},
            {"name": "team", "sha256": hashlib.sha256(b"sk-team").hexdigest()}, OPS_KEY_ENTRY]
    policy = replica_policy(ollama.url, bedrock.url, keys=keys)
    policy["backends"]["bedrock"].update(price=price, daily_budget_usd=backend_budget)
    a, b = replicas(policy, 2, store_env(prefix))
    ca, cb = (OpenAI(base_url=p.url + "/v1", api_key=k, max_retries=0, timeout=30)
              for p, k in ((a, "sk-capped"), (b, "sk-capped")))
    user: Any = [{"role": "user", "content": "a"}]

    def refused(client: OpenAI) -> None:
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="gpt-oss-120b", messages=user)
        body = info.value.body
        assert isinstance(body, dict) and body["code"] == "budget_exhausted", body

    # Per key: gpt-oss-120b cannot fit the 24 GB card, so it always goes to Bedrock.
    raw = ca.chat.completions.with_raw_response.create(model="gpt-oss-120b", messages=user)
    assert raw.headers["x-router-backend"] == "bedrock"
    usage = raw.parse().usage
    assert usage is not None
    one_request_usd = (usage.prompt_tokens + usage.completion_tokens) * 0.001
    refused(ca)
    refused(cb)  # B has spent nothing for this key
    # Per backend: spend on B until the Bedrock budget is gone; A, whose own spend (one
    # request) is below the budget, then refuses too.
    assert one_request_usd < backend_budget
    served = 0
    for _ in range(30):
        out = chat(b.url, model="gpt-oss-120b", key="sk-team")
        if out.status == 429:
            break
        assert out.status == 200 and out.backend == "bedrock", out
        served += 1
    assert out.code == "budget_exhausted" and served >= 1, (served, out)
    out = chat(a.url, model="gpt-oss-120b", key="sk-team")
    assert (out.status, out.code) == (429, "budget_exhausted"), out
    day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert float(rdb.get(f"{prefix}spend:{day}:backend:bedrock") or 0) >= backend_budget


# -- 5. Redis round trips per request -----------------------------------------------------------

def test_redis_round_trips_per_request(
        rdb: redis.Redis, prefix: str, sims: Callable[..., SimServer],
        replicas: Callable[..., list[RouterProcess]]) -> None:
    """One Redis round trip on a local request's path (the snapshot with its claim); the
    release and the service-time sample go in the background, after the response."""
    ollama = sims(OllamaSimConfig(parallel=SIM_PARALLEL, token_delay_s=0.0))
    (proc,) = replicas(replica_policy(ollama.url), 1, store_env(prefix))
    n = 10

    def read() -> tuple[int, int]:
        store = status(proc)["store"]
        return int(store["round_trips"]), int(store["background_round_trips"])

    def status_cost() -> int:
        """What one status call adds to the request-path count (its own snapshot)."""
        first, second = read()[0], read()[0]
        return second - first

    chat(proc.url)  # the first request also loads the scripts (background round trips)
    own = status_cost()
    per: dict[str, list[int]] = {}
    background: dict[str, int] = {}
    for stream in (False, True):
        kind = "stream" if stream else "non-stream"
        start = last = read()
        for i in range(n):
            out = chat(proc.url, stream=stream, text=f"count {i}")
            assert out.status == 200 and out.backend == "local" and out.complete, out
            now = read()
            per.setdefault(kind, []).append(now[0] - last[0] - own)
            last = now
        background[kind] = last[1] - start[1]
    print(f"\nRedis round trips on each local request's path: {per}; background, for {n} "
          f"requests (releases, predictions, heartbeats, renewals): {background}")
    for kind, counts in per.items():
        # One: the snapshot pipeline that also claims the slot. A second round trip on the
        # request path (an awaited release, a separate acquire) makes every count 2. (A rare
        # extra one from the side, a probe moving a breaker on a loaded machine, is let by.)
        assert sorted(counts)[n // 2] == 1 and min(counts) == 1, (kind, counts)
        assert background[kind] >= n, (kind, background)  # the releases went out
    assert_idle([proc], rdb, prefix)  # every slot came back
