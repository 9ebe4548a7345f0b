"""Amplification: what worst-case bodies cost the router in memory and event-loop time.

Starts the Ollama simulator (zero token delay) and the router (`python -m router.cli serve`,
default limits) in their own processes, on loopback. Then, for each body below, six clients
POST it back to back to `/v1/chat/completions` for `--duration` seconds while one more client
polls `/healthz` (one keep-alive connection, in its own thread) and the router's VmRSS is
sampled from /proc every 20 ms (a fresh router for each body, and for the idle figures):

    tiny_messages  ~9.9 MB of as many tiny messages as fit ({"role":"user"},
                   618,750 of them): over the message-count limit, must be a cheap 400
    max_messages   `--max-messages` (2,048, the default limit) messages whose text fills
                   ~9.9 MB: accepted, detector-scanned and sent on
    max_parts      the same count of messages, each with as many tiny text content parts as
                   fit under ~9.9 MB (at most `--max-parts`, 256): accepted, flattened

Reports, per body: answers by status, `/healthz` p50/p99/max while loaded and as a ratio to
the idle figures measured first, and the router's RSS before, peak (sampled) and after (1 s
after the load), with peak/before. Prints a table and writes JSON. It measures, it does not
assert: exit 0 unless the run itself broke. Bounded (each phase has a deadline), loopback
only, every child killed on exit (see `benchmarks/harness.py`).

    python -m benchmarks.amplification [--duration 5] [--clients 6] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a script: make `router` and `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from benchmarks.harness import (
    RESULTS,
    install_signal_handlers,
    machine,
    memory_mb,
    percentile,
    start_ollama_sim,
    start_router,
    stop_all,
    write_json,
)
from benchmarks.overhead import overhead_policy

TINY = b'{"role":"user"}'
PART = b'{"type":"text","text":"x"}'


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


def _wrap(messages: list[bytes]) -> bytes:
    return b'{"model":"gpt-oss-20b","max_tokens":16,"messages":[' + b",".join(messages) + b"]}"


def tiny_messages(size: int) -> bytes:
    n = (size - len(_wrap([]))) // (len(TINY) + 1)
    return _wrap([TINY] * n)


def max_messages(size: int, count: int) -> bytes:
    overhead = len(_wrap([b'{"role":"user","content":""}'] * count))
    text = b"lorem ipsum " * ((size - overhead) // count // 12 + 1)
    text = text[: max(1, (size - overhead) // count)]
    return _wrap([b'{"role":"user","content":"' + text + b'"}'] * count)


def max_parts(size: int, count: int, parts_limit: int) -> bytes:
    empty = b'{"role":"user","content":[]}'
    per = (size - len(_wrap([empty] * count))) // count // (len(PART) + 1)
    msg = b'{"role":"user","content":[' + b",".join([PART] * min(per, parts_limit)) + b"]}"
    return _wrap([msg] * count)


# --------------------------------------------------------------------------------------------
# Probes: /healthz latency (own thread, own connection) and RSS sampling
# --------------------------------------------------------------------------------------------


class HealthPoller(threading.Thread):
    """GETs /healthz back to back (plus `gap_s`) on one keep-alive connection."""

    def __init__(self, url: str, gap_s: float = 0.01) -> None:
        super().__init__(daemon=True)
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.gap_s = gap_s
        self.lat_ms: list[float] = []
        self.errors = 0
        self._halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        while not self._halt.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            if ok:
                self.lat_ms.append((time.perf_counter() - t0) * 1000)
            else:
                self.errors += 1
            self._halt.wait(self.gap_s)
        conn.close()

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join(35)
        lat = sorted(self.lat_ms)
        return {"samples": len(lat), "errors": self.errors, "p50_ms": _r(percentile(lat, 50)),
                "p99_ms": _r(percentile(lat, 99)), "max_ms": _r(lat[-1] if lat else None)}


async def sample_rss(pid: int, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        rss = memory_mb(pid)["rss_mb"]
        if rss is not None:
            out.append(rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


async def load(url: str, body: bytes, clients: int, duration_s: float) -> dict[str, int]:
    """`clients` workers POST `body` back to back until `duration_s` has passed."""
    statuses: dict[str, int] = {}
    timeout = aiohttp.ClientTimeout(total=max(60.0, duration_s * 4))
    headers = {"Content-Type": "application/json"}
    t_end = time.perf_counter() + duration_s
    async with aiohttp.ClientSession(timeout=timeout,
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        async def worker() -> None:
            while time.perf_counter() < t_end:
                try:
                    async with session.post(url + "/v1/chat/completions", data=body,
                                            headers=headers) as r:
                        await r.read()
                        key = str(r.status)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    key = type(exc).__name__
                statuses[key] = statuses.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return statuses


async def phase(url: str, pid: int, body: bytes | None, args: argparse.Namespace,
                ) -> dict[str, Any]:
    rss_before = memory_mb(pid)["rss_mb"]
    samples: list[float] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, stop, samples))
    poller = HealthPoller(url)
    poller.start()
    if body is None:
        await asyncio.sleep(args.idle)
        statuses: dict[str, int] = {}
    else:
        statuses = await load(url, body, args.clients, args.duration)
    health = poller.stop()
    stop.set()
    await sampler
    await asyncio.sleep(1.0)
    return {"body_mb": _r(len(body) / 1e6 if body else 0.0, 2), "answers": statuses,
            "healthz": health,
            "rss_mb": {"before": rss_before, "peak": max(samples, default=None),
                       "after": memory_mb(pid)["rss_mb"]}}


def ratios(row: dict[str, Any], idle: dict[str, Any]) -> dict[str, float | None]:
    def div(a: float | None, b: float | None) -> float | None:
        return _r(a / b, 2) if a is not None and b else None

    h, i, rss = row["healthz"], idle["healthz"], row["rss_mb"]
    return {"healthz_p50": div(h["p50_ms"], i["p50_ms"]),
            "healthz_p99": div(h["p99_ms"], i["p99_ms"]),
            "healthz_max": div(h["max_ms"], i["max_ms"]),
            "rss_peak_over_before": div(rss["peak"], rss["before"])}


def bodies(args: argparse.Namespace) -> dict[str, bytes]:
    size = args.body_bytes
    return {"tiny_messages": tiny_messages(size),
            "max_messages": max_messages(size, args.max_messages),
            "max_parts": max_parts(size, args.max_messages, args.max_parts)}


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def print_report(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"\namplification  ({report['machine']['cpus']} CPUs, {cfg['clients']} clients, "
          f"{cfg['duration_s']} s per body)")
    head = (f"{'body':<14} {'MB':>5} {'answers':<22} {'hz p50':>7} {'hz p99':>7} {'hz max':>8}"
            f"  {'x p50':>6} {'x p99':>6} {'x max':>6}  {'RSS before/peak/after MB':<26}"
            f" {'x peak':>6}")
    print(head)
    print("-" * len(head))
    for name, row in report["rows"].items():
        h, x, rss = row["healthz"], row.get("ratios", {}), row["rss_mb"]
        answers = ",".join(f"{k}:{v}" for k, v in sorted(row["answers"].items())) or "-"
        print(f"{name:<14} {row['body_mb']:>5} {answers:<22} {_f(h['p50_ms'], 7)} "
              f"{_f(h['p99_ms'], 7)} {_f(h['max_ms'], 8)}  {_f(x.get('healthz_p50'), 6, 1)} "
              f"{_f(x.get('healthz_p99'), 6, 1)} {_f(x.get('healthz_max'), 6, 1)}  "
              f"{rss['before']!s:>7} / {rss['peak']!s:>7} / {rss['after']!s:>7}"
              f"   {_f(x.get('rss_peak_over_before'), 6, 2)}")


def _f(v: float | None, width: int, nd: int = 2) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{nd}f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.amplification", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per body")
    p.add_argument("--idle", type=float, default=3.0, help="seconds of idle /healthz polling")
    p.add_argument("--clients", type=int, default=6, help="concurrent clients per body")
    p.add_argument("--body-bytes", type=int, default=9_900_000, help="size of each body")
    p.add_argument("--max-messages", type=int, default=2048, help="the router's message limit")
    p.add_argument("--max-parts", type=int, default=256, help="the router's parts limit")
    p.add_argument("--quick", action="store_true", help="1 MB bodies, 2 clients, short phases")
    p.add_argument("--out", type=Path, default=RESULTS / "amplification.json")
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.idle, a.clients, a.body_bytes = 0.5, 0.5, 2, 1_000_000
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hr-amplification-") as tmp:
        logdir = Path(tmp)
        try:
            sim, sim_url = start_ollama_sim(logdir, parallel=64, token_delay_s=0.0)
            sim.wait_ready()
            hwm: dict[str, float | None] = {}
            for name, body in [("idle", None), *bodies(args).items()]:
                # A fresh router per body: each row's before/peak/after is its own.
                router, url = start_router(f"router-{name}", overhead_policy(sim_url), logdir)
                router.wait_ready()
                if body is not None:
                    print(f"  {name}: {len(body) / 1e6:.2f} MB x {args.clients} clients",
                          flush=True)
                rows[name] = asyncio.run(phase(url, router.pid, body, args))
                if body is not None:
                    rows[name]["ratios"] = ratios(rows[name], rows["idle"])
                hwm[name] = memory_mb(router.pid)["hwm_mb"]
                if router.proc.poll() is not None:
                    raise RuntimeError(f"router died during the run:\n{router.tail()}")
                router.stop()
        except (RuntimeError, OSError, aiohttp.ClientError) as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_all()
    report = {
        "benchmark": "amplification",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {"duration_s": args.duration, "idle_s": args.idle, "clients": args.clients,
                   "body_bytes": args.body_bytes, "max_messages": args.max_messages,
                   "max_parts": args.max_parts, "quick": args.quick},
        "rows": rows, "router_hwm_mb": hwm,
    }
    write_json(args.out, report)
    print_report(report)
    print("router peak resident memory per body (VmHWM, MB): " + ", ".join(
        f"{k} {v}" for k, v in report["router_hwm_mb"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
