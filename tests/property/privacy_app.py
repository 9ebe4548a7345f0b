"""The real ASGI app in-process, over recording backends, for the privacy property tests.

`PrivacyApp` builds the app with `create_app` (the real surface: headers, body parsing, auth,
classifier, planner, executor) against a policy whose standard route PREFERS the cloud
backend (the local model reads as cold), so a misclassified private request would be
attempted there. Backends are
`tests.fakes.FakeBackend`s that record every call; `send` posts raw bytes with a raw header
list (repeated headers survive `httpx.ASGITransport`) and reports which backends were tried.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from router.app import create_app
from router.backends.base import ProbeResult
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from tests.fakes import FakeBackend

GiB = 1 << 30
STD_KEY, PRIV_KEY = "sk-standard-key", "sk-private-key"
PRIVATE_ALIAS = "gpt-oss-20b-private"
CHAT_PATH = "/v1/chat/completions"


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


POLICY: dict[str, Any] = {
    "models": {"gpt-oss-20b": {"vram_gb": 14}},
    "backends": {
        "local": {"type": "ollama", "base_url": "http://127.0.0.1:9", "parallel": 64,
                  "gpu_memory_gb": 24, "models": {"gpt-oss-20b": "gpt-oss:20b"}},
        "cloud": {"type": "bedrock", "region": "us-west-2",
                  "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"}},
    },
    "routes": [
        {"name": "private", "match": {"privacy": "private"}, "targets": ["local"],
         "max_queue_wait_s": 0},
        {"name": "standard", "targets": ["cloud", "local"], "max_queue_wait_s": 0},
    ],
    "privacy": {"private_aliases": {PRIVATE_ALIAS: "gpt-oss-20b"},
                "private_max_queue_wait_s": 0},
    "keys": [
        {"name": "std", "sha256": _sha(STD_KEY), "default_privacy": "standard"},
        {"name": "priv", "sha256": _sha(PRIV_KEY), "default_privacy": "private"},
    ],
    "retry": {"attempts": 1, "initial_s": 0, "max_s": 0, "jitter_s": 0},
    # Never let a run of examples open a breaker and change what later examples see.
    "circuit": {"failure_threshold": 1000000},
}


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: bytes
    backend: str | None  # x-router-backend
    attempted: tuple[str, ...]  # backends called during this request, in order


class PrivacyApp:
    """One app for a whole test module: start once, `send` per example, `close` at the end."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # The local model reads as not resident: a standard request then goes to the cloud
        # first (local is its last resort), a private one waits for the "load" locally.
        self.local = FakeBackend("local", local=True,
                                 probe_result=ProbeResult(ok=True, gpu_total_bytes=24 * GiB))
        self.cloud = FakeBackend("cloud", local=False)
        fakes = {"local": self.local, "cloud": self.cloud}
        with pytest.MonkeyPatch.context() as mp:
            # The runtime builds its backends through this name: record, never connect.
            mp.setattr("router.runtime.build_backend", lambda name, cfg: fakes[name])
            self.app = create_app(RouterSettings(watch_policy=False, policy_file=None,
                                                 audit_log=None, redis_url=None),
                                  policy=parse_policy(POLICY))
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.loop.run_until_complete(self._lifespan.__aenter__())
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50000))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    def send(self, body: bytes, headers: Sequence[tuple[str, str]]) -> Outcome:
        before = {name: len(fake.calls) for name, fake in self._fakes()}
        resp = self.loop.run_until_complete(
            self.client.post(CHAT_PATH, content=body, headers=list(headers)))
        attempted = tuple(name for name, fake in self._fakes()
                          for _ in range(len(fake.calls) - before[name]))
        return Outcome(resp.status_code, resp.content, resp.headers.get("x-router-backend"),
                       attempted)

    def _fakes(self) -> list[tuple[str, FakeBackend]]:
        return [("local", self.local), ("cloud", self.cloud)]

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self._lifespan.__aexit__(None, None, None))
        self.loop.close()


def json_headers(key: str = STD_KEY) -> list[tuple[str, str]]:
    return [("content-type", "application/json"), ("authorization", f"Bearer {key}")]


def assert_never_cloud(out: Outcome, context: object) -> None:
    """The invariant for a request that any marker calls private: nothing left the premises.

    A 400 (duplicate key, bad marker), a local answer or a 503 are all fine.
    """
    assert "cloud" not in out.attempted, (out, context)
    assert out.status in (200, 400, 503), (out, context)
    if out.status == 200:
        assert out.backend == "local", (out, context)
