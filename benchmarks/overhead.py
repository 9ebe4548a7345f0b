"""Router overhead: the same fast upstream called directly, through the thinnest proxy the
stack allows, and through the router.

Starts the Ollama simulator with zero token delay in its own process, the thinnest proxy
(`benchmarks/thin_proxy.py`: Starlette on uvicorn, uvloop, httptools, one pooled aiohttp
session, bytes forwarded) and the router (`python -m router.cli serve`) in others, and drives
them from this process with an asyncio load generator: N workers sending requests back to back
for a fixed time, after a warm-up that is not measured. Direct = the simulator's own OpenAI
surface (`/v1/chat/completions`, same JSON body); thin = that path through the thin proxy;
router = the router's `/v1/chat/completions` (model `gpt-oss-20b`, routed to the same
simulator). Non-streamed cells, and streamed ones (time to last byte) unless `--no-stream`.
`--redis URL` adds a router on the shared Redis store (what the store costs), and with it
`--workers N` (default 2; 1 = off) a router with N worker processes on that store (what more
cores buy). Each cell is measured in `--rounds` stretches that alternate between the targets,
so a burst of other load on a shared machine hits every target alike.

Reports, per (target, mode, concurrency): requests per second, p50/p99/mean latency, errors
and CPU milliseconds per request of each process (a multi-worker router: all its processes);
the comparisons and targets of `overhead_report.py` (the router as a fraction of the thin
proxy, added latency over direct, Redis against memory, N workers against one); resident memory
(VmRSS now, VmHWM peak; summed over workers). Prints a table, writes JSON. It measures, it does
not assert: exit 0 unless the run itself broke (a process did not start, a preflight answer
was malformed).

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
from benchmarks.overhead_report import all_comparisons, print_report, r3, targets_report
from benchmarks.thin_proxy import start_thin_proxy


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (a multi-worker router's workers), from /proc."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(x) for x in (task / "children").read_text().split()]
    return out


def memory_of(pid: int) -> dict[str, float | None]:
    """VmRSS/VmHWM of a process, summed over its children when it has any (the workers)."""
    workers = [p for p in child_pids(pid) if b"spawn_main" in _cmdline(p)]
    parts = [memory_mb(p) for p in (workers or [pid])]
    return {k: r3(sum(m[k] or 0.0 for m in parts), 1) for k in ("rss_mb", "hwm_mb")}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


PROMPT = "In one sentence, why keep inference local when a GPU is available?"

# --------------------------------------------------------------------------------------------
# Load generator
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str  # "thin", "direct", "router", "router+redis", "router+redis-2w"
    url: str  # full chat-completions URL
    model: str
    pids: dict[str, int]  # process name -> pid, for CPU accounting (with its children)


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
        return {**{n: sum(cpu_seconds(x) for x in (p, *child_pids(p)))
                    for n, p in target.pids.items()},
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
        "p50_ms": r3(percentile(lat, 50)), "p99_ms": r3(percentile(lat, 99)),
        "mean_ms": r3(sum(lat) / len(lat) if lat else None), "max_ms": r3(lat[-1] if lat else None),
        "cpu_ms_per_req": {k: r3(v * 1000 / n if n else None) for k, v in cpu.items()},
        "cpu_cores": {k: r3(v / secs, 2) for k, v in cpu.items()},
        "failures": [f for r in rounds for f in r.failures][:5],
    }


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per cell")
    p.add_argument("--rounds", type=int, default=5,
                   help="split each cell into this many rounds, alternating the targets")
    p.add_argument("--concurrency", default="1,16,32", help="comma-separated levels")
    p.add_argument("--no-stream", action="store_true", help="skip the streamed cells")
    p.add_argument("--redis", metavar="URL", help="also run a router on this Redis store")
    p.add_argument("--workers", type=int, default=2,
                   help="with --redis, also a router with this many workers on it (1 = none)")
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
                store = {"ROUTER_REDIS_URL": args.redis, "ROUTER_REDIS_PREFIX": redis_prefix}
                routers.append(("router+redis", store))
                if args.workers > 1:
                    routers.append((f"router+redis-{args.workers}w",
                                    {**store, "ROUTER_WORKERS": str(args.workers)}))
            started = [(n, *start_router(n.replace("+", "-"), overhead_policy(sim_url), logdir,
                                         env)) for n, env in routers]
            thin, thin_url = start_thin_proxy(sim_url, logdir)
            sim.wait_ready()
            thin.wait_ready()
            for _, child, _ in started:
                child.wait_ready()
            targets = [Target("thin", thin_url + "/v1/chat/completions", "gpt-oss:20b",
                              {"thin": thin.pid, "upstream": sim.pid}),
                       Target("direct", sim_url + "/v1/chat/completions", "gpt-oss:20b",
                              {"upstream": sim.pid})]
            targets += [Target(n, url + "/v1/chat/completions", "gpt-oss-20b",
                               {n: child.pid, "upstream": sim.pid}) for n, child, url in started]
            print(f"simulator pid {sim.pid}; " + "; ".join(
                f"{n} pid {c.pid}" for n, c, _ in started), flush=True)
            cells = asyncio.run(drive(targets, args))
            memory = {n: memory_of(c.pid) for n, c, _ in started}
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
    comparisons = all_comparisons(cells)
    report = {
        "benchmark": "overhead", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_before": load_before,
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "config": {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                   "concurrency": args.concurrency, "stream": not args.no_stream,
                   "redis": bool(args.redis), "workers": args.workers if args.redis else 1,
                   "quick": args.quick},
        "cells": cells, "comparisons": comparisons, "memory": memory, "stores": stores,
        "targets": targets_report(comparisons, memory),
    }
    write_json(args.out, report)
    print_report(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
