"""What every simulator shares: the deterministic answer script, the fault queue and stats.

Fault vocabulary (JSON objects posted to `POST /_sim/faults` as `{"faults": [...]}`):

    kind              effect                                                    fields
    status            vendor error before any output (429/500/503/400/424...)  status, retry_after
    reset             close the connection before sending headers
    hang              accept and never answer
    slow_first_token  wait before the first token                               delay_s
    cut               stream: close the connection after N tokens, no terminator after_tokens
    stall             stream: stop sending after N tokens, keep the socket open  after_tokens
    malformed         stream: send a corrupt chunk after N tokens               after_tokens,
                      (Ollama: `count` corrupt lines in a row, then the rest)   count
    midstream_error   stream: in-band vendor error after N tokens               after_tokens
    no_terminator     stream: send every token, then end without the final marker
    context_exceeded  the vendor's context-window error
    content_filter    the vendor's content-filter rejection
    reject_prefill    a request whose last message is `assistant` gets the vendor's 400
                      validation error (Bedrock: ValidationException about the last turn);
                      other requests pass and do not consume it (prefill.py)
    echo_prefill      a prefill continuation re-sends the prefix before the rest; applies only
                      to requests whose last message is `assistant`
    flap              503 (the vendor's) for every inference request during        duration_s
                      `duration_s` seconds (times the queue's `time_scale`) from the
                      moment it is posted; health and probe endpoints (/api/version,
                      /api/tags, /api/ps) keep answering; `times` and queue order do not
                      apply to it, `model` does

Every fault also takes `times` (how many requests it applies to; -1 = every request until
cleared) and `model` (apply only to that model id). Faults apply in FIFO order.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = (
    "status",
    "reset",
    "hang",
    "slow_first_token",
    "cut",
    "stall",
    "malformed",
    "midstream_error",
    "no_terminator",
    "context_exceeded",
    "content_filter",
    "reject_prefill",
    "echo_prefill",
    "flap",
)
PREFILL_ONLY = ("reject_prefill", "echo_prefill")

_WORDS = (
    "the", "quick", "answer", "is", "that", "local", "inference", "keeps", "data", "on",
    "premises", "while", "the", "cloud", "absorbs", "bursts", "so", "every", "request", "finds",
    "capacity", "and", "nothing", "private", "leaves", "the", "building",
)


@dataclass
class Fault:
    kind: str
    status: int = 500
    retry_after: float | None = None
    after_tokens: int = 0
    delay_s: float = 0.0
    times: int = 1
    model: str | None = None
    count: int = 1  # malformed (Ollama): corrupt lines in a row
    duration_s: float = 0.0  # flap: how long inference answers 503

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Fault:
        if d.get("kind") not in FAULT_KINDS:
            known = ", ".join(FAULT_KINDS)
            raise ValueError(f"unknown fault kind {d.get('kind')!r} (known: {known})")
        allowed = set(cls.__dataclass_fields__)
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**d)


class FaultQueue:
    """Thread-safe FIFO of scripted faults, plus the deadlines of posted `flap` faults.

    While a flap lasts, `take` answers a synthetic `status` 503 fault (each simulator renders
    it in its own 503 shape) and leaves the queue alone.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 time_scale: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._flaps: dict[str | None, float] = {}  # model (None: all) -> monotonic deadline
        self.clock = clock
        self.time_scale = time_scale

    def add(self, faults: list[Fault]) -> None:
        with self._lock:
            for f in faults:
                if f.kind == "flap":
                    self._flaps[f.model] = self.clock() + f.duration_s * self.time_scale
                else:
                    self._faults.append(f)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._flaps.clear()

    def flapping(self, model: str | None) -> bool:
        now = self.clock()
        with self._lock:
            return any(until > now and (m is None or m == model)
                       for m, until in self._flaps.items())

    def take(self, model: str | None, prefill: bool = False) -> Fault | None:
        """The next fault for a request to `model` (`prefill`: its last message is assistant)."""
        if self.flapping(model):
            return Fault(kind="status", status=503, model=model)
        with self._lock:
            for i, f in enumerate(self._faults):
                if f.model is not None and f.model != model:
                    continue
                if f.kind in PREFILL_ONLY and not prefill:
                    continue
                if f.times > 0:
                    f.times -= 1
                    if f.times == 0:
                        del self._faults[i]
                return f
        return None


@dataclass
class SimStats:
    """Counters a test reads back through `GET /_sim/stats`."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    completed: int = 0
    faults_applied: int = 0
    by_model: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def begin(self, model: str) -> None:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.by_model[model] = self.by_model.get(model, 0) + 1

    def end(self, completed: bool = True) -> None:
        with self._lock:
            self.in_flight -= 1
            if completed:
                self.completed += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "completed": self.completed,
                "faults_applied": self.faults_applied,
                "by_model": dict(self.by_model),
            }

    def reset(self) -> None:
        with self._lock:
            self.requests = self.completed = self.faults_applied = self.max_in_flight = 0
            self.by_model = {}
            self.max_in_flight = self.in_flight


@dataclass
class Script:
    """A deterministic gpt-oss-style answer: reasoning tokens, then content or one tool call."""

    reasoning: list[str]
    content: list[str]
    tool_call: tuple[str, dict[str, Any]] | None
    prompt_tokens: int
    finish_reason: str  # "stop", "length" or "tool_calls"

    @property
    def completion_tokens(self) -> int:
        return len(self.reasoning) + len(self.content) + (1 if self.tool_call else 0)


def count_tokens(text: str) -> int:
    """Simulator token count: roughly 4 characters a token."""
    return max(1, (len(text) + 3) // 4) if text else 0


def prompt_token_count(messages: list[dict[str, Any]]) -> int:
    """The simulator's prompt length: each message's text plus 4 tokens of framing."""
    return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)


def _fill_args(parameters: dict[str, Any] | None, prompt: str) -> dict[str, Any]:
    props = (parameters or {}).get("properties") or {}
    required = (parameters or {}).get("required") or list(props)
    words = [w.strip(".,?!") for w in prompt.split() if w[:1].isupper()]
    value = words[-1] if words else "Tokyo"
    args: dict[str, Any] = {}
    for name in required:
        typ = (props.get(name) or {}).get("type", "string")
        args[name] = {"integer": 1, "number": 1.0, "boolean": True}.get(typ, value)
    return args


def build_script(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    effort: str | None = None,
    max_tokens: int | None = None,
    answer_tokens: int = 12,
) -> Script:
    """Deterministic answer for a conversation (OpenAI-style dicts: role, content, ...).

    - last message from a tool: a final answer that quotes the tool result;
    - tools offered and the last message is from the user: one call of the first tool;
    - otherwise: a short answer. Reasoning length grows with `effort`.
    """
    prompt = " ".join(str(m.get("content") or "") for m in messages)
    prompt_tokens = prompt_token_count(messages)
    last = messages[-1] if messages else {"role": "user", "content": ""}
    digest = hashlib.sha256(prompt.encode()).digest()
    n_reason = {"low": 3, "medium": 6, "high": 12}.get(effort or "medium", 6)
    reasoning = [("Thinking" if i == 0 else " step") + f" {i + 1}" for i in range(n_reason)]
    reasoning[-1] += "."
    tool_call = None
    content: list[str] = []
    if last.get("role") == "tool":
        content = ["The", " tool", " says:", " " + str(last.get("content") or "")[:200]]
    elif tools and last.get("role") == "user":
        fn = tools[0].get("function", tools[0])
        args = _fill_args(fn.get("parameters"), str(last.get("content")))
        tool_call = (str(fn.get("name")), args)
    else:
        start = digest[0] % len(_WORDS)
        content = [
            ("" if i == 0 else " ") + _WORDS[(start + i) % len(_WORDS)]
            for i in range(answer_tokens)
        ]
        content[0] = content[0].capitalize()
        content[-1] += "."
    finish = "tool_calls" if tool_call else "stop"
    if max_tokens is not None and len(reasoning) + len(content) > max_tokens:
        keep = max(0, max_tokens - len(reasoning))
        reasoning = reasoning[:max_tokens]
        content = content[:keep]
        tool_call = None
        finish = "length"
    return Script(reasoning, content, tool_call, prompt_tokens, finish)
