"""The routing benchmark's live side: the three policies' router configs, one request (explain
then stream, timed to the first body byte and the last), calibration and a trace replay with
the local simulator's slots polled for utilisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from typing import Any

import aiohttp
import orjson

from benchmarks.routing_report import Outcome
from benchmarks.routing_traces import TraceRequest

POLICIES = ("local-only", "spill-on-error", "hybrid")
FOREVER_S = 86400.0  # a wait bound never reached: queue locally, leave only on error
CALIBRATE = {"x-bench-route": "cloud"}  # a route only the calibration uses (cloud policies)
LOCAL_PRICE = (0.07, 0.3)


def policy(kind: str, ollama_url: str, bedrock_url: str, parallel: int, bound_s: float,
           cloud_price: tuple[float, float]) -> dict[str, Any]:
    backends: dict[str, Any] = {"local": {
        "type": "ollama", "base_url": ollama_url, "parallel": parallel, "gpu_memory_gb": 24,
        "probe_interval_s": 1.0, "models": {"gpt-oss-20b": "gpt-oss:20b"},
        "price": {"input_per_mtok": LOCAL_PRICE[0], "output_per_mtok": LOCAL_PRICE[1]}}}
    routes: list[dict[str, Any]] = []
    targets = ["local"]
    if kind != "local-only":
        backends["bedrock"] = {"type": "bedrock", "endpoint_url": bedrock_url,
                               "context_window": 128000,
                               "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"},
                               "price": {"input_per_mtok": cloud_price[0],
                                         "output_per_mtok": cloud_price[1]}}
        routes.append({"name": "calibrate-cloud", "match": {"headers": CALIBRATE},
                       "targets": ["bedrock"]})
        targets.append("bedrock")
    routes.append({"name": "private", "match": {"privacy": "private"}, "targets": ["local"]})
    routes.append({"name": "default", "targets": targets,
                   "max_queue_wait_s": bound_s if kind == "hybrid" else FOREVER_S})
    out: dict[str, Any] = {
        "version": 1, "models": {"gpt-oss-20b": {"vram_gb": 14}}, "backends": backends,
        "routes": routes, "privacy": {"private_max_queue_wait_s": FOREVER_S}, "deadline_s": 900}
    if kind != "hybrid":  # a gateway's queue: no limit on the waiters ahead
        out["admission"] = {"max_waiting_ahead": None}
    return out


def _body(r: TraceRequest) -> bytes:
    body: dict[str, Any] = {"model": "gpt-oss-20b", "stream": True,
                            "stream_options": {"include_usage": True},
                            "messages": [{"role": "user", "content": r.prompt}]}
    if r.max_tokens is not None:
        body["max_tokens"] = r.max_tokens
    return orjson.dumps(body)


async def predicted_wait(session: aiohttp.ClientSession, url: str, body: bytes,
                         headers: dict[str, str]) -> float | None:
    """The local candidate's estimated wait from /v1/router/explain (None if not given)."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with session.post(url + "/v1/router/explain", data=body, headers=headers) as r:
            view = orjson.loads(await r.read())
        for c in view.get("candidates") or []:
            if c.get("local") and c.get("estimated_wait_s") is not None:
                return float(c["estimated_wait_s"])
    return None


async def send(session: aiohttp.ClientSession, url: str, req: TraceRequest,
               extra_headers: dict[str, str] | None = None, explain: bool = False) -> Outcome:
    body = _body(req)
    headers = {"Content-Type": "application/json", **(extra_headers or {})}
    if req.private:
        headers["X-Privacy"] = "private"
    pred = await predicted_wait(session, url, body, headers) if explain else None
    start = time.perf_counter()
    first: float | None = None
    backend = reason = error = ""
    ok, usage = False, {}
    try:
        async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as r:
            chunks = []
            async for chunk in r.content.iter_any():
                if first is None:
                    first = time.perf_counter() - start
                chunks.append(chunk)
            data = b"".join(chunks)
            backend = r.headers.get("x-router-backend", "")
            reason = r.headers.get("x-router-reason", "")
            ok = r.status == 200 and data.endswith(b"data: [DONE]\n\n")
            if ok:
                usage = _usage(data)
            else:
                error = f"{r.status}: {data[-200:]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = repr(exc)
    return Outcome(req, start, time.perf_counter() - start, first, ok, backend, reason,
                   int(usage.get("prompt_tokens") or 0),
                   int(usage.get("completion_tokens") or 0), pred, error)


def _usage(sse: bytes) -> dict[str, Any]:
    for line in reversed(sse.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            return orjson.loads(line[6:]).get("usage") or {}
    return {}


async def calibrate(session: aiohttp.ClientSession, url: str, n: int,
                    cloud: bool) -> dict[str, float]:
    """Median unloaded latency, time to first byte and answer tokens per backend."""
    out: dict[str, float] = {}
    for name, headers in (("local", None), ("bedrock", CALIBRATE if cloud else None)):
        if name == "bedrock" and not cloud:
            continue
        got = []
        for i in range(n):
            o = await send(session, url, TraceRequest(0.0, False, f"Calibration request {i}.",
                                                      0), headers)
            if not o.ok or o.backend != name:
                raise RuntimeError(f"calibration via {url} expected {name}, got "
                                   f"{o.backend or 'error'} {o.error}")
            got.append(o)
        out[name] = round(statistics.median(o.latency_s for o in got), 4)
        out[f"{name}_first_byte"] = round(statistics.median(o.first_byte_s or 0.0
                                                            for o in got), 4)
        out[f"{name}_tokens"] = statistics.median(o.completion_tokens for o in got)
    return out


async def replay(session: aiohttp.ClientSession, url: str, sim_url: str,
                 trace: list[TraceRequest], explain: bool
                 ) -> tuple[list[Outcome], list[tuple[float, int]], float]:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter() + 0.2
    last = trace[-1].at_s if trace else 0.0
    samples: list[tuple[float, int]] = []

    async def one(r: TraceRequest) -> Outcome:
        await asyncio.sleep(max(0.0, t0 + r.at_s - time.perf_counter()))
        return await send(session, url, r, explain=explain)

    async def poll() -> None:
        next_t = t0
        while (now := time.perf_counter()) <= t0 + last:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with session.get(sim_url + "/_sim/stats") as r:
                    stats = orjson.loads(await r.read())
                if now >= t0:
                    samples.append((now - t0, int(stats["in_flight"])))
            next_t += 0.05
            await asyncio.sleep(max(0.0, next_t - time.perf_counter()))

    poller = loop.create_task(poll())
    outcomes = await asyncio.gather(*(one(r) for r in trace))
    await poller
    return list(outcomes), samples, time.perf_counter() - t0
