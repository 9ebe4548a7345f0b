"""Ollama simulator: the native API (`/api/chat`, `/api/ps`, `/api/tags`, `/api/version`,
`/api/show`, `/api/status`) and Ollama's OpenAI surface (`/v1/chat/completions`, `/v1/models`),
per docs/protocols.md, Ollama.

Cloud models (`cloud_models`) behave as Ollama's do: `/api/tags` lists them with `remote_host`
and `remote_model`, `/api/ps` never does, a chat answers with the remote fields added (and
counts `cloud_requests`: what would have left the host), or 403 when cloud is disabled.
`/api/status` reports `{"cloud": {"disabled", "source"}}` when `cloud_disabled` is set, and is
a 404 otherwise (Ollama before 0.16.2).

Models answer gpt-oss style (thinking tokens, then content or one tool call; `script.py`); a
final `assistant` message is a prefill the answer continues from (`prefill.py`). `truncate:
false` with a prompt over the context (`options.num_ctx`, else `--context` [TAG=]N) is Ollama's
400 `{"error": "the input length exceeds the context length"}`; absent or true it answers (Ollama
truncates the history). Service time (`service_time.py`: answer lengths, prefill rate, decode
slowed by the model's busy slots) comes from the `--answer-tokens`, `--seed`, `--prefill-tps` and
`--batch-slowdown` flags or `OllamaSimConfig`.
Residency is modelled: models have a size (GiB, 1 GiB = 2**30 bytes) and the card `gpu_gb`; a
model that is not resident is loaded first (`load_time_s`), evicting idle least-recently-used
models to make room; one bigger than the free memory loads partly (`size_vram < size`).
Each model has `parallel` slots (OLLAMA_NUM_PARALLEL); further requests wait, and more than
`max_queue` waiting requests get Ollama's 503. `SimStats.in_flight` counts requests holding a
slot. Faults (script.py vocabulary) apply per request on both surfaces; control endpoints:
`/_sim/faults`, `/_sim/stats`, `/_sim/reset`, `/_sim/config` (token_delay_s, parallel,
prefill_tps, batch_slowdown, ...).

This module owns the native API handlers, the control endpoints, `create_app` and `main`; the
shared state (config, residency, slots, fault-aware writers) is in `ollama_state.py` and the
OpenAI surface in `ollama_openai.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from typing import Any

import orjson
from aiohttp import web

from router_simulators import service_time
from router_simulators.ollama_openai import v1_chat, v1_models
from router_simulators.ollama_state import BUSY as BUSY
from router_simulators.ollama_state import JSON_TYPE, Fail, Model, call_id, json_body
from router_simulators.ollama_state import SIM_KEY as SIM_KEY
from router_simulators.ollama_state import GiB as GiB
from router_simulators.ollama_state import OllamaSim as OllamaSim
from router_simulators.ollama_state import OllamaSimConfig as OllamaSimConfig
from router_simulators.ollama_state import keep_alive_s as _keep_alive_s
from router_simulators.ollama_state import rfc3339 as _rfc3339
from router_simulators.prefill import is_prefill, scripted_answer
from router_simulators.script import Fault, Script, build_script
from router_simulators.server import run_forever

_CONFIG_KEYS = ("token_delay_s", "load_time_s", "max_queue", "parallel", "prefill_tps",
                "batch_slowdown")
_THINK = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
def _details(tag: str) -> dict[str, Any]:
    size = tag.rsplit(":", 1)[-1].upper()
    return {"parent_model": "", "format": "gguf", "family": "gptoss", "families": ["gptoss"],
            "parameter_size": size, "quantization_level": "MXFP4"}


def _err(status: int, msg: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
    return web.Response(body=orjson.dumps({"error": msg}), status=status, content_type=JSON_TYPE,
                        headers=headers)


def _effort(think: Any) -> str:
    if think is None or isinstance(think, bool):
        return "medium"  # gpt-oss ignores true/false: the trace is always on
    if isinstance(think, str) and think in _THINK:
        return _THINK[think]
    raise Fail(400, f'invalid think value: "{think}" (must be "high", "medium", "low", '
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
    return [{"id": call_id(), "function": {"index": 0, "name": name, "arguments": args}}]


async def _cloud_chat(request: web.Request, sim: OllamaSim, tag: str,
                      data: dict[str, Any]) -> web.StreamResponse:
    """A cloud model: Ollama forwards it to its remote host (here: answers itself)."""
    if sim.cfg.cloud_disabled:
        return _err(403, "ollama cloud is disabled: remote inference is unavailable")
    sim.cloud_requests += 1
    messages = data.get("messages") or []
    s = build_script(messages if isinstance(messages, list) else [], data.get("tools"),
                     _effort(data.get("think")), None)
    head = {"model": tag, "remote_model": sim.cfg.cloud_models[tag],
            "remote_host": sim.cfg.remote_host, "created_at": _rfc3339(time.time())}
    final = {**head, "message": {"role": "assistant", "content": ""}, "done": True,
             "done_reason": "stop", "prompt_eval_count": s.prompt_tokens,
             "eval_count": s.completion_tokens}
    if data.get("stream") is False:
        final["message"] = {"role": "assistant", "content": "".join(s.content),
                            "thinking": "".join(s.reasoning)}
        return web.Response(body=orjson.dumps(final), content_type=JSON_TYPE)
    lines = [orjson.dumps({**head, "message": {"role": "assistant", "content": t},
                           "done": False}) + b"\n" for t in s.content]
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    await resp.write(b"".join(lines) + orjson.dumps(final) + b"\n")
    return resp


async def api_chat(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM_KEY]
    try:
        data = await json_body(request)
        cloud = sim.cloud_model(data.get("model"))
        if cloud is not None:
            return await _cloud_chat(request, sim, cloud, data)
        m = sim.lookup(data.get("model"))
        effort = _effort(data.get("think"))
        keep_alive = _keep_alive_s(data.get("keep_alive"))
        opts = data.get("options") or {}
        if not isinstance(opts, dict):
            raise Fail(400, "options must be an object")
        num_ctx = opts.get("num_ctx") if isinstance(opts.get("num_ctx"), int) else None
        messages = data.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(x, dict) for x in messages):
            raise Fail(400, "messages must be a list of objects")
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
                content_type=JSON_TYPE)
        sim.check_context(m, num_ctx, messages, data.get("truncate"))
        predict = opts.get("num_predict")
        f = sim.take_fault(m.tag, is_prefill(messages))
        s = scripted_answer(messages, data.get("tools"), effort,
                            predict if isinstance(predict, int) and predict > 0 else None,
                            echo=f is not None and f.kind == "echo_prefill",
                            lengths=sim.cfg.answer_lengths, model=m.tag)
        if await sim.pre_fault(request, f, m.tag):
            return web.Response()
        start = time.time_ns()
        sem, load_s = await sim.acquire(m, num_ctx)
    except Fail as e:
        return _err(e.status, e.message, e.retry_after)
    ok = False
    delay = sim.pace(m)
    reason = "length" if s.finish_reason == "length" else "stop"
    head = {"model": m.tag, "created_at": now}
    try:
        await sim.prefill(s)
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
                            b'{"error":"simulated error mid-stream"}\n', b'{"model": oops\n', m)
        return sresp
    except Fail as e:
        return _err(e.status, e.message, e.retry_after)
    finally:
        sim.release(m, sem, keep_alive, ok)


async def api_ps(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    sim.expire()
    return web.json_response({"models": [
        {"name": m.tag, "model": m.tag, "size": m.size, "digest": m.digest,
         "details": _details(m.tag), "expires_at": _rfc3339(m.expires_at),
         "size_vram": m.size_vram, "context_length": m.context_length}
        for m in sim.models.values() if m.loaded]}, dumps=lambda o: orjson.dumps(o).decode())


def _tag_entry(m: Model) -> dict[str, Any]:
    return {"name": m.tag, "model": m.tag, "modified_at": "2025-08-05T17:00:00.000000000Z",
            "size": m.size, "digest": m.digest, "details": _details(m.tag)}


def _cloud_entry(tag: str, remote: str, host: str) -> dict[str, Any]:
    return {"name": tag, "model": tag, "remote_model": remote, "remote_host": host,
            "modified_at": "2025-09-20T17:00:00.000000000Z", "size": 384,
            "digest": hashlib.sha256(tag.encode()).hexdigest(), "details": _details(remote)}


async def api_tags(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    cloud = [_cloud_entry(t, r, sim.cfg.remote_host) for t, r in sim.cfg.cloud_models.items()]
    return web.json_response({"models": [_tag_entry(m) for m in sim.models.values()] + cloud})


async def api_status(request: web.Request) -> web.Response:
    cfg = request.app[SIM_KEY].cfg
    if cfg.cloud_disabled is None:
        return web.Response(status=404, text="404 page not found")
    return web.json_response({"cloud": {"disabled": cfg.cloud_disabled,
                                        "source": cfg.cloud_source}})


async def api_version(request: web.Request) -> web.Response:
    return web.json_response({"version": request.app[SIM_KEY].cfg.version})


async def api_show(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    try:
        data = await json_body(request)
        tag = data.get("model") or data.get("name")
        m = sim.models.get(tag) if isinstance(tag, str) else None
        if m is None:
            raise Fail(404, f"model '{tag}' not found")
    except Fail as e:
        return _err(e.status, e.message)
    entry = _tag_entry(m)
    return web.json_response({
        "modelfile": f"FROM {m.tag}\n", "parameters": "temperature 1", "template": "{{ .Prompt }}",
        "details": entry["details"], "modified_at": entry["modified_at"],
        "model_info": {"general.architecture": "gptoss", "gptoss.context_length": 131072,
                       "gptoss.embedding_length": 2880, "gptoss.block_count": 24},
        "capabilities": ["completion", "tools", "thinking"]})


async def sim_faults(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    if request.method == "DELETE":
        sim.faults.clear()
        return web.json_response({"ok": True})
    try:
        data = await json_body(request)
        faults = [Fault.from_dict(d) for d in data.get("faults") or []]
    except (Fail, ValueError, TypeError, AttributeError) as exc:
        return _err(400, str(exc))
    sim.faults.add(faults)
    return web.json_response({"ok": True, "added": len(faults)})


async def sim_stats(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    return web.json_response({**sim.stats.as_dict(), "cloud_requests": sim.cloud_requests})


async def sim_reset(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    sim.faults.clear()
    sim.stats.reset()
    sim.cloud_requests = 0
    sim.restore()
    return web.json_response({"ok": True})


async def sim_config(request: web.Request) -> web.Response:
    sim = request.app[SIM_KEY]
    try:
        data = await json_body(request)
    except Fail as e:
        return _err(e.status, e.message)
    for key in _CONFIG_KEYS:
        if isinstance(data.get(key), int | float):
            setattr(sim.cfg, key, type(getattr(sim.cfg, key))(data[key]))
    if "parallel" in data:
        for m in sim.models.values():
            m.sem = asyncio.Semaphore(sim.cfg.parallel)
    return web.json_response({k: getattr(sim.cfg, k) for k in _CONFIG_KEYS})


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
    app.router.add_get("/api/status", api_status)
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
    p = argparse.ArgumentParser(prog="python -m router_simulators.ollama", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=11434)
    p.add_argument("--models", default="gpt-oss:20b=14,gpt-oss:120b=65", help="tag=GiB,...")
    p.add_argument("--gpu-gb", type=float, default=24.0)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--max-queue", type=int, default=512)
    p.add_argument("--token-delay", type=float, default=0.01)
    p.add_argument("--load-time", type=float, default=0.0)
    p.add_argument("--context", action="append", default=[], help="default num_ctx (N), or "
                   "per model (TAG=N); repeatable; default 8192")
    p.add_argument("--resident", default=None, help="tags loaded at start (default: all that fit)")
    p.add_argument("--cloud-models", default="", help="cloud tag=remote model,... (e.g. "
                   "gpt-oss:120b-cloud=gpt-oss:120b)")
    service_time.add_flags(p)
    p.add_argument("--cloud-disabled", choices=("true", "false"), default=None,
                   help="serve /api/status with this (default: no /api/status, as before 0.16.2)")
    a = p.parse_args(argv)
    resident = set(filter(None, a.resident.split(","))) if a.resident is not None else None
    lengths, prefill_tps, slowdown = service_time.from_args(a)
    cfg = OllamaSimConfig(models=_parse_models(a.models), gpu_gb=a.gpu_gb, parallel=a.parallel,
                          max_queue=a.max_queue, token_delay_s=a.token_delay,
                          load_time_s=a.load_time, resident=resident, answer_lengths=lengths,
                          prefill_tps=prefill_tps, batch_slowdown=slowdown,
                          context_length=next((int(c) for c in a.context if "=" not in c), 8192),
                          model_context={t: int(n) for t, _, n in
                                         (c.rpartition("=") for c in a.context if "=" in c)},
                          cloud_models=dict(i.split("=", 1) for i in a.cloud_models.split(",")
                                            if "=" in i),
                          cloud_disabled=None if a.cloud_disabled is None
                          else a.cloud_disabled == "true")
    run_forever(create_app(cfg), a.host, a.port)


if __name__ == "__main__":
    main()
