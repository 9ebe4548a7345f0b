"""Router overhead: the same fast upstream called directly and through the router.

Starts the Ollama simulator with zero token delay in its own process, the router (`python -m
router.cli serve`) in another, and drives both from this process with an asyncio load
generator: N workers sending requests back to back for a fixed time, after a warm-up that is
not measured. Direct = the simulator's own OpenAI surface (`/v1/chat/completions`, same JSON
body); router = the router's `/v1/chat/completions` (model `gpt-oss-20b`, routed to the same
simulator). Non-streamed cells, and streamed ones (time to last byte) unless `--no-stream`.
`--redis URL` adds a router on the shared Redis store, to report what the store adds. Each
cell is measured in `--rounds` stretches that alternate between the targets, so a burst of
other load on a shared machine hits direct and router alike.

Reports, per (target, mode, concurrency): requests per second, p50/p99/mean latency, errors
and CPU milliseconds per request of each process; the router's added p50 and throughput ratio;
its resident memory (VmRSS now, VmHWM peak). Prints a table, writes JSON. It measures, it does
not assert: exit 0 unless the run itself broke (a process did not start, a preflight answer
was malformed). Targets (2-core machine, one router worker): +1 ms p50 at concurrency 1;
>= 1500 req/s with no errors at concurrency 32; RSS < 150 MB; Redis adds < 1 ms p50.

    python -m benchmarks.overhead [--duration 5] [--warmup 1] [--redis redis://127.0.0.1:6379/0]

Child processes, /proc readings and percentiles come from `benchmarks/harness.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import secrets
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
    clean_redis,
    cpu_seconds,
    install_signal_handlers,
    machine,
    memory_mb,
    percentile,
    redis_reachable,
    start_ollama_sim,
    start_router,
    stop_all,
    store_status,
    write_json,
)

PROMPT = "In one sentence, why keep inference local when a GPU is available?"

# --------------------------------------------------------------------------------------------
# Load generator
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str  # "direct", "router", "router+redis"
    url: str  # full chat-completions URL
    model: str
    pids: dict[str, int]  # process name -> pid, for CPU accounting


def chat_body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


def answer_ok(status: int, data: bytes, stream: bool) -> bool:
    if status != 200:
        return False
    return data.endswith(b"data: [DONE]\n\n") if stream else data.startswith(b"{")


async def preflight(session: aiohttp.ClientSession, target: Target, stream: bool) -> None:
    """One request, checked in full: a broken setup stops the run instead of timing errors."""
    async with session.post(target.url, data=chat_body(target.model, stream),
                            headers={"Content-Type": "application/json"}) as r:
        data = await r.read()
        if not answer_ok(r.status, data, stream):
            raise RuntimeError(f"{target.name}: bad answer {r.status}: {data[:300]!r}")
        if not stream:
            msg = orjson.loads(data)["choices"][0]["message"]
            if not msg.get("content"):
                raise RuntimeError(f"{target.name}: empty answer: {data[:300]!r}")
        if target.name.startswith("router") and r.headers.get("x-router-backend") != "local":
            raise RuntimeError(f"{target.name}: not served locally: {dict(r.headers)}")


@dataclass
class Round:
    """One measured stretch of one cell: latencies of good answers, counts, CPU seconds."""

    lat_ms: list[float]
    requests: int
    errors: int
    duration_s: float
    cpu_s: dict[str, float]
    failures: list[str]


async def measure(session: aiohttp.ClientSession, target: Target, *, stream: bool,
                  concurrency: int, duration_s: float, warmup_s: float) -> Round:
    """`concurrency` workers back to back; requests that END inside the window are measured."""
    body = chat_body(target.model, stream)
    headers = {"Content-Type": "application/json"}
    samples: list[tuple[float, float, bool]] = []
    failures: list[str] = []
    now = time.perf_counter()
    t_measure, t_end = now + warmup_s, now + warmup_s + duration_s

    async def worker() -> None:
        while (t0 := time.perf_counter()) < t_end:
            ok = False
            try:
                async with session.post(target.url, data=body, headers=headers) as r:
                    data = await r.read()
                    ok = answer_ok(r.status, data, stream)
                    if not ok and len(failures) < 5:
                        failures.append(f"{r.status}: {data[:200]!r}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                if len(failures) < 5:
                    failures.append(repr(exc))
            samples.append((t0, time.perf_counter(), ok))

    def cpu_now() -> dict[str, float]:
        return {**{n: cpu_seconds(p) for n, p in target.pids.items()},
                "loadgen": time.process_time()}

    cpu_before: dict[str, float] = {}

    async def mark() -> None:
        await asyncio.sleep(warmup_s)
        cpu_before.update(cpu_now())

    marker = asyncio.create_task(mark())
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await marker
    cpu_after = cpu_now()  # a little late: includes the requests still running at t_end
    window = [(t0, t1, ok) for t0, t1, ok in samples if t_measure <= t1 <= t_end]
    return Round(lat_ms=[(t1 - t0) * 1000 for t0, t1, ok in window if ok],
                 requests=len(window), errors=sum(1 for *_, ok in window if not ok),
                 duration_s=duration_s, cpu_s={k: cpu_after[k] - cpu_before[k] for k in cpu_after},
                 failures=failures)


def cell_stats(target: str, stream: bool, concurrency: int,
               rounds: list[Round]) -> dict[str, Any]:
    """Merge the rounds of one (target, mode, concurrency) cell."""
    lat = sorted(x for r in rounds for x in r.lat_ms)
    n = sum(r.requests for r in rounds)
    secs = sum(r.duration_s for r in rounds)
    cpu = {k: sum(r.cpu_s[k] for r in rounds) for k in rounds[0].cpu_s}
    return {
        "target": target, "mode": "stream" if stream else "json",
        "concurrency": concurrency, "duration_s": round(secs, 3), "rounds": len(rounds),
        "requests": n, "errors": sum(r.errors for r in rounds),
        "rps": round(len(lat) / secs, 1),
        "p50_ms": _r(percentile(lat, 50)), "p99_ms": _r(percentile(lat, 99)),
        "mean_ms": _r(sum(lat) / len(lat) if lat else None), "max_ms": _r(lat[-1] if lat else None),
        "cpu_ms_per_req": {k: _r(v * 1000 / n if n else None) for k, v in cpu.items()},
        "cpu_cores": {k: _r(v / secs, 2) for k, v in cpu.items()},
        "failures": [f for r in rounds for f in r.failures][:5],
    }


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def overhead_policy(sim_url: str) -> dict[str, Any]:
    """Only the local simulator; slots and queue bound far above the benchmark's load."""
    return {
        "version": 1,
        "models": {"gpt-oss-20b": {"vram_gb": 14}},
        "backends": {"local": {"type": "ollama", "base_url": sim_url, "parallel": 64,
                               "gpu_memory_gb": 24, "models": {"gpt-oss-20b": "gpt-oss:20b"}}},
        "routes": [{"name": "default", "targets": ["local"], "max_queue_wait_s": 60}],
        "privacy": {"detector": {"enabled": True}},
    }


async def drive(targets: list[Target], args: argparse.Namespace) -> list[dict[str, Any]]:
    modes = [False] if args.no_stream else [False, True]
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=30)
    cells: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for target in targets:
            for stream in modes:
                await preflight(session, target, stream)
        # Rounds alternate between the targets so a burst of other load on the machine hits
        # every target alike; the first round of each cell also warms up.
        for stream in modes:
            for conc in args.concurrency:
                rounds: dict[str, list[Round]] = {t.name: [] for t in targets}
                for i in range(args.rounds):
                    for target in targets:
                        rounds[target.name].append(await measure(
                            session, target, stream=stream, concurrency=conc,
                            duration_s=args.duration / args.rounds,
                            warmup_s=args.warmup if i == 0 else min(args.warmup, 0.2)))
                for target in targets:
                    cell = cell_stats(target.name, stream, conc, rounds[target.name])
                    cells.append(cell)
                    print(f"  {cell['target']:<13} {cell['mode']:<6} c={conc:<3} "
                          f"{cell['rps']:>8.1f} req/s  p50 {cell['p50_ms']} ms  "
                          f"errors {cell['errors']}", flush=True)
    return cells


def compare(cells: list[dict[str, Any]], base: str, other: str) -> list[dict[str, Any]]:
    by = {(c["target"], c["mode"], c["concurrency"]): c for c in cells}
    out = []
    for (t, mode, conc), b in by.items():
        o = by.get((other, mode, conc))
        if t != base or o is None or b["p50_ms"] is None or o["p50_ms"] is None:
            continue
        out.append({"base": base, "target": other, "mode": mode, "concurrency": conc,
                    "added_p50_ms": _r(o["p50_ms"] - b["p50_ms"]),
                    "added_p99_ms": _r(o["p99_ms"] - b["p99_ms"]),
                    "throughput_ratio": _r(o["rps"] / b["rps"] if b["rps"] else None)})
    return out


def targets_report(cells: list[dict[str, Any]], comparisons: list[dict[str, Any]],
                   memory: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    def cmp(base: str, target: str, conc: int) -> dict[str, Any]:
        return next((c for c in comparisons if c["base"] == base and c["target"] == target
                     and c["mode"] == "json" and c["concurrency"] == conc), {})

    def cell(target: str, conc: int) -> dict[str, Any]:
        return next((c for c in cells if c["target"] == target and c["mode"] == "json"
                     and c["concurrency"] == conc), {})

    out: dict[str, Any] = {}
    added = cmp("direct", "router", 1).get("added_p50_ms")
    out["c1_added_p50_ms"] = {"value": added, "limit": 1.0,
                              "met": added is not None and added <= 1.0}
    c32 = cell("router", 32)
    out["c32_router_rps"] = {"value": c32.get("rps"), "errors": c32.get("errors"),
                             "limit": 1500,
                             "met": bool(c32) and c32["rps"] >= 1500 and c32["errors"] == 0}
    hwm = memory.get("router", {}).get("hwm_mb")
    out["router_peak_rss_mb"] = {"value": hwm, "limit": 150, "met": hwm is not None and hwm < 150}
    if "router+redis" in memory:
        delta = cmp("router", "router+redis", 1).get("added_p50_ms")
        out["redis_added_p50_ms"] = {"value": delta, "limit": 1.0,
                                     "met": delta is not None and delta < 1.0}
    return out


def print_report(report: dict[str, Any]) -> None:
    print(f"\nrouter overhead  ({report['machine']['cpus']} CPUs, Python "
          f"{report['machine']['python']}, {report['config']['duration_s']} s per cell)")
    load = report["machine"].get("loadavg_before")
    print(f"load average before the run {load} (other processes share these CPUs); "
          "cpu: CPU ms per request (router/upstream/load generator) and cores the router used")
    head = (f"{'target':<13} {'mode':<6} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>6}  {'+p50 ms':>8} {'x rps':>6}  {'cpu ms/req':<19} {'cores':>5}")
    print(head)
    print("-" * len(head))
    cmps = {(c["target"], c["mode"], c["concurrency"]): c for c in report["comparisons"]
            if c["base"] == "direct"}
    for c in report["cells"]:
        k = cmps.get((c["target"], c["mode"], c["concurrency"]), {})
        cpu = c["cpu_ms_per_req"]
        cpu_s = "/".join(f"{cpu.get(n):.3f}" if cpu.get(n) is not None else "-"
                         for n in (_router_key(c["target"]), "upstream", "loadgen"))
        cores = c["cpu_cores"].get(_router_key(c["target"]))
        print(f"{c['target']:<13} {c['mode']:<6} {c['concurrency']:>4} {c['rps']:>9.1f} "
              f"{_f(c['p50_ms'])} {_f(c['p99_ms'])} {c['errors']:>6}  "
              f"{_f(k.get('added_p50_ms'))} {_f(k.get('throughput_ratio'), 6, 2)}  "
              f"{cpu_s:<19} {_f(cores, 5, 2)}")
    for name, mem in report["memory"].items():
        print(f"{name} resident memory: {mem['rss_mb']} MB now, {mem['hwm_mb']} MB peak")
    for name, st in report.get("stores", {}).items():
        if st.get("kind") != "memory":
            print(f"{name} state store after the run: {st}")
    for c in report["comparisons"]:
        if c["base"] == "router":
            print(f"shared store on Redis adds {c['added_p50_ms']} ms at p50, "
                  f"{c['added_p99_ms']} ms at p99 ({c['mode']}, concurrency {c['concurrency']})")
    print("targets:")
    for name, t in report["targets"].items():
        print(f"  {name:<20} {t['value']!s:>10}  (limit {t['limit']})  "
              f"{'met' if t['met'] else 'MISSED'}")


def _router_key(target: str) -> str:
    return target if target.startswith("router") else "-"


def _f(v: float | None, width: int = 8, nd: int = 3) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{nd}f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    p.add_argument("--rounds", type=int, default=5,
                   help="split each cell into this many rounds, alternating the targets")
    p.add_argument("--concurrency", default="1,32", help="comma-separated levels")
    p.add_argument("--no-stream", action="store_true", help="skip the streamed cells")
    p.add_argument("--redis", metavar="URL", help="also run a router on this Redis store")
    p.add_argument("--quick", action="store_true", help="short cells (smoke test)")
    p.add_argument("--out", type=Path, default=RESULTS / "overhead.json")
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.warmup, a.rounds = min(a.duration, 0.5), min(a.warmup, 0.2), 1
    a.concurrency = [int(x) for x in str(a.concurrency).split(",") if x.strip()]
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    redis_prefix = f"hrbench:{secrets.token_hex(4)}:"
    load_before = [round(x, 2) for x in os.getloadavg()]
    if args.redis and (why := redis_reachable(args.redis)):
        print(f"benchmark broke: no Redis at {args.redis}: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="hr-overhead-") as tmp:
        logdir = Path(tmp)
        try:
            sim, sim_url = start_ollama_sim(logdir, parallel=64, token_delay_s=0.0)
            routers: list[tuple[str, dict[str, str]]] = [("router", {})]
            if args.redis:
                routers.append(("router+redis", {"ROUTER_REDIS_URL": args.redis,
                                                 "ROUTER_REDIS_PREFIX": redis_prefix}))
            started = [(n, *start_router(n.replace("+", "-"), overhead_policy(sim_url), logdir,
                                         env)) for n, env in routers]
            sim.wait_ready()
            for _, child, _ in started:
                child.wait_ready()
            targets = [Target("direct", sim_url + "/v1/chat/completions", "gpt-oss:20b",
                              {"upstream": sim.pid})]
            targets += [Target(n, url + "/v1/chat/completions", "gpt-oss-20b",
                               {n: child.pid, "upstream": sim.pid}) for n, child, url in started]
            print(f"simulator pid {sim.pid}; " + "; ".join(
                f"{n} pid {c.pid}" for n, c, _ in started), flush=True)
            cells = asyncio.run(drive(targets, args))
            memory = {n: memory_mb(c.pid) for n, c, _ in started}
            stores = {n: store_status(url) for n, _, url in started}
            for n, c, _ in started:
                if c.proc.poll() is not None:
                    raise RuntimeError(f"{n} died during the run:\n{c.tail()}")
        except (RuntimeError, OSError, aiohttp.ClientError) as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_all()
            if args.redis:
                clean_redis(args.redis, redis_prefix)
    comparisons = compare(cells, "direct", "router")
    if args.redis:
        comparisons += compare(cells, "direct", "router+redis")
        comparisons += compare(cells, "router", "router+redis")
    report = {
        "benchmark": "overhead", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_before": load_before,
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "config": {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                   "concurrency": args.concurrency, "stream": not args.no_stream,
                   "redis": bool(args.redis), "quick": args.quick},
        "cells": cells, "comparisons": comparisons, "memory": memory, "stores": stores,
        "targets": targets_report(cells, comparisons, memory),
    }
    write_json(args.out, report)
    print_report(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
