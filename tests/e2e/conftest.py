"""Fixtures and helpers of the end-to-end fault suite (`test_faults.py`).

What lives here:
- `fast_policy`: the time-scaled policy every fault test runs under (its knobs and the scale
  are documented in `test_faults.py`), with one route per backend pinned by a header so the
  suite can reach (and heal) each backend directly;
- `Stack`: one real router process plus the simulators behind it, with `fault`, `stats`,
  `settle` (clear faults, close every breaker with a pinned request, then check the router is
  healthy: `/readyz` 200 with every backend usable, no local slot held or queued);
- `call`: one chat completion over raw HTTP (httpx), timed, with the SSE bytes parsed exactly,
  so a test sees whether `[DONE]`, a `finish_reason` or an in-band error arrived. Every call is
  checked for a truncated answer presented as complete and any such answer is recorded in
  `TRUNCATED_SUCCESSES` (the suite's last test asserts it is empty).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.audit import summarize
from router.simulators.bedrock import BedrockSimConfig
from router.simulators.bedrock import create_app as bedrock_app
from router.simulators.ollama import OllamaSimConfig
from router.simulators.ollama import create_app as ollama_app
from router.simulators.sagemaker import SageMakerSimConfig
from router.simulators.sagemaker import create_app as sagemaker_app
from router.simulators.script import build_script
from router.simulators.server import SimServer
from tests.conftest import RouterProcess

PIN = "x-e2e-pin"  # header that pins a request to one backend (a route per backend)
PROMPT = "Explain how the hybrid router keeps answers flowing"
EFFORT = "high"  # gpt-oss effort "high": 12 reasoning tokens + 12 answer tokens = 24 tokens
ANSWER_TOKENS = 24
SAGEMAKER_SUFFIX = SageMakerSimConfig().utf8_suffix  # the SageMaker simulator appends this

# One pooled client for every call (creating an httpx.Client costs ~30 ms: its TLS context).
HTTP = httpx.Client(timeout=30.0, trust_env=False)

# Every answer that claimed to be complete but was not (filled by `call`, checked at the end).
TRUNCATED_SUCCESSES: list[str] = []
# Every audit log of every router this suite started (checked for private requests at the end).
AUDIT_LOGS: list[Path] = []


# -- policy ------------------------------------------------------------------------------------

def fast_policy(ollama_url: str, bedrock_url: str, sagemaker_url: str | None = None,
                primary: str = "local", **over: Any) -> dict[str, Any]:
    """The time-scaled policy: small timeouts, fast backoff, short breaker windows."""
    fast = {"connect_s": 0.5, "read_s": 1.0}
    backends: dict[str, Any] = {
        "local": {"type": "ollama", "base_url": ollama_url, "parallel": 4,
                  "gpu_memory_gb": 24, "probe_interval_s": 0.2, "timeouts": fast,
                  "models": {"gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b"}},
        "bedrock": {"type": "bedrock", "endpoint_url": bedrock_url, "context_window": 128000,
                    "timeouts": fast,
                    "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0",
                               "gpt-oss-120b": "openai.gpt-oss-120b-1:0"}},
    }
    if sagemaker_url:
        # A smaller window than Bedrock's: a context error on SageMaker can move to Bedrock.
        backends["sagemaker"] = {"type": "sagemaker", "endpoint_url": sagemaker_url,
                                 "endpoint_name": "gpt-oss-20b-endpoint",
                                 "context_window": 32768, "timeouts": fast,
                                 "models": {"gpt-oss-20b": "gpt-oss-20b"}}
    default = {"local": ["local", "bedrock"], "bedrock": ["bedrock", "sagemaker"],
               "sagemaker": ["sagemaker", "bedrock"]}[primary]
    routes: list[dict[str, Any]] = [
        {"name": "private", "match": {"privacy": "private"}, "targets": ["local"],
         "max_queue_wait_s": 2},
        *({"name": f"pin-{b}", "match": {"headers": {PIN: b}}, "targets": [b],
           "max_queue_wait_s": 2} for b in backends),
        {"name": "default", "targets": default, "max_queue_wait_s": 2},
    ]
    policy: dict[str, Any] = {
        "models": {"gpt-oss-20b": {"vram_gb": 14}, "gpt-oss-120b": {"vram_gb": 65}},
        "backends": backends,
        "routes": routes,
        "privacy": {"private_max_queue_wait_s": 2},
        "retry": {"attempts": 3, "initial_s": 0.05, "max_s": 0.2, "jitter_s": 0.05,
                  "retry_after_cap_s": 3, "budget_ratio": 1.0},
        "circuit": {"failure_threshold": 5, "open_for_s": 1.0, "local_open_for_s": 0.5},
        "stream": {"first_token_timeout_s": 1.0, "idle_timeout_s": 0.5},
        "deadline_s": 10,
    }
    policy.update(over)
    return policy


# -- one call, measured ------------------------------------------------------------------------

def expected_answer(backend: str, text: str = PROMPT) -> str:
    """The complete answer the simulators script for `text` (effort high)."""
    script = build_script([{"role": "user", "content": text}], effort=EFFORT)
    content = "".join(script.content)
    return content + SAGEMAKER_SUFFIX if backend == "sagemaker" else content


@dataclass
class Outcome:
    status: int
    headers: httpx.Headers
    elapsed: float
    stream: bool
    body: dict[str, Any] | None = None  # JSON body (non-stream answers and every error status)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False  # `data: [DONE]` arrived
    stream_error: dict[str, Any] | None = None  # the in-band `data: {"error": ...}`
    transport_error: str | None = None

    @property
    def backend(self) -> str | None:
        value: str | None = self.headers.get("x-router-backend")
        return value

    @property
    def reason(self) -> str | None:
        value: str | None = self.headers.get("x-router-reason")
        return value

    @property
    def error(self) -> dict[str, Any]:
        if self.stream_error is not None:
            return self.stream_error["error"]  # type: ignore[no-any-return]
        assert self.body is not None and "error" in self.body, self.describe()
        return self.body["error"]  # type: ignore[no-any-return]

    @property
    def content(self) -> str:
        if not self.stream:
            return str(((self.body or {}).get("choices") or [{}])[0].get("message", {})
                       .get("content") or "")
        return "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in self.chunks if c.get("choices"))

    @property
    def tokens(self) -> int:
        """Streamed deltas that carried a token (reasoning or answer)."""
        return sum(1 for c in self.chunks if c.get("choices") and (
            c["choices"][0]["delta"].get("content") or c["choices"][0]["delta"].get("reasoning")))

    @property
    def finish_reason(self) -> str | None:
        if not self.stream:
            choices = (self.body or {}).get("choices") or [{}]
            return choices[0].get("finish_reason")  # type: ignore[no-any-return]
        reasons = [c["choices"][0].get("finish_reason") for c in self.chunks if c.get("choices")]
        return next((r for r in reversed(reasons) if r), None)

    @property
    def model(self) -> str | None:
        src = (self.body or {}) if not self.stream else (self.chunks[0] if self.chunks else {})
        return src.get("model")

    def presents_as_complete(self) -> bool:
        if self.status != 200:
            return False
        if not self.stream:
            return self.finish_reason is not None
        return self.done or self.finish_reason is not None

    def describe(self) -> str:
        return (f"status={self.status} backend={self.backend} reason={self.reason} "
                f"elapsed={self.elapsed:.2f}s done={self.done} finish={self.finish_reason} "
                f"stream_error={self.stream_error} body={self.body} "
                f"transport_error={self.transport_error} content={self.content!r}")

    # -- the pass criteria every test states ---------------------------------------------

    def assert_complete(self, backend: str, *, text: str = PROMPT) -> None:
        """A whole answer from `backend`, naming the logical model; streams end in [DONE]."""
        assert self.status == 200, self.describe()
        assert self.backend == backend, self.describe()
        assert self.model == "gpt-oss-20b", self.describe()
        assert self.finish_reason == "stop", self.describe()
        assert self.content == expected_answer(backend, text), self.describe()
        if self.stream:
            assert self.done and self.stream_error is None, self.describe()

    def assert_clean_error(self, status: int, *, code: str | None = None) -> dict[str, Any]:
        """An OpenAI-shaped error before any output, never a stack trace."""
        assert self.status == status, self.describe()
        assert self.body is not None and set(self.body["error"]) == {
            "message", "type", "param", "code"}, self.describe()
        assert self.body["error"]["message"], self.describe()
        assert "Traceback" not in str(self.body), self.describe()
        if code is not None:
            assert self.body["error"]["code"] == code, self.describe()
        return self.error

    def assert_broken_stream(self, backend: str, *, tokens: int,
                             code: str = "stream_error") -> dict[str, Any]:
        """Started (200), `tokens` tokens, then an in-band error; no finish_reason, no [DONE]."""
        assert self.stream and self.status == 200, self.describe()
        assert self.backend == backend, self.describe()
        assert self.stream_error is not None, self.describe()
        assert not self.done and self.finish_reason is None, self.describe()
        err = self.stream_error["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        assert "incomplete" in err["message"] and err["code"] == code, self.describe()
        assert self.tokens == tokens, self.describe()
        assert expected_answer(backend).startswith(self.content), self.describe()
        assert self.transport_error is None, self.describe()
        return err  # type: ignore[no-any-return]


def _parse_sse(raw: bytes, out: Outcome) -> None:
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"".join(line[5:].strip() for line in block.split(b"\n")
                        if line.startswith(b"data:"))
        if not data:
            continue
        if data == b"[DONE]":
            out.done = True
            continue
        obj = orjson.loads(data)
        if "error" in obj:
            out.stream_error = obj
        else:
            out.chunks.append(obj)


def call(url: str, *, stream: bool, text: str = PROMPT, model: str = "gpt-oss-20b",
         headers: dict[str, str] | None = None, timeout: float = 30.0,
         **extra: Any) -> Outcome:
    """One chat completion, timed; checks it is not a truncated answer posing as complete."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}],
                            "reasoning_effort": EFFORT, "stream": stream, **extra}
    start = time.monotonic()
    with HTTP.stream("POST", url + "/v1/chat/completions", json=body, headers=headers or {},
                     timeout=timeout) as r:
        out = Outcome(r.status_code, r.headers, 0.0, stream)
        raw = b""
        try:
            for piece in r.iter_raw():
                raw += piece
        except httpx.HTTPError as exc:  # the router must never cut its own client off
            out.transport_error = repr(exc)
        out.elapsed = time.monotonic() - start
    if r.status_code != 200 or not stream:
        out.body = orjson.loads(raw) if raw else None
    else:
        _parse_sse(raw, out)
    _check_not_truncated(out, text)
    return out


def _check_not_truncated(out: Outcome, text: str) -> None:
    if not out.presents_as_complete():
        return
    problems = []
    if out.stream and not (out.done and out.finish_reason and out.stream_error is None):
        problems.append("stream not properly terminated")
    if out.finish_reason == "stop" and out.backend and out.content != expected_answer(
            out.backend, text):
        problems.append("content differs from the whole answer")
    if out.transport_error:
        problems.append("connection broke")
    if problems:
        TRUNCATED_SUCCESSES.append(f"{problems}: {out.describe()}")


# -- a router and its simulators ---------------------------------------------------------------

def get_json(url: str, path: str) -> Any:
    return HTTP.get(url + path, timeout=5).json()


FALLBACK = {"local": "bedrock", "bedrock": "sagemaker", "sagemaker": "bedrock"}


@dataclass
class Stack:
    router: RouterProcess
    sims: dict[str, SimServer]  # backend name -> simulator
    audit_path: Path
    primary: str = "local"

    @property
    def fallback(self) -> str:
        return FALLBACK[self.primary]

    @property
    def url(self) -> str:
        return self.router.url

    def fault(self, backend: str, kind: str, **fields: Any) -> None:
        r = HTTP.post(self.sims[backend].url + "/_sim/faults",
                       json={"faults": [{"kind": kind, **fields}]}, timeout=5)
        assert r.status_code == 200, r.text

    def stats(self, backend: str) -> dict[str, Any]:
        return get_json(self.sims[backend].url, "/_sim/stats")  # type: ignore[no-any-return]

    def requests(self, backend: str) -> int:
        return int(self.stats(backend)["requests"])

    def reset_sims(self) -> None:
        for sim in self.sims.values():
            HTTP.post(sim.url + "/_sim/reset", json={}, timeout=5)

    def status(self) -> dict[str, Any]:
        return get_json(self.url, "/v1/router/status")  # type: ignore[no-any-return]

    def breaker(self, backend: str) -> str:
        return str(self.status()["backends"][backend]["breaker"])

    def slots_in_use(self) -> int:
        total = 0
        for entry in self.status()["backends"].values():
            for q in (entry.get("queues") or {}).values():
                total += int(q["in_flight"]) + int(q["queued"])
        return total

    def wait_idle(self, timeout: float = 5.0) -> None:
        """No local slot held or queued (the ledger is empty)."""
        deadline = time.monotonic() + timeout
        while self.slots_in_use() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.slots_in_use() == 0, self.status()

    def wait_upstreams_closed(self, timeout: float = 5.0) -> None:
        """No simulator still serving a request: the router let go of every upstream call."""
        deadline = time.monotonic() + timeout
        busy = {n: self.stats(n)["in_flight"] for n in self.sims}
        while any(busy.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
            busy = {n: self.stats(n)["in_flight"] for n in self.sims}
        assert not any(busy.values()), f"upstream requests left open: {busy}"

    def settle(self, timeout: float = 8.0) -> None:
        """Clear faults, close every breaker, and check the router is healthy and idle."""
        self.reset_sims()
        deadline = time.monotonic() + timeout
        for name in self.status()["backends"]:
            while self.breaker(name) == "open" and time.monotonic() < deadline:
                time.sleep(0.05)
            out = call(self.url, stream=False, headers={PIN: name})
            assert out.status == 200 and out.backend == name, out.describe()
        status = self.status()
        assert {n: b["breaker"] for n, b in status["backends"].items()} == {
            n: "closed" for n in status["backends"]}, status
        self.wait_idle()
        self.wait_upstreams_closed()
        while time.monotonic() < deadline:
            ready = HTTP.get(self.url + "/readyz", timeout=5)
            if ready.status_code == 200 and set(ready.json()["usable_backends"]) == set(
                    status["backends"]):
                break
            time.sleep(0.05)
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["usable_backends"]) == set(status["backends"]), ready.text
        self.reset_sims()

    def private_on_cloud(self) -> int:
        return private_on_cloud(self.audit_path)


def private_on_cloud(audit_path: Path) -> int:
    """Private requests the audit log shows attempted on, or answered by, a cloud backend."""
    if not audit_path.exists():
        return 0
    summary = summarize(str(audit_path), local_backends={"local"})
    return int(summary["private_on_non_local"])


def start_stack(policy: dict[str, Any], sims: dict[str, SimServer], tmp: Path,
                env: dict[str, str] | None = None, primary: str = "local") -> Stack:
    audit = tmp / f"audit-{len(AUDIT_LOGS)}.jsonl"
    AUDIT_LOGS.append(audit)
    router = RouterProcess(policy, tmp, {"ROUTER_AUDIT_LOG": str(audit), **(env or {})})
    return Stack(router, sims, audit, primary)


# -- simulators owned by this suite ------------------------------------------------------------

@pytest.fixture(scope="module")
def e2e_ollama() -> Iterator[SimServer]:
    with SimServer(lambda: ollama_app(OllamaSimConfig(parallel=4, token_delay_s=0.0))) as s:
        yield s


@pytest.fixture(scope="module")
def e2e_bedrock() -> Iterator[SimServer]:
    with SimServer(lambda: bedrock_app(BedrockSimConfig())) as s:
        yield s


@pytest.fixture(scope="module")
def e2e_sagemaker() -> Iterator[SimServer]:
    with SimServer(lambda: sagemaker_app(SageMakerSimConfig())) as s:
        yield s
