"""Ollama simulator state shared by its two HTTP surfaces (`ollama.py`, `ollama_openai.py`).

Owns the config (`OllamaSimConfig`, including Ollama's cloud models and its cloud switch),
model residency (`Model`: size, VRAM share, context length,
keep-alive expiry; loading with least-recently-used eviction of idle models and partial loads
when memory is short), the per-model `parallel` slots and the `max_queue` limit (Ollama's 503
`BUSY`), fault taking, and the fault-aware writers both surfaces answer with (`emit` for a
stream, `whole` for a non-stream body). `Fail` is the error a handler turns into its surface's
error shape; `json_body` reads a request body as a JSON object. Also: the context check of
`truncate: false` (`check_context`, Ollama's `CONTEXT_ERROR`), the service-time pacing
(`prefill`, `pace`: per-token delay slowed by the model's busy slots) and the wire helpers
`rfc3339` and `keep_alive_s`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import string
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from router_simulators.prefill import PREFILL_REJECTED_OPENAI
from router_simulators.script import Fault, FaultQueue, Script, SimStats, prompt_token_count
from router_simulators.service_time import AnswerLengths, ServiceTime

GiB = 1 << 30
BUSY = "server busy, please try again.  maximum pending requests exceeded"
JSON_TYPE = "application/json"
_PRE_FAULTS = ("status", "reset", "hang", "context_exceeded", "content_filter", "reject_prefill")
# Ollama's text when `truncate: false` and the prompt does not fit (llm/llama_server.go)
CONTEXT_ERROR = "the input length exceeds the context length"
_AFTER_N = ("cut", "stall", "malformed", "midstream_error")
_ID_CHARS = string.ascii_lowercase + string.digits


@dataclass
class OllamaSimConfig:
    models: dict[str, float] = field(
        default_factory=lambda: {"gpt-oss:20b": 14.0, "gpt-oss:120b": 65.0}
    )
    gpu_gb: float = 24.0
    parallel: int = 1
    max_queue: int = 512
    token_delay_s: float = 0.0
    load_time_s: float = 0.0
    context_length: int = 8192
    model_context: dict[str, int] = field(default_factory=dict)  # per-model default num_ctx
    # service time (service_time.py): answer lengths, prefill rate, batched-decode slowdown
    answer_lengths: AnswerLengths = field(default_factory=AnswerLengths)
    prefill_tps: float = 0.0
    batch_slowdown: float = 0.0
    resident: set[str] | None = None  # None: every model that fits, in order
    version: str = "0.12.3"
    # Ollama's own cloud models: tag -> the remote model it forwards to (`gpt-oss:120b-cloud`:
    # `gpt-oss:120b`); listed in /api/tags with remote_host, never resident, never on the GPU.
    cloud_models: dict[str, str] = field(default_factory=dict)
    remote_host: str = "https://ollama.com:443"
    # GET /api/status (0.16.2+): None answers 404, as older versions do.
    cloud_disabled: bool | None = None
    cloud_source: str = "none"  # none, env, config or both


@dataclass
class Model:
    """One model tag: its size and, while loaded, its VRAM share, context and expiry."""

    tag: str
    size: int
    digest: str
    sem: asyncio.Semaphore
    size_vram: int = 0
    loaded: bool = False
    context_length: int = 0
    users: int = 0
    busy: int = 0  # requests holding one of its slots (decoding)
    last_used: float = 0.0
    expires_at: float = 0.0


class Fail(Exception):
    """A request error; each surface renders it in its own error shape."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


DUR = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
DUR_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def rfc3339(t: float) -> str:
    t = min(t, time.time() + 3e9)
    ns = int(t * 1e9) % 1_000_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ns:09d}Z"


def keep_alive_s(v: Any) -> float:
    """Seconds a model stays loaded after a request: inf for negative values."""
    if v is None:
        secs = 300.0
    elif isinstance(v, int | float) and not isinstance(v, bool):
        secs = float(v)
    elif isinstance(v, str):
        try:
            secs = float(v)
        except ValueError:
            parts = DUR.findall(v)
            if not parts or "".join(a + u for a, u in parts) != v:
                raise Fail(400, f'time: invalid duration "{v}"') from None
            secs = sum(float(a) * DUR_S[u] for a, u in parts)
    else:
        raise Fail(400, "invalid keep_alive value")
    return float("inf") if secs < 0 else secs


def call_id() -> str:
    """A generated tool call id: `call_` + 8 random lowercase alphanumerics."""
    return "call_" + "".join(random.choices(_ID_CHARS, k=8))


async def _until_closed(request: web.Request) -> None:
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.02)


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


class OllamaSim:
    """All simulator state; lives in `app[SIM_KEY]`."""

    def __init__(self, config: OllamaSimConfig) -> None:
        self.cfg = config
        self.faults = FaultQueue()
        self.stats = SimStats()
        self.pending = 0
        self.models: dict[str, Model] = {}
        self.cloud_requests = 0  # chat requests that would have gone to ollama.com
        self._load_lock = asyncio.Lock()
        self.restore()

    def cloud_model(self, tag: Any) -> str | None:
        """The configured cloud tag for `tag` (`x:cloud` also finds legacy `x-cloud`), if any."""
        if not isinstance(tag, str):
            return None
        for name in (tag, tag[: -len(":cloud")] + "-cloud" if tag.endswith(":cloud") else ""):
            if name in self.cfg.cloud_models:
                return name
        return None

    def restore(self) -> None:
        """Initial residency: `cfg.resident`, or every model that fits, in order."""
        self.models = {}
        free = int(self.cfg.gpu_gb * GiB)
        for tag, gb in self.cfg.models.items():
            m = Model(tag, int(gb * GiB), hashlib.sha256(tag.encode()).hexdigest(),
                      asyncio.Semaphore(self.cfg.parallel))
            self.models[tag] = m
            wanted = tag in self.cfg.resident if self.cfg.resident is not None else m.size <= free
            if wanted:
                self._mark_loaded(m, max(0, min(m.size, free)), None)
                free -= m.size_vram

    def reset_sync(self) -> None:
        self._load_lock = asyncio.Lock()
        for m in self.models.values():
            m.sem = asyncio.Semaphore(self.cfg.parallel)

    def _mark_loaded(self, m: Model, vram: int, num_ctx: int | None) -> None:
        m.loaded, m.size_vram = True, vram
        m.context_length = num_ctx or self.default_context(m.tag)
        m.last_used, m.expires_at = time.time(), time.time() + 300

    def default_context(self, tag: str) -> int:
        return self.cfg.model_context.get(tag, self.cfg.context_length)

    def check_context(self, m: Model, num_ctx: int | None, messages: list[dict[str, Any]],
                      truncate: Any) -> None:
        """Ollama's 400 for a prompt over the context when `truncate` is false (else it fits
        silently, as Ollama truncates the history)."""
        if truncate is not False:
            return
        limit = num_ctx or (m.context_length if m.loaded and m.context_length
                            else self.default_context(m.tag))
        if prompt_token_count(messages) > limit:
            raise Fail(400, CONTEXT_ERROR)

    def lookup(self, tag: Any) -> Model:
        if not isinstance(tag, str) or not tag:
            raise Fail(400, "model is required")
        m = self.models.get(tag) or self.models.get(f"{tag}:latest")
        if m is None:
            raise Fail(404, f'model "{tag}" not found, try pulling it first')
        return m

    def expire(self) -> None:
        now = time.time()
        for m in self.models.values():
            if m.loaded and m.users == 0 and m.expires_at <= now:
                m.loaded, m.size_vram = False, 0

    async def ensure_loaded(self, m: Model, num_ctx: int | None) -> float:
        if m.loaded:
            return 0.0
        async with self._load_lock:
            if m.loaded:
                return 0.0
            self.expire()
            cap = int(self.cfg.gpu_gb * GiB)
            idle = sorted((o for o in self.models.values() if o.loaded and o.users == 0
                           and o is not m), key=lambda o: o.last_used)
            used = sum(o.size_vram for o in self.models.values() if o.loaded)
            while cap - used < m.size and idle:
                victim = idle.pop(0)
                used -= victim.size_vram
                victim.loaded, victim.size_vram = False, 0
            if self.cfg.load_time_s > 0:
                await asyncio.sleep(self.cfg.load_time_s)
            self._mark_loaded(m, max(0, min(m.size, cap - used)), num_ctx)
            return self.cfg.load_time_s or 1e-3  # a load always reports some load_duration

    async def acquire(self, m: Model, num_ctx: int | None) -> tuple[asyncio.Semaphore, float]:
        if self.pending >= self.cfg.max_queue:
            raise Fail(503, BUSY)
        self.pending += 1
        m.users += 1
        sem = m.sem
        try:
            load_s = await self.ensure_loaded(m, num_ctx)
            await sem.acquire()
        except BaseException:
            m.users -= 1
            raise
        finally:
            self.pending -= 1
        self.stats.begin(m.tag)
        m.busy += 1
        return sem, load_s

    def service(self) -> ServiceTime:
        c = self.cfg
        return ServiceTime(c.token_delay_s, c.prefill_tps, c.batch_slowdown)

    def pace(self, m: Model | None) -> float:
        """Seconds per token now: the token delay, slowed by the model's busy slots."""
        return self.service().token_s(m.busy if m is not None else 1)

    async def prefill(self, s: Script) -> None:
        wait = self.service().prefill_s(s.prompt_tokens)
        if wait > 0:
            await asyncio.sleep(wait)

    def release(self, m: Model, sem: asyncio.Semaphore, keep_alive: float, ok: bool) -> None:
        sem.release()
        m.users -= 1
        m.busy -= 1
        self.stats.end(completed=ok)
        m.last_used = time.time()
        m.expires_at = m.last_used + keep_alive
        if keep_alive == 0 and m.users == 0:
            m.loaded, m.size_vram = False, 0

    def take_fault(self, tag: str, prefill: bool = False) -> Fault | None:
        f = self.faults.take(tag, prefill)
        if f is not None:
            self.stats.faults_applied += 1
        return f

    async def pre_fault(self, request: web.Request, f: Fault | None, tag: str) -> bool:
        """Faults that strike before any output. True when the connection was dealt with."""
        if f is None or f.kind not in _PRE_FAULTS:
            return False
        self.stats.begin(tag)
        try:
            if f.kind == "status":
                # A scripted status is an unhealthy upstream; Ollama's queue-full 503 (BUSY)
                # comes from the real `max_queue` check only.
                raise Fail(f.status, f"simulated error (status {f.status})", f.retry_after)
            if f.kind == "context_exceeded":
                raise Fail(400, "input length exceeds the context length")
            if f.kind == "content_filter":
                raise Fail(400, "content blocked by safety filter")
            if f.kind == "reject_prefill":
                raise Fail(400, PREFILL_REJECTED_OPENAI)
            if f.kind == "reset":
                if request.transport is not None:
                    request.transport.abort()
                return True
            await _until_closed(request)  # hang
            return True
        finally:
            self.stats.end(completed=False)

    async def emit(self, request: web.Request, resp: web.StreamResponse, lines: list[bytes],
                   final: bytes, f: Fault | None, err: bytes, bad: bytes,
                   m: Model | None = None) -> bool:
        """Write a stream's token lines then its terminator, applying a stream fault."""
        kind = f.kind if f is not None else None
        if f is not None and kind == "slow_first_token":
            await asyncio.sleep(f.delay_s)
            kind = None
        delay = self.pace(m)
        if delay <= 0 and kind is None:
            await resp.write(b"".join(lines) + final)
            return True
        n = min(f.after_tokens, len(lines)) if f is not None and kind in _AFTER_N else len(lines)
        if delay > 0:
            for line in lines[:n]:
                await asyncio.sleep(self.pace(m))
                await resp.write(line)
        elif n:
            await resp.write(b"".join(lines[:n]))
        if kind == "cut":
            _cut(request)
        elif kind == "stall":
            await _until_closed(request)
        elif kind == "midstream_error":
            await resp.write(err)
        elif kind == "malformed":
            await resp.write(bad * (f.count if f is not None else 1) + b"".join(lines[n:])
                             + final)
        elif kind != "no_terminator":
            await resp.write(final)
            return True
        return False

    async def whole(self, request: web.Request, body: bytes, f: Fault | None,
                    delay_s: float) -> web.StreamResponse:
        """A non-stream answer, applying a stream fault in its non-stream form."""
        kind = f.kind if f is not None else None
        if f is not None and kind == "slow_first_token":
            delay_s += f.delay_s
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if kind == "midstream_error":
            raise Fail(500, "simulated error mid-generation")
        if kind == "malformed":
            body = body[: len(body) // 2]
        if kind in ("cut", "stall"):
            resp = web.StreamResponse(headers={"Content-Type": JSON_TYPE})
            resp.content_length = len(body)
            await resp.prepare(request)
            if kind == "cut":
                await resp.write(body[: len(body) // 2])
                _cut(request)
            else:
                await _until_closed(request)
            return resp
        return web.Response(body=body, content_type=JSON_TYPE)


SIM_KEY = web.AppKey("ollama_sim", OllamaSim)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or `Fail(400)`."""
    raw = await request.read()
    if not raw:
        raise Fail(400, "missing request body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Fail(400, str(exc)) from None
    if not isinstance(data, dict):
        raise Fail(400, "request body must be a JSON object")
    return data
