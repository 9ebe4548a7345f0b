"""A sampling profile of the router under the overhead benchmark's load (py-spy, dev extra).

Starts the Ollama simulator (zero token delay) and one router (memory state, the policy of
`overhead.py`) as in `overhead.py`, then for each mode (non-streamed, streamed) drives
`--concurrency` (32) workers back to back for `--duration` (10) seconds while
`py-spy record --format raw --function --nonblocking` samples the router. Prints, per mode,
the functions with the most samples on top of the stack (self) and the router's own functions
with the most samples anywhere in the stack (total), as shares of all samples, and writes the
raw stacks next to the JSON (`--out`).

    python -m benchmarks.profile_router [--duration 10] [--concurrency 32] [--top 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `router` and `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from benchmarks.harness import (
    RESULTS,
    install_signal_handlers,
    start_ollama_sim,
    start_router,
    stop_all,
    write_json,
)
from benchmarks.overhead import Target, measure, overhead_policy, preflight


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("py-spy not found: pip install -e '.[dev]' (or pip install py-spy)")
    return found


ENTRY_FRAMES = ("(router/cli.py", "(router/server.py")  # under every sample: not informative


def top_functions(raw: str, n: int) -> dict[str, Any]:
    """Sample shares from raw stacks: self (the leaf frame; time in C code such as a socket
    write counts for the Python function that called it) and total (anywhere in the stack),
    the latter for the router's own functions only (its entry frames left out)."""
    self_count: Counter[str] = Counter()
    total_count: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        samples += count
        self_count[frames[-1]] += count
        for f in set(frames):
            if "(router/" in f and not f.startswith(ENTRY_FRAMES, f.find("(")):
                total_count[f] += count

    def rows(c: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "samples": k, "share": round(k / samples, 4) if samples else 0}
                for f, k in c.most_common(n)]

    return {"samples": samples, "self": rows(self_count),
            "total": rows(total_count)}


async def load(target: Target, stream: bool, concurrency: int, seconds: float) -> int:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        await preflight(session, target, stream)
        r = await measure(session, target, stream=stream, concurrency=concurrency,
                          duration_s=seconds, warmup_s=0.5)
        return r.requests


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_router", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="sampled seconds per mode")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--out", type=Path, default=RESULTS / "profile.json")
    p.add_argument("--redis", metavar="URL", default=None,
                   help="profile the router with its state on this Redis (a random key prefix)")
    args = p.parse_args(argv)
    install_signal_handlers()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    report: dict[str, Any] = {"benchmark": "profile", "config": vars(args) | {"out": str(args.out)}}
    with tempfile.TemporaryDirectory(prefix="hr-profile-") as tmp:
        logdir = Path(tmp)
        try:
            spy = py_spy()
            sim, sim_url = start_ollama_sim(logdir, parallel=64, token_delay_s=0.0)
            env = None if args.redis is None else {
                "ROUTER_REDIS_URL": args.redis,
                "ROUTER_REDIS_PREFIX": f"hr-profile-{secrets.token_hex(4)}:"}
            router, url = start_router("router", overhead_policy(sim_url), logdir, env)
            sim.wait_ready()
            router.wait_ready()
            target = Target("router", url + "/v1/chat/completions", "gpt-oss-20b",
                            {"router": router.pid})
            for mode, stream in (("json", False), ("stream", True)):
                raw_path = args.out.with_name(f"{args.out.stem}-{mode}.txt")
                raw_path.parent.mkdir(parents=True, exist_ok=True)
                rec = subprocess.Popen(
                    [spy, "record", "--pid", str(router.pid), "--duration",
                     str(int(args.duration)), "--rate", str(args.rate), "--format", "raw",
                     "--function", "--nonblocking", "--output", str(raw_path)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                requests = asyncio.run(load(target, stream, args.concurrency,
                                            args.duration + 1.0))
                _, err = rec.communicate(timeout=args.duration + 30)
                if rec.returncode != 0 or not raw_path.exists():
                    raise RuntimeError(f"py-spy failed ({rec.returncode}): {err.decode()[-500:]}")
                top = top_functions(raw_path.read_text(), args.top)
                report[mode] = {"requests": requests, "raw": str(raw_path), **top}
                print(f"\n{mode}, concurrency {args.concurrency}: {requests} requests, "
                      f"{top['samples']} samples")
                for kind in ("self", "total"):
                    print(f"  top {args.top} by {kind}:")
                    for row in top[kind]:
                        print(f"    {row['share'] * 100:5.1f}%  {row['function']}")
        except (RuntimeError, OSError, aiohttp.ClientError) as exc:
            print(f"profile broke: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_all()
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
