"""Routing under overload: three policies replay one Poisson arrival trace at 2x local capacity.

Simulated Ollama (`--parallel` slots, `--token-delay` seconds per token) and Bedrock run in
their own processes; three routers run the three policies, each with its own simulated Ollama
(same configuration, so the three replays can run at the same time; `--sequential` runs them
one after another) and all with the one simulated Bedrock:

- `local-only`: every request goes to the local slots and waits its turn;
- `spill-on-error`: local first, Bedrock only when the local attempt fails, with a long local
  wait bound, which is what gateways do today (fallback on error, not on queueing);
- `hybrid`: hybrid-router's wait-aware spill: local while the estimated wait is within
  `--bound` seconds, else Bedrock; a request admitted locally waits at most the bound.

Every router is first calibrated with a few requests one at a time (the unloaded service time
of each backend, which also seeds the router's own service-time estimate); local capacity is
`parallel / unloaded local latency`, and one seeded Poisson trace at `--load` times that rate
(`--private-share` of requests carry `X-Privacy: private`) is replayed through each router in
turn. Requests are streamed, so cloud answers take simulated token time too. Measured from
the client: latency to the last byte, the backend (`x-router-backend`) and tokens (usage);
wait = latency minus the unloaded latency of the backend that answered; local slot
utilisation = mean `in_flight / parallel` polled from the simulator every 50 ms while requests
arrive. Target (hybrid): utilisation >= 90%, p95 wait <= 1.1 x bound, no private request on the
cloud. It reports; it does not assert (exit 0 unless the run itself broke).

    python -m benchmarks.routing [--duration 20] [--load 2] [--bound 1.0] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `router` and `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import orjson

from benchmarks.harness import (
    RESULTS,
    install_signal_handlers,
    machine,
    percentile,
    start_bedrock_sim,
    start_ollama_sim,
    start_router,
    stop_all,
    write_json,
)

POLICIES = ("local-only", "spill-on-error", "hybrid")
FOREVER_S = 86400.0  # a wait bound never reached: queue locally, leave only on error
CALIBRATE = {"x-bench-route": "cloud"}  # a route only the calibration uses (cloud policies)
PROMPTS = ("Summarise why local inference matters for {i}.",
           "Give one tip about GPU scheduling, case {i}.",
           "What is queueing delay? Example {i}.")


@dataclass(frozen=True)
class Arrival:
    at_s: float
    private: bool
    prompt: str


@dataclass
class Outcome:
    arrival: Arrival
    start: float
    latency_s: float
    ok: bool
    backend: str
    reason: str
    tokens: int
    error: str = ""


def make_trace(rate_per_s: float, duration_s: float, private_share: float,
               seed: int) -> list[Arrival]:
    rng = random.Random(seed)
    out: list[Arrival] = []
    t = rng.expovariate(rate_per_s)
    while t < duration_s:
        i = len(out)
        out.append(Arrival(t, rng.random() < private_share,
                           PROMPTS[i % len(PROMPTS)].format(i=i)))
        t += rng.expovariate(rate_per_s)
    return out


def policy(kind: str, ollama_url: str, bedrock_url: str, parallel: int,
           bound_s: float) -> dict[str, Any]:
    backends: dict[str, Any] = {"local": {
        "type": "ollama", "base_url": ollama_url, "parallel": parallel, "gpu_memory_gb": 24,
        "probe_interval_s": 1.0, "models": {"gpt-oss-20b": "gpt-oss:20b"},
        "price": {"input_per_mtok": 0.07, "output_per_mtok": 0.3}}}
    routes: list[dict[str, Any]] = []
    targets = ["local"]
    if kind != "local-only":
        backends["bedrock"] = {"type": "bedrock", "endpoint_url": bedrock_url,
                               "context_window": 128000,
                               "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"},
                               "price": {"input_per_mtok": 0.07, "output_per_mtok": 0.3}}
        routes.append({"name": "calibrate-cloud", "match": {"headers": CALIBRATE},
                       "targets": ["bedrock"]})
        targets.append("bedrock")
    routes.append({"name": "private", "match": {"privacy": "private"}, "targets": ["local"]})
    routes.append({"name": "default", "targets": targets,
                   "max_queue_wait_s": bound_s if kind == "hybrid" else FOREVER_S})
    return {"version": 1, "models": {"gpt-oss-20b": {"vram_gb": 14}}, "backends": backends,
            "routes": routes, "privacy": {"private_max_queue_wait_s": FOREVER_S},
            "deadline_s": 900}


async def send(session: aiohttp.ClientSession, url: str, arrival: Arrival,
               extra_headers: dict[str, str] | None = None) -> Outcome:
    body = orjson.dumps({"model": "gpt-oss-20b", "stream": True,
                         "stream_options": {"include_usage": True},
                         "messages": [{"role": "user", "content": arrival.prompt}]})
    headers = {"Content-Type": "application/json", **(extra_headers or {})}
    if arrival.private:
        headers["X-Privacy"] = "private"
    start = time.perf_counter()
    backend = reason = error = ""
    tokens, ok = 0, False
    try:
        async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as r:
            data = await r.read()
            backend = r.headers.get("x-router-backend", "")
            reason = r.headers.get("x-router-reason", "")
            ok = r.status == 200 and data.endswith(b"data: [DONE]\n\n")
            if ok:
                tokens = _usage_tokens(data)
            else:
                error = f"{r.status}: {data[-200:]!r}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = repr(exc)
    return Outcome(arrival, start, time.perf_counter() - start, ok, backend, reason, tokens,
                   error)


def _usage_tokens(sse: bytes) -> int:
    for line in reversed(sse.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            usage = orjson.loads(line[6:]).get("usage") or {}
            return int(usage.get("total_tokens") or 0)
    return 0


async def calibrate(session: aiohttp.ClientSession, url: str, n: int,
                    cloud: bool) -> dict[str, float]:
    """Median unloaded latency per backend, one request at a time."""
    out: dict[str, float] = {}
    for name, headers in (("local", None), ("bedrock", CALIBRATE if cloud else None)):
        if name == "bedrock" and not cloud:
            continue
        lat = []
        for i in range(n):
            o = await send(session, url, Arrival(0.0, False, f"Calibration request {i}."),
                           headers)
            if not o.ok or o.backend != name:
                raise RuntimeError(f"calibration via {url} expected {name}, got "
                                   f"{o.backend or 'error'} {o.error}")
            lat.append(o.latency_s)
        out[name] = statistics.median(lat)
    return out


async def replay(session: aiohttp.ClientSession, url: str, sim_url: str,
                 trace: list[Arrival]) -> tuple[list[Outcome], list[tuple[float, int]]]:
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter() + 0.2
    last = trace[-1].at_s if trace else 0.0
    samples: list[tuple[float, int]] = []

    async def one(a: Arrival) -> Outcome:
        await asyncio.sleep(max(0.0, t0 + a.at_s - time.perf_counter()))
        return await send(session, url, a)

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
    outcomes = await asyncio.gather(*(one(a) for a in trace))
    await poller
    return list(outcomes), samples


_REASON = re.compile(r"^(queue_wait|context|failover_after)[_=].*")
_EST_WAIT = re.compile(r"^queue_wait_(\d+)ms>")


def reason_class(reason: str) -> str:
    return _REASON.sub(r"\1", reason) or "none"


def summarise(kind: str, outcomes: list[Outcome], util: list[tuple[float, int]],
              base: dict[str, float], parallel: int, bound_s: float) -> dict[str, Any]:
    ok = [o for o in outcomes if o.ok]
    local = [o for o in ok if o.backend == "local"]
    cloud = [o for o in ok if o.backend and o.backend != "local"]
    lat = sorted(o.latency_s for o in ok)
    waits = sorted(max(0.0, o.latency_s - base.get(o.backend, base["local"])) for o in ok)
    reasons: dict[str, int] = {}
    for o in outcomes:
        key = f"{o.backend or 'error'}:{reason_class(o.reason)}"
        reasons[key] = reasons.get(key, 0) + 1
    private = [o for o in outcomes if o.arrival.private]
    estimates = sorted(int(m.group(1)) / 1000 for o in outcomes
                       if (m := _EST_WAIT.match(o.reason)))
    n = len(outcomes)
    return {
        "policy": kind, "requests": n, "ok": len(ok), "errors": n - len(ok),
        "private_requests": len(private),
        "private_on_cloud": sum(1 for o in private if o.backend and o.backend != "local"),
        "private_errors": sum(1 for o in private if not o.ok),
        "local_share": _r(len(local) / len(ok) if ok else None),
        "local_utilisation": _r(sum(min(s, parallel) for _, s in util) / (parallel * len(util))
                                if util else None),
        "latency_p50_s": _r(percentile(lat, 50)), "latency_p95_s": _r(percentile(lat, 95)),
        "latency_max_s": _r(lat[-1] if lat else None),
        "wait_p50_s": _r(percentile(waits, 50)), "wait_p95_s": _r(percentile(waits, 95)),
        "share_wait_above_bound": _r(sum(1 for w in waits if w > bound_s) / len(waits)
                                     if waits else None),
        "share_wait_above_1.1x_bound": _r(sum(1 for w in waits if w > 1.1 * bound_s)
                                          / len(waits) if waits else None),
        "cloud_requests": len(cloud), "cloud_tokens": sum(o.tokens for o in cloud),
        "local_tokens": sum(o.tokens for o in local),
        "backend_reasons": dict(sorted(reasons.items())),
        # The router's own wait estimate on requests it judged over the bound (x-router-reason
        # `queue_wait_<ms>ms>...`): compare with the waits actually seen locally.
        "estimated_wait_when_over_bound_p50_s": _r(percentile(estimates, 50)),
        "local_wait_p95_s": _r(percentile(sorted(
            max(0.0, o.latency_s - base["local"]) for o in local), 95)),
        "error_samples": [o.error for o in outcomes if not o.ok][:5],
    }


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def targets_report(rows: dict[str, dict[str, Any]], bound_s: float) -> dict[str, Any]:
    h = rows.get("hybrid", {})
    util, p95 = h.get("local_utilisation"), h.get("wait_p95_s")
    return {
        "hybrid_local_utilisation": {"value": util, "limit": ">= 0.90",
                                     "met": util is not None and util >= 0.90},
        "hybrid_wait_p95_s": {"value": p95, "limit": f"<= {1.1 * bound_s:.3g}",
                              "met": p95 is not None and p95 <= 1.1 * bound_s},
        "private_on_cloud_any_policy": {
            "value": sum(r["private_on_cloud"] for r in rows.values()), "limit": "== 0",
            "met": all(r["private_on_cloud"] == 0 for r in rows.values())},
    }


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"\nrouting under {cfg['load']}x local capacity: {report['trace']['requests']} requests "
          f"over {cfg['duration_s']} s ({report['trace']['rate_per_s']} req/s, "
          f"{report['trace']['private']} private); {cfg['parallel']} local slots, unloaded "
          f"local {report['calibration']['local_s']} s, wait bound {cfg['bound_s']} s")
    cols = [("policy", "policy", 15, ""), ("local %", "local_share", 8, "%"),
            ("util %", "local_utilisation", 7, "%"), ("p50 s", "latency_p50_s", 7, ""),
            ("p95 s", "latency_p95_s", 7, ""), ("wait p95", "wait_p95_s", 9, ""),
            (">bound %", "share_wait_above_bound", 9, "%"), ("cloud tok", "cloud_tokens", 10, ""),
            ("priv->cloud", "private_on_cloud", 12, ""), ("errors", "errors", 7, "")]
    head = "".join(f"{c[0]:>{c[2]}}" if i else f"{c[0]:<{c[2]}}" for i, c in enumerate(cols))
    print(head)
    print("-" * len(head))
    for row in report["policies"].values():
        cells = []
        for i, (_, key, width, kind) in enumerate(cols):
            v = row.get(key)
            s = "-" if v is None else (f"{100 * v:.1f}" if kind == "%" else
                                       f"{v:.3f}" if isinstance(v, float) else str(v))
            cells.append(f"{s:<{width}}" if i == 0 else f"{s:>{width}}")
        print("".join(cells))
    print("targets (hybrid):")
    for name, t in report["targets"].items():
        print(f"  {name:<28} {t['value']!s:>8}  ({t['limit']})  {'met' if t['met'] else 'MISSED'}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.routing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals")
    p.add_argument("--load", type=float, default=2.0, help="arrival rate / local capacity")
    p.add_argument("--private-share", type=float, default=0.2)
    p.add_argument("--bound", type=float, default=1.0, help="hybrid wait bound (s)")
    p.add_argument("--parallel", type=int, default=2, help="local slots")
    p.add_argument("--token-delay", type=float, default=0.015, help="local s per token")
    p.add_argument("--cloud-token-delay", type=float, default=None,
                   help="Bedrock s per token (default: same as local)")
    p.add_argument("--calibration", type=int, default=5, help="requests per backend")
    p.add_argument("--seed", type=int, default=20250805)
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--sequential", action="store_true",
                   help="replay the policies one after another (default: at the same time, "
                        "each on its own simulated Ollama)")
    p.add_argument("--quick", action="store_true", help="a few seconds (smoke test)")
    p.add_argument("--out", type=Path, default=RESULTS / "routing.json")
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.token_delay, a.bound, a.calibration = 2.0, 0.005, 0.3, 3
    if a.cloud_token_delay is None:
        a.cloud_token_delay = a.token_delay
    a.policies = [x for x in a.policies.split(",") if x]
    unknown = set(a.policies) - set(POLICIES)
    if unknown:
        p.error(f"unknown policies {sorted(unknown)} (known: {', '.join(POLICIES)})")
    return a


async def run(args: argparse.Namespace, routers: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """`routers`: policy -> (router URL, URL of that router's own Ollama simulator)."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=900)) as session:
        calib = {k: await calibrate(session, url, args.calibration, cloud=k != "local-only")
                 for k, (url, _) in routers.items()}
        ref = calib.get("hybrid") or next(iter(calib.values()))
        local_s = ref["local"]
        rate = args.load * args.parallel / local_s
        trace = make_trace(rate, args.duration, args.private_share, args.seed)
        print(f"unloaded latency {ref}; capacity {args.parallel / local_s:.1f} req/s; "
              f"trace {len(trace)} arrivals at {rate:.1f} req/s", flush=True)
        rows: dict[str, dict[str, Any]] = {}

        async def one_policy(kind: str) -> None:
            url, sim_url = routers[kind]
            began = time.perf_counter()
            outcomes, util = await replay(session, url, sim_url, trace)
            base = {**calib[kind], "bedrock": calib.get("hybrid", calib[kind]).get(
                "bedrock", local_s)}
            rows[kind] = summarise(kind, outcomes, util, base, args.parallel, args.bound)
            rows[kind]["wall_s"] = round(time.perf_counter() - began, 1)
            print(f"  {kind}: {rows[kind]['ok']} ok, {rows[kind]['errors']} errors, "
                  f"{rows[kind]['wall_s']} s", flush=True)

        if args.sequential:
            for kind in routers:
                await one_policy(kind)
        else:
            await asyncio.gather(*(one_policy(k) for k in routers))
        rows = {k: rows[k] for k in routers}
    return {"calibration": {"local_s": _r(local_s), "bedrock_s": _r(ref.get("bedrock")),
                            "per_router": calib},
            "trace": {"requests": len(trace), "rate_per_s": round(rate, 2),
                      "private": sum(1 for a in trace if a.private), "seed": args.seed},
            "policies": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="hr-routing-") as tmp:
        logdir = Path(tmp)
        try:
            # One Ollama simulator per policy (their queues must not mix), one shared Bedrock.
            sims = {k: start_ollama_sim(logdir, parallel=args.parallel, name=f"ollama-{k}",
                                        token_delay_s=args.token_delay) for k in args.policies}
            bed, bed_url = start_bedrock_sim(logdir, token_delay_s=args.cloud_token_delay)
            started = {k: start_router(k, policy(k, sims[k][1], bed_url, args.parallel,
                                                 args.bound), logdir) for k in args.policies}
            for child in (bed, *(c for c, _ in sims.values()),
                          *(c for c, _ in started.values())):
                child.wait_ready()
            result = asyncio.run(run(args, {k: (u, sims[k][1])
                                            for k, (_, u) in started.items()}))
        except (RuntimeError, OSError, aiohttp.ClientError) as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_all()
    report = {
        "benchmark": "routing", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_before": load_before,
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "config": {"duration_s": args.duration, "load": args.load, "bound_s": args.bound,
                   "parallel": args.parallel, "token_delay_s": args.token_delay,
                   "cloud_token_delay_s": args.cloud_token_delay,
                   "private_share": args.private_share, "sequential": args.sequential,
                   "quick": args.quick},
        **result,
        "targets": targets_report(result["policies"], args.bound),
    }
    write_json(args.out, report)
    print_report(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
