"""The fault suite's HTTP client: one chat completion over raw HTTP (httpx), timed, with the SSE
bytes parsed exactly, so a test sees whether `[DONE]`, a `finish_reason` or an in-band error
arrived (`call` -> `Outcome`, whose `assert_*` methods state the pass criteria).

Every call is checked for a truncated answer presented as complete, and any such answer is
recorded in `TRUNCATED_SUCCESSES` (the suite's invariants test, in `test_outage.py`, asserts it
is empty). Also here: the request constants (`PROMPT`, the pinning header `PIN`) and the
complete answer the simulators script for a prompt (`expected_answer`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from router_simulators.sagemaker import SageMakerSimConfig
from router_simulators.script import build_script

PIN = "x-e2e-pin"  # header that pins a request to one backend (a route per backend)
PROMPT = "Explain how the hybrid router keeps answers flowing"
EFFORT = "high"  # gpt-oss effort "high": 12 reasoning tokens + 12 answer tokens = 24 tokens
ANSWER_TOKENS = 24
SAGEMAKER_SUFFIX = SageMakerSimConfig().utf8_suffix  # the SageMaker simulator appends this

# One pooled client for every call (creating an httpx.Client costs ~30 ms: its TLS context).
HTTP = httpx.Client(timeout=30.0, trust_env=False)
# The response's `model`: gpt-oss-20b as each backend of the fault suite's policy names it.
SERVED_MODEL = {"local": "gpt-oss:20b", "bedrock": "openai.gpt-oss-20b-1:0",
                "sagemaker": "gpt-oss-20b"}

# Every answer that claimed to be complete but was not (filled by `call`, checked at the end).
TRUNCATED_SUCCESSES: list[str] = []


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
        """A whole answer from `backend`, naming the model that served it (as that backend
        names it); streams end in [DONE]."""
        assert self.status == 200, self.describe()
        assert self.backend == backend, self.describe()
        assert self.model == SERVED_MODEL[backend], self.describe()
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


def get_json(url: str, path: str) -> Any:
    return HTTP.get(url + path, timeout=5).json()
