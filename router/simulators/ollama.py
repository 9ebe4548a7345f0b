"""Ollama simulator: the native API (`/api/chat`, `/api/ps`, `/api/tags`, `/api/version`,
`/api/show`) and Ollama's OpenAI surface (`/v1/chat/completions`, `/v1/models`), per
protocols.md §1.

Models answer gpt-oss style (thinking tokens, then content or one tool call; `script.py`).
Residency is modelled: models have a size (GiB, 1 GiB = 2**30 bytes) and the card `gpu_gb`; a
model that is not resident is loaded first (`load_time_s`), evicting idle least-recently-used
models to make room; one bigger than the free memory loads partly (`size_vram < size`).
Each model has `parallel` slots (OLLAMA_NUM_PARALLEL); further requests wait, and more than
`max_queue` waiting requests get Ollama's 503. `SimStats.in_flight` counts requests holding a
slot. Faults (script.py vocabulary) apply per request on both surfaces; control endpoints:
`/_sim/faults`, `/_sim/stats`, `/_sim/reset`, `/_sim/config` (token_delay_s, parallel, ...).
"""

from __future__ import annotations

import argparse
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

from router.simulators.script import Fault, FaultQueue, Script, SimStats, build_script
from router.simulators.server import run_forever

GiB = 1 << 30
BUSY = "server busy, please try again.  maximum pending requests exceeded"
_THINK = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
_PRE_FAULTS = ("status", "reset", "hang", "context_exceeded", "content_filter")
_AFTER_N = ("cut", "stall", "malformed", "midstream_error")
_DUR = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DUR_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_JSON = "application/json"
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
    resident: set[str] | None = None  # None: every model that fits, in order
    version: str = "0.12.3"


@dataclass
class _Model:
    tag: str
    size: int
    digest: str
    sem: asyncio.Semaphore
    size_vram: int = 0
    loaded: bool = False
    context_length: int = 0
    users: int = 0
    last_used: float = 0.0
    expires_at: float = 0.0


class _Fail(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def _rfc3339(t: float) -> str:
    t = min(t, time.time() + 3e9)
    ns = int(t * 1e9) % 1_000_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ns:09d}Z"


def _call_id() -> str:
    return "call_" + "".join(random.choices(_ID_CHARS, k=8))


def _keep_alive_s(v: Any) -> float:
    """Seconds a model stays loaded after a request: inf for negative values."""
    if v is None:
        secs = 300.0
    elif isinstance(v, int | float) and not isinstance(v, bool):
        secs = float(v)
    elif isinstance(v, str):
        try:
            secs = float(v)
        except ValueError:
            parts = _DUR.findall(v)
            if not parts or "".join(a + u for a, u in parts) != v:
                raise _Fail(400, f'time: invalid duration "{v}"') from None
            secs = sum(float(a) * _DUR_S[u] for a, u in parts)
    else:
        raise _Fail(400, "invalid keep_alive value")
    return float("inf") if secs < 0 else secs


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
        self.models: dict[str, _Model] = {}
        self._load_lock = asyncio.Lock()
        self.restore()

    def restore(self) -> None:
        """Initial residency: `cfg.resident`, or every model that fits, in order."""
        self.models = {}
        free = int(self.cfg.gpu_gb * GiB)
        for tag, gb in self.cfg.models.items():
            m = _Model(tag, int(gb * GiB), hashlib.sha256(tag.encode()).hexdigest(),
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

    def _mark_loaded(self, m: _Model, vram: int, num_ctx: int | None) -> None:
        m.loaded, m.size_vram = True, vram
        m.context_length = num_ctx or self.cfg.context_length
        m.last_used, m.expires_at = time.time(), time.time() + 300

    def lookup(self, tag: Any) -> _Model:
        if not isinstance(tag, str) or not tag:
            raise _Fail(400, "model is required")
        m = self.models.get(tag) or self.models.get(f"{tag}:latest")
        if m is None:
            raise _Fail(404, f'model "{tag}" not found, try pulling it first')
        return m

    def _expire(self) -> None:
        now = time.time()
        for m in self.models.values():
            if m.loaded and m.users == 0 and m.expires_at <= now:
                m.loaded, m.size_vram = False, 0

    async def ensure_loaded(self, m: _Model, num_ctx: int | None) -> float:
        if m.loaded:
            return 0.0
        async with self._load_lock:
            if m.loaded:
                return 0.0
            self._expire()
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

    async def acquire(self, m: _Model, num_ctx: int | None) -> tuple[asyncio.Semaphore, float]:
        if self.pending >= self.cfg.max_queue:
            raise _Fail(503, BUSY)
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
        return sem, load_s

    def release(self, m: _Model, sem: asyncio.Semaphore, keep_alive: float, ok: bool) -> None:
        sem.release()
        m.users -= 1
        self.stats.end(completed=ok)
        m.last_used = time.time()
        m.expires_at = m.last_used + keep_alive
        if keep_alive == 0 and m.users == 0:
            m.loaded, m.size_vram = False, 0

    def take_fault(self, tag: str) -> Fault | None:
        f = self.faults.take(tag)
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
                msg = BUSY if f.status == 503 else f"simulated error (status {f.status})"
                raise _Fail(f.status, msg, f.retry_after)
            if f.kind == "context_exceeded":
                raise _Fail(400, "input length exceeds the context length")
            if f.kind == "content_filter":
                raise _Fail(400, "content blocked by safety filter")
            if f.kind == "reset":
                if request.transport is not None:
                    request.transport.abort()
                return True
            await _until_closed(request)  # hang
            return True
        finally:
            self.stats.end(completed=False)

    async def emit(self, request: web.Request, resp: web.StreamResponse, lines: list[bytes],
                   final: bytes, f: Fault | None, err: bytes, bad: bytes) -> bool:
        """Write a stream's token lines then its terminator, applying a stream fault."""
        kind = f.kind if f is not None else None
        if f is not None and kind == "slow_first_token":
            await asyncio.sleep(f.delay_s)
            kind = None
        delay = self.cfg.token_delay_s
        if delay <= 0 and kind is None:
            await resp.write(b"".join(lines) + final)
            return True
        n = min(f.after_tokens, len(lines)) if f is not None and kind in _AFTER_N else len(lines)
        if delay > 0:
            for line in lines[:n]:
                await asyncio.sleep(delay)
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
            await resp.write(bad + b"".join(lines[n:]) + final)
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
            raise _Fail(500, "simulated error mid-generation")
        if kind == "malformed":
            body = body[: len(body) // 2]
        if kind in ("cut", "stall"):
            resp = web.StreamResponse(headers={"Content-Type": _JSON})
            resp.content_length = len(body)
            await resp.prepare(request)
            if kind == "cut":
                await resp.write(body[: len(body) // 2])
                _cut(request)
            else:
                await _until_closed(request)
            return resp
        return web.Response(body=body, content_type=_JSON)


SIM_KEY = web.AppKey("ollama_sim", OllamaSim)


def _details(tag: str) -> dict[str, Any]:
    size = tag.rsplit(":", 1)[-1].upper()
    return {"parent_model": "", "format": "gguf", "family": "gptoss", "families": ["gptoss"],
            "parameter_size": size, "quantization_level": "MXFP4"}


def _err(status: int, msg: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return web.Response(body=orjson.dumps({"error": msg}), status=status, content_type=_JSON,
                        headers=headers)


def _oai_err(e: _Fail) -> web.Response:
    typ = {400: "invalid_request_error", 404: "not_found_error"}.get(e.status, "api_error")
    headers = {"Retry-After": f"{e.retry_after:g}"} if e.retry_after is not None else None
    body = {"error": {"message": e.message, "type": typ, "param": None, "code": None}}
    return web.Response(body=orjson.dumps(body), status=e.status, content_type=_JSON,
                        headers=headers)


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise _Fail(400, "missing request body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Fail(400, str(exc)) from None
    if not isinstance(data, dict):
        raise _Fail(400, "request body must be a JSON object")
    return data


def _effort(think: Any) -> str:
    if think is None or isinstance(think, bool):
        return "medium"  # gpt-oss ignores true/false: the trace is always on
    if isinstance(think, str) and think in _THINK:
        return _THINK[think]
    raise _Fail(400, f'invalid think value: "{think}" (must be "high", "medium", "low", '
                     "true, or false)")


def _metrics(s: Script, start_ns: int, load_s: float, delay: float) -> dict[str, int]:
    m = {"total_duration": time.time_ns() - start_ns, "load_duration": int(load_s * 1e9),
         "prompt_eval_count": s.prompt_tokens, "prompt_eval_duration": s.prompt_tokens * 20_000,
         "eval_count": s.completion_tokens,
         "eval_duration": int(s.completion_tokens * max(delay, 1e-4) * 1e9)}
    return {k: v for k, v in m.items() if v}  # omitempty


def _native_calls(s: Script) -> list[dict[str, Any]]:
    if s.tool_call is None:
        return []
    name, args = s.tool_call
    return [{"id": _call_id(), "function": {"index": 0, "name": name, "arguments": args}}]


async def api_chat(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    try:
        data = await _json_body(request)
        m = sim.lookup(data.get("model"))
        effort = _effort(data.get("think"))
        keep_alive = _keep_alive_s(data.get("keep_alive"))
        opts = data.get("options") or {}
        if not isinstance(opts, dict):
            raise _Fail(400, "options must be an object")
        num_ctx = opts.get("num_ctx") if isinstance(opts.get("num_ctx"), int) else None
        messages = data.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(x, dict) for x in messages):
            raise _Fail(400, "messages must be a list of objects")
        now = _rfc3339(time.time())
        if not messages:
            load_s = await sim.ensure_loaded(m, num_ctx)
            reason = "unload" if keep_alive == 0 else "load"
            if reason == "unload":
                m.loaded, m.size_vram = False, 0
            else:
                m.last_used, m.expires_at = time.time(), time.time() + keep_alive
            return web.Response(body=orjson.dumps({
                "model": m.tag, "created_at": now,
                "message": {"role": "assistant", "content": ""}, "done_reason": reason,
                "done": True, **({"load_duration": int(load_s * 1e9)} if load_s else {})}),
                content_type=_JSON)
        predict = opts.get("num_predict")
        s = build_script(messages, data.get("tools"), effort,
                         predict if isinstance(predict, int) and predict > 0 else None)
        f = sim.take_fault(m.tag)
        if await sim.pre_fault(request, f, m.tag):
            return web.Response()
        start = time.time_ns()
        sem, load_s = await sim.acquire(m, num_ctx)
    except _Fail as e:
        return _err(e.status, e.message, e.retry_after)
    ok = False
    delay = sim.cfg.token_delay_s
    reason = "length" if s.finish_reason == "length" else "stop"
    head = {"model": m.tag, "created_at": now}
    try:
        if data.get("stream") is False:
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(s.content)}
            if s.reasoning:
                msg["thinking"] = "".join(s.reasoning)
            if s.tool_call:
                msg["tool_calls"] = _native_calls(s)
            done = f is None or f.kind != "no_terminator"
            out = {**head, "message": msg, "done": done}
            if done:
                out.update(done_reason=reason, **_metrics(s, start, load_s, delay))
            resp = await sim.whole(request, orjson.dumps(out), f, delay * s.completion_tokens)
            ok = f is None or f.kind == "slow_first_token"
            return resp
        lines = [orjson.dumps({**head, "message": {"role": "assistant", "content": "",
                                                   "thinking": t}, "done": False}) + b"\n"
                 for t in s.reasoning]
        lines += [orjson.dumps({**head, "message": {"role": "assistant", "content": t},
                                "done": False}) + b"\n" for t in s.content]
        if s.tool_call:
            lines.append(orjson.dumps({**head, "message": {
                "role": "assistant", "content": "", "tool_calls": _native_calls(s)},
                "done": False}) + b"\n")
        final = orjson.dumps({**head, "message": {"role": "assistant", "content": ""},
                              "done": True, "done_reason": reason,
                              **_metrics(s, start, load_s, delay)}) + b"\n"
        sresp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await sresp.prepare(request)
        ok = await sim.emit(request, sresp, lines, final, f,
                            b'{"error":"simulated error mid-stream"}\n', b'{"model": oops\n')
        return sresp
    except _Fail as e:
        return _err(e.status, e.message, e.retry_after)
    finally:
        sim.release(m, sem, keep_alive, ok)


def _v1_effort(data: dict[str, Any]) -> str:
    effort = data.get("reasoning_effort")
    if effort is None and isinstance(data.get("reasoning"), dict):
        effort = data["reasoning"].get("effort")
    if effort is None:
        return "medium"
    if effort in ("low", "medium", "high"):
        return str(effort)
    raise _Fail(400, f"invalid reasoning value: '{effort}' (must be \"high\", \"medium\", "
                     '"low", or "none")')


def _v1_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _Fail(400, "[] is too short - 'messages'")
    for msg in messages:
        if not isinstance(msg, dict):
            raise _Fail(400, "invalid message format")
        for tc in msg.get("tool_calls") or []:
            try:
                orjson.loads((tc.get("function") or {}).get("arguments") or "{}")
            except (orjson.JSONDecodeError, TypeError, AttributeError):
                raise _Fail(400, "invalid tool call arguments") from None
    return messages


def _v1_calls(s: Script) -> list[dict[str, Any]]:
    if s.tool_call is None:
        return []
    name, args = s.tool_call
    return [{"id": _call_id(), "index": 0, "type": "function",
             "function": {"name": name, "arguments": orjson.dumps(args).decode()}}]


async def v1_chat(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    try:
        data = await _json_body(request)
        m = sim.lookup(data.get("model"))
        effort = _v1_effort(data)
        messages = _v1_messages(data.get("messages"))
        mt = data.get("max_tokens")
        s = build_script(messages, data.get("tools"), effort,
                         mt if isinstance(mt, int) and mt > 0 else None)
        f = sim.take_fault(m.tag)
        if await sim.pre_fault(request, f, m.tag):
            return web.Response()
        sem, _ = await sim.acquire(m, None)
    except _Fail as e:
        return _oai_err(e)
    ok = False
    delay = sim.cfg.token_delay_s
    head = {"id": f"chatcmpl-{random.randint(0, 999)}", "created": int(time.time()),
            "model": m.tag, "system_fingerprint": "fp_ollama"}
    usage = {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
             "total_tokens": s.prompt_tokens + s.completion_tokens}
    finish = s.finish_reason
    try:
        if not data.get("stream"):
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(s.content)}
            if s.reasoning:
                msg["reasoning"] = "".join(s.reasoning)
            if s.tool_call:
                msg["tool_calls"] = _v1_calls(s)
            if f is not None and f.kind == "no_terminator":
                finish = None  # type: ignore[assignment]
            body = orjson.dumps({**head, "object": "chat.completion", "choices": [
                {"index": 0, "message": msg, "finish_reason": finish}], "usage": usage})
            resp = await sim.whole(request, body, f, delay * s.completion_tokens)
            ok = f is None or f.kind == "slow_first_token"
            return resp

        def chunk(delta: dict[str, Any], fin: str | None = None) -> bytes:
            return b"data: " + orjson.dumps({**head, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": fin}]}) + b"\n\n"

        lines = [chunk({"role": "assistant", "content": "", "reasoning": t}) for t in s.reasoning]
        lines += [chunk({"role": "assistant", "content": t}) for t in s.content]
        if s.tool_call:
            lines.append(chunk({"role": "assistant", "content": "", "tool_calls": _v1_calls(s)}))
        final = chunk({}, finish)
        if (data.get("stream_options") or {}).get("include_usage"):
            final += b"data: " + orjson.dumps({**head, "object": "chat.completion.chunk",
                                               "choices": [], "usage": usage}) + b"\n\n"
        final += b"data: [DONE]\n\n"
        err = {"error": {"message": "simulated error mid-stream", "type": "api_error",
                         "param": None, "code": None}}
        sresp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await sresp.prepare(request)
        ok = await sim.emit(request, sresp, lines, final, f,
                            b"data: " + orjson.dumps(err) + b"\n\n", b"data: {oops\n\n")
        return sresp
    except _Fail as e:
        return _oai_err(e)
    finally:
        sim.release(m, sem, 300.0, ok)


async def api_ps(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    sim._expire()
    return web.json_response({"models": [
        {"name": m.tag, "model": m.tag, "size": m.size, "digest": m.digest,
         "details": _details(m.tag), "expires_at": _rfc3339(m.expires_at),
         "size_vram": m.size_vram, "context_length": m.context_length}
        for m in sim.models.values() if m.loaded]}, dumps=lambda o: orjson.dumps(o).decode())


def _tag_entry(m: _Model) -> dict[str, Any]:
    return {"name": m.tag, "model": m.tag, "modified_at": "2025-08-05T17:00:00.000000000Z",
            "size": m.size, "digest": m.digest, "details": _details(m.tag)}


async def api_tags(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    return web.json_response({"models": [_tag_entry(m) for m in sim.models.values()]})


async def api_version(request: web.Request) -> web.Response:
    return web.json_response({"version": request.app[SIM_KEY].cfg.version})


async def api_show(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    try:
        data = await _json_body(request)
        tag = data.get("model") or data.get("name")
        m = sim.models.get(tag) if isinstance(tag, str) else None
        if m is None:
            raise _Fail(404, f"model '{tag}' not found")
    except _Fail as e:
        return _err(e.status, e.message)
    entry = _tag_entry(m)
    return web.json_response({
        "modelfile": f"FROM {m.tag}\n", "parameters": "temperature 1", "template": "{{ .Prompt }}",
        "details": entry["details"], "modified_at": entry["modified_at"],
        "model_info": {"general.architecture": "gptoss", "gptoss.context_length": 131072,
                       "gptoss.embedding_length": 2880, "gptoss.block_count": 24},
        "capabilities": ["completion", "tools", "thinking"]})


async def v1_models(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    return web.json_response({"object": "list", "data": [
        {"id": tag, "object": "model", "created": 1754413200, "owned_by": "library"}
        for tag in sim.models]})


async def sim_faults(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    if request.method == "DELETE":
        sim.faults.clear()
        return web.json_response({"ok": True})
    try:
        data = await _json_body(request)
        faults = [Fault.from_dict(d) for d in data.get("faults") or []]
    except (_Fail, ValueError, TypeError, AttributeError) as exc:
        return _err(400, str(exc))
    sim.faults.add(faults)
    return web.json_response({"ok": True, "added": len(faults)})


async def sim_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_KEY].stats.as_dict())


async def sim_reset(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    sim.faults.clear()
    sim.stats.reset()
    sim.restore()
    return web.json_response({"ok": True})


async def sim_config(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    try:
        data = await _json_body(request)
    except _Fail as e:
        return _err(e.status, e.message)
    for key in ("token_delay_s", "load_time_s", "max_queue", "parallel"):
        if isinstance(data.get(key), int | float):
            setattr(sim.cfg, key, type(getattr(sim.cfg, key))(data[key]))
    if "parallel" in data:
        for m in sim.models.values():
            m.sem = asyncio.Semaphore(sim.cfg.parallel)
    return web.json_response({k: getattr(sim.cfg, k)
                              for k in ("token_delay_s", "load_time_s", "max_queue", "parallel")})


def create_app(config: OllamaSimConfig | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    sim = OllamaSim(config or OllamaSimConfig())
    app[SIM_KEY] = sim

    async def on_startup(_: web.Application) -> None:
        sim.reset_sync()  # asyncio primitives bound to this loop

    app.on_startup.append(on_startup)
    app.router.add_post("/api/chat", api_chat)
    app.router.add_get("/api/ps", api_ps)
    app.router.add_get("/api/tags", api_tags)
    app.router.add_get("/api/version", api_version)
    app.router.add_post("/api/show", api_show)
    app.router.add_post("/v1/chat/completions", v1_chat)
    app.router.add_get("/v1/models", v1_models)
    app.router.add_post("/_sim/faults", sim_faults)
    app.router.add_delete("/_sim/faults", sim_faults)
    app.router.add_get("/_sim/stats", sim_stats)
    app.router.add_post("/_sim/reset", sim_reset)
    app.router.add_post("/_sim/config", sim_config)
    app.router.add_get("/", root)
    return app


async def root(_: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


def _parse_models(spec: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        tag, _, gb = item.partition("=")
        out[tag] = float(gb or 14)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m router.simulators.ollama", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument("--models", default="gpt-oss:20b=14,gpt-oss:120b=65", help="tag=GiB,...")
    p.add_argument("--gpu-gb", type=float, default=24.0)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--max-queue", type=int, default=512)
    p.add_argument("--token-delay", type=float, default=0.01)
    p.add_argument("--load-time", type=float, default=0.0)
    p.add_argument("--context", type=int, default=8192)
    p.add_argument("--resident", default=None, help="tags loaded at start (default: all that fit)")
    a = p.parse_args(argv)
    resident = set(filter(None, a.resident.split(","))) if a.resident is not None else None
    cfg = OllamaSimConfig(models=_parse_models(a.models), gpu_gb=a.gpu_gb, parallel=a.parallel,
                          max_queue=a.max_queue, token_delay_s=a.token_delay,
                          load_time_s=a.load_time, context_length=a.context, resident=resident)
    run_forever(create_app(cfg), a.host, a.port)


if __name__ == "__main__":
    main()
