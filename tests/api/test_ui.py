"""The live dashboard's HTTP side: who may load `/ui` and read `/ui/events`, the feed's shape
(figures, states and reasons, never prompt or answer text), and the SSE framing."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from typing import Any

import orjson
import pytest
from redis import Redis as SyncRedis
from starlette.testclient import TestClient

from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router_simulators.server import SimServer
from tests.conftest import base_policy

LOCAL = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)
SSE = {"accept": "text/event-stream"}
REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "the-prompt-text-that-must-never-show-9931"
DECISION_FIELDS = {"time", "request_id", "dialect", "model", "privacy", "route", "backend",
                   "local", "reason", "outcome", "status", "latency_ms", "prompt_tokens",
                   "completion_tokens", "stream"}


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEYS = [{"name": "app", "sha256": _sha("sk-app")},
        {"name": "ops", "sha256": _sha("sk-ops"), "ops": True},
        {"name": "root", "sha256": _sha("sk-root"), "admin": True}]


def client(policy: dict[str, Any], peer: tuple[str, int] = LOCAL,
           settings: RouterSettings | None = None) -> TestClient:
    app = create_app(settings or RouterSettings(), policy=parse_policy(policy))
    return TestClient(app, base_url="http://localhost", client=peer)


def events(body: bytes) -> list[dict[str, Any]]:
    out = []
    for block in body.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(orjson.loads(line[6:]))
    return out


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture
def policy(ollama_sim: SimServer, bedrock_sim: SimServer) -> dict[str, Any]:
    return base_policy(ollama_sim.url, bedrock_sim.url)


def test_without_keys_the_page_and_feed_serve_loopback_clients_only(
        policy: dict[str, Any]) -> None:
    with client(policy) as c:
        page = c.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert b"/ui/static/app.js" in page.content and b"https://" not in page.content
        for name, media in (("app.js", "text/javascript"), ("app.css", "text/css")):
            r = c.get(f"/ui/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(media)
            assert b"https://" not in r.content  # no CDN
        r = c.get("/ui/static/..%2fapp.py")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert c.get("/ui/events").status_code == 200
    with client(policy, peer=REMOTE) as c:
        for path in ("/ui", "/ui/static/app.js", "/ui/events"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"]["type"] == "authentication_error"


def test_with_keys_the_feed_needs_an_ops_or_admin_key_and_the_page_asks_for_it(
        policy: dict[str, Any]) -> None:
    policy["keys"] = KEYS
    with client(policy, peer=REMOTE,
                settings=RouterSettings(admin_key="env-admin")) as c:  # type: ignore[arg-type]
        # The page and its assets hold no data: served, so a remote operator can enter a key.
        assert c.get("/ui").status_code == 200
        assert c.get("/ui/static/app.js").status_code == 200
        assert c.get("/ui/events").status_code == 401
        assert c.get("/ui/events", headers=bearer("wrong")).status_code == 401
        r = c.get("/ui/events", headers=bearer("sk-app"))
        assert r.status_code == 403 and r.json()["error"]["code"] == "ops_key_required"
        for key in ("sk-ops", "sk-root", "env-admin"):
            assert c.get("/ui/events", headers=bearer(key)).status_code == 200, key
        assert c.get("/ui/events", headers={"x-api-key": "sk-ops"}).status_code == 200


def test_the_feed_shows_decisions_and_figures_but_no_text(policy: dict[str, Any]) -> None:
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": SECRET}]}
    with client(policy) as c:
        answers = []
        r = c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        answers.append(r.json()["choices"][0]["message"]["content"])
        r = c.post("/v1/chat/completions", json=body, headers={"x-privacy": "private"})
        assert r.status_code == 200
        answers.append(r.json()["choices"][0]["message"]["content"])
        feed = c.get("/ui/events")
    assert feed.headers["content-type"].startswith("text/event-stream")
    assert SECRET.encode() not in feed.content
    for answer in answers:
        assert answer and answer.encode() not in feed.content
    (view,) = events(feed.content)
    assert set(view) >= {"time", "ready", "totals", "backends", "routing", "money", "store",
                         "decisions", "wait_bounds"}
    assert view["totals"]["requests"] == 2
    decisions = view["decisions"]
    assert [d["privacy"] for d in decisions] == ["private", "standard"]  # newest first
    for d in decisions:
        assert set(d) == DECISION_FIELDS
        assert d["dialect"] == "openai" and d["model"] == "gpt-oss-20b"
        assert d["backend"] == "local" and d["outcome"] == "ok" and d["reason"]
        assert d["prompt_tokens"] and d["completion_tokens"]
    local = view["backends"]["local"]
    assert set(local) >= {"healthy", "breaker", "rps", "rps_series", "error_rate", "ttft_s",
                          "tokens_per_s", "queues", "probe"}
    assert sum(local["rps_series"]) == 2 and len(local["rps_series"]) == view["window_s"]
    assert view["routing"]["private_local"] == 1
    assert view["routing"]["by_backend"] == {"local": 2}
    assert view["routing"]["hedges"] == 0 and view["routing"]["continuations"] == 0
    assert {s["name"] for s in view["money"]["spend_today"]} == {"bedrock"}
    assert view["money"]["local_tokens"] > 0
    assert view["store"]["kind"] == "memory"
    (me,) = view["replicas"]  # a memory store lists only this process
    assert set(me) == {"id", "self", "started", "last_seen_s_ago", "store", "in_flight"}
    assert me["self"] and me["store"] == "ok" and me["in_flight"] == 0
    assert 0 <= me["last_seen_s_ago"] < 10
    slots = {(s["backend"], s["model"]): s for s in view["shared_slots"]}
    assert set(slots) == {("local", "gpt-oss-20b"), ("local", "gpt-oss-120b")}
    assert slots[("local", "gpt-oss-20b")] == {
        "backend": "local", "model": "gpt-oss-20b", "model_id": "gpt-oss:20b",
        "in_flight": 0, "queued": 0, "slots": 4}


@pytest.mark.redis
def test_replicas_on_one_redis_see_each_other_and_share_the_slots(
        policy: dict[str, Any]) -> None:
    prefix = f"hrtest:{secrets.token_hex(6)}:"

    def settings(replica: str) -> RouterSettings:
        return RouterSettings(redis_url=REDIS_URL, redis_prefix=prefix,  # type: ignore[call-arg]
                              replica_id=replica)

    try:
        with client(policy, settings=settings("replica-a")) as a, \
                client(policy, settings=settings("replica-b")) as b:
            (view,) = events(b.get("/ui/events").content)
            # Replica a registered first; it sees b once b's first heartbeat is in its
            # (briefly cached) list: poll for it rather than race it on a loaded machine.
            for _ in range(100):
                (view_a,) = events(a.get("/ui/events").content)
                if len(view_a["replicas"]) == 2:
                    break
                time.sleep(0.05)
    finally:
        redis = SyncRedis.from_url(REDIS_URL)
        keys = list(redis.scan_iter(match=prefix + "*"))
        if keys:
            redis.delete(*keys)
        redis.close()
    assert [(r["id"], r["self"], r["store"]) for r in view["replicas"]] == [
        ("replica-a", False, "ok"), ("replica-b", True, "ok")]
    assert [r["self"] for r in view_a["replicas"]] == [True, False]
    assert view["store"]["kind"] == "redis" and not view["store"]["degraded"]
    assert {s["model"] for s in view["shared_slots"]} == {"gpt-oss-20b", "gpt-oss-120b"}


def test_the_feed_streams_only_when_asked_and_honours_limit(policy: dict[str, Any]) -> None:
    with client(policy) as c:
        assert len(events(c.get("/ui/events").content)) == 1  # not an event-stream client
        r = c.get("/ui/events?limit=2", headers=SSE)
        assert r.content.startswith(b"retry: ") and len(events(r.content)) == 2
        for bad in ("0", "x", "10001", "-1"):
            r = c.get(f"/ui/events?limit={bad}", headers=SSE)
            assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


def test_a_refused_private_request_and_a_spill_are_counted_with_their_reasons(
        policy: dict[str, Any]) -> None:
    # No local model for 120b on a private route with nothing local: refused; a standard
    # request whose local queue bound is 0 while local is busy spills to the cloud.
    policy["backends"]["local"]["models"] = {"gpt-oss-20b": "gpt-oss:20b"}
    body = {"model": "gpt-oss-120b", "messages": [{"role": "user", "content": SECRET}]}
    with client(policy) as c:
        assert c.post("/v1/chat/completions", json=body,
                      headers={"x-privacy": "private"}).status_code == 503
        spill = c.post("/v1/chat/completions", json=body)
        assert spill.status_code == 200 and spill.headers["x-router-backend"] == "bedrock"
        (view,) = events(c.get("/ui/events").content)
    refused, spilled = view["decisions"][1], view["decisions"][0]
    assert refused["backend"] is None and refused["privacy"] == "private"
    assert refused["outcome"] == "no_local_capacity" and refused["status"] == 503
    assert view["routing"]["private_refused"] == {"no_local_capacity": 1}
    assert spilled["backend"] == "bedrock" and spilled["local"] is False
    assert spilled["reason"] == spill.headers["x-router-reason"]
    assert view["routing"]["spill_rate"] == 0.5 and view["totals"]["spills"] == 1
    assert SECRET.encode() not in orjson.dumps(view)
