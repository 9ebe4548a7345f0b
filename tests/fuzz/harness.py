"""The router app in-process for the fuzz tests: real surface, service, planner and executor,
with scripted in-process backends (`tests/fakes.py`) instead of Ollama and Bedrock.

One local backend (`local`) and one cloud backend (`bedrock`); private requests (header,
`metadata.privacy`, the private alias `secret-20b`, or an e-mail found by the detector) have a
route to `local` only. `cloud_calls()` tells whether any request reached the cloud. Also the
checks every fuzzed response must pass (`response_problems`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import orjson
from hypothesis import HealthCheck, Phase, settings
from starlette.applications import Starlette
from starlette.testclient import TestClient

from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router.state.memory import MemoryStore
from tests.conftest import base_policy
from tests.fakes import FakeBackend

PRIVATE_ALIAS = "secret-20b"
SECRET_EMAIL = "alice.fuzz@example.com"
LOOPBACK_CLIENT = ("127.0.0.1", 50000)
BASE_URL = "http://127.0.0.1"
# Text that only a leaked traceback or exception repr would put in a body.
TRACE_RE = re.compile(rb"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+|"
                      rb"\b(?:RecursionError|KeyError|TypeError|AttributeError|ValueError)\b|"
                      rb"/site-packages/|router/[a-z_/]+\.py")
ERROR_FIELDS = {"message", "type", "param", "code"}
ANTHROPIC_ERROR_FIELDS = {"message", "type"}


def examples(default: int) -> int:
    """The example count: `HR_FUZZ_EXAMPLES` (a long run sets it), else `default` (CI)."""
    return int(os.environ.get("HR_FUZZ_EXAMPLES", str(default)))


def collect_mode() -> bool:
    """`HR_FUZZ_COLLECT=1` (the long run): tally every problem instead of stopping at the
    first, and print a sample of each kind at the end."""
    return os.environ.get("HR_FUZZ_COLLECT") == "1"


class Findings:
    """Problems seen in a collecting run, one sample request kept per kind."""

    def __init__(self) -> None:
        self.count = 0
        self.samples: dict[str, str] = {}

    def add(self, kind: str, sample: str) -> None:
        self.count += 1
        self.samples.setdefault(kind, sample[:1500])

    def summary(self) -> str:
        lines = [f"{self.count} problem(s), {len(self.samples)} kind(s)"]
        lines += [f"--- {kind}\n{sample}" for kind, sample in self.samples.items()]
        return "\n".join(lines)


def fuzz_settings(default_examples: int) -> settings:
    """CI: a fixed example sequence (`derandomize`), so a run is repeatable; `HR_FUZZ_RANDOM=1`
    draws fresh ones. No shrinking unless `HR_FUZZ_SHRINK=1`: shrinking megabyte bodies takes
    minutes, and every failure message already carries the whole request."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
    if os.environ.get("HR_FUZZ_SHRINK") == "1":
        phases.append(Phase.shrink)
    return settings(max_examples=examples(default_examples), deadline=None, database=None,
                    derandomize=os.environ.get("HR_FUZZ_RANDOM") != "1", phases=phases,
                    suppress_health_check=list(HealthCheck))


def fuzz_policy() -> dict[str, Any]:
    policy = base_policy("http://127.0.0.1:9", "http://127.0.0.1:9")
    policy["backends"]["local"]["gpu_memory_gb"] = 80  # both models fit: no capacity 503s
    policy["privacy"] = {"private_aliases": {PRIVATE_ALIAS: "gpt-oss-20b"},
                         "detector": {"enabled": True}}
    policy["retry"] = {"attempts": 1, "initial_s": 0, "max_s": 0, "jitter_s": 0}
    return policy


@dataclass
class FuzzApp:
    app: Starlette
    backends: dict[str, FakeBackend]

    def cloud_calls(self) -> int:
        return sum(len(b.calls) for b in self.backends.values() if not b.local)

    def reset_calls(self) -> None:
        for b in self.backends.values():
            b.calls.clear()


def build_fuzz_app() -> FuzzApp:
    """The app with fake backends, open to any client (the ASGI test clients are not loopback
    by address: schemathesis always says `testclient`)."""
    backends: dict[str, FakeBackend] = {}

    def factory(name: str, cfg: Any) -> FakeBackend:
        backends[name] = FakeBackend(name, local=bool(cfg.local))
        return backends[name]

    settings = RouterSettings(open_remote=True, policy_file=None, audit_log=None,
                              redis_url=None, admin_key=None, watch_policy=False)
    with mock.patch("router.runtime.build_backend", factory):
        app = create_app(settings, policy=parse_policy(fuzz_policy()), store=MemoryStore())
    return FuzzApp(app, backends)


@contextmanager
def client(fuzz: FuzzApp) -> Iterator[TestClient]:
    """A test client that runs the lifespan and reports 500s as responses, from loopback."""
    with TestClient(fuzz.app, base_url=BASE_URL, raise_server_exceptions=False,
                    client=LOOPBACK_CLIENT) as c:
        yield c


def response_problems(status: int, headers: Mapping[str, str], body: bytes,
                      path: str = "") -> list[str]:
    """What is wrong with one response: 5xx, a non-JSON or misshapen error, leaked internals.

    Each dialect has its own error shape: OpenAI's `{"error": {message, type, param, code}}`,
    Anthropic's `{"type": "error", "error": {type, message}}`, and Ollama's `{"error": "..."}`
    on its native `/api/*` paths."""
    problems: list[str] = []
    if status >= 500:
        problems.append(f"server error {status}")
    if TRACE_RE.search(body):
        problems.append("traceback or internal path in the body")
    ctype = headers.get("content-type", "")
    if status < 400:
        return problems
    if not ctype.startswith("application/json"):
        problems.append(f"error with content-type {ctype!r}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [*problems, "error body is not JSON"]
    err = data.get("error") if isinstance(data, dict) else None
    if path.startswith("/api/") or path == "/":  # Ollama's native API
        if not (isinstance(data, dict) and set(data) == {"error"} and isinstance(err, str)):
            problems.append("error body is not Ollama's {'error': '...'}")
        return problems
    if isinstance(data, dict) and data.get("type") == "error" and isinstance(err, dict):
        fields = ANTHROPIC_ERROR_FIELDS  # the Anthropic Messages surface's error shape
    else:
        fields = ERROR_FIELDS
    if not isinstance(err, dict) or set(err) != fields:
        problems.append(f"error body is not {{'error': {sorted(ERROR_FIELDS)}}}")
    elif not isinstance(err["message"], str) or not isinstance(err["type"], str):
        problems.append("error message/type are not strings")
    return problems
