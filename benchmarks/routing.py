"""Routing under overload: three live policies and an oracle on seeded steady and bursty traces.

Simulated Ollama (`--parallel` slots, `--token-delay` s per token) and Bedrock run in their
own processes; three routers run the three policies, each with its own simulated Ollama, all
with the one simulated Bedrock. `hybrid` replays a trace alone, then `local-only` and
`spill-on-error` together (their unbounded queues would take a small machine's CPU from the
hybrid's router); `--sequential` runs all three one after another:

- `local-only`: every request goes to the local slots and waits its turn;
- `spill-on-error`: local first, Bedrock only when the local attempt fails (a wait bound
  never reached), which is what gateways do today;
- `hybrid`: hybrid-router's wait-aware admission: local while the predicted wait fits
  `--bound`, else Bedrock; private requests only ever local.

Each round replays one seeded trace (`routing_traces.py`) through every policy: `steady`
(Poisson at `--load` x local capacity) and `bursty` (Markov-modulated: calm at `--calm-load`,
bursts at `--burst-load`, averaging `--load`), heavy-tailed answer lengths (`--answer-tokens`),
`--private-share` private, `--long-prompt-share` long prompts, a few with `max_tokens`. The
simulators get the same answer-length spec, seed, `--prefill-tps` and `--batch-slowdown` when
they have those flags (detected from `--help`; older ones answer a fixed script length, which
the trace then uses). The oracle (`routing_oracle.py`) replays each trace offline with every
service time known, once on the trace's lengths and once per policy on the lengths that policy
was actually served (its `oracle_utilisation`). Before each request, `/v1/router/explain`
gives the router's predicted local wait for the estimator report (`--no-explain` skips it).
Numbers and targets: `routing_report.py`. It reports; it never asserts (exit 0 unless the run
itself broke).

    python -m benchmarks.routing [--duration 30] [--load 1.7] [--bound 1.0] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `router` and `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from benchmarks.harness import (
    RESULTS,
    Child,
    install_signal_handlers,
    machine,
    start_router,
    stop_all,
    write_json,
)
from benchmarks.routing_live import POLICIES, calibrate, policy, replay
from benchmarks.routing_oracle import Service
from benchmarks.routing_oracle import replay as oracle_replay
from benchmarks.routing_report import (
    legacy_targets,
    oracle_row,
    print_report,
    reason_class,
    round_targets,
    summarise,
)
from benchmarks.routing_traces import (
    LengthSpec,
    Mix,
    TraceRequest,
    bursty_trace,
    poisson_trace,
    trace_summary,
)
from router_simulators.server import free_port

TRACES = ("steady", "bursty")
FEATURES = ("--answer-tokens", "--seed", "--prefill-tps", "--batch-slowdown")
CLOUD_PRICE = (0.15, 0.60)  # Bedrock $/Mtok in, out (policy and cost column)
__all__ = ["make_trace", "reason_class", "main"]


def make_trace(rate_per_s: float, duration_s: float, private_share: float,
               seed: int) -> list[TraceRequest]:
    """A steady Poisson trace with fixed short answers (the first benchmark's trace)."""
    return poisson_trace(rate_per_s, duration_s,
                         Mix(LengthSpec.parse("fixed:20"), private_share, 0.0,
                             max_tokens_share=0.0), seed)


def sim_features(module: str) -> list[str]:
    """Which of the service-time flags the simulator module accepts (from its --help)."""
    try:
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                             text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [f for f in FEATURES if f in out]


def sim_flags(args: argparse.Namespace, features: list[str], seed_offset: int) -> list[str]:
    flags: list[str] = []
    if "--answer-tokens" in features:
        flags += ["--answer-tokens", args.answer_tokens]
    if "--seed" in features:
        flags += ["--seed", str(args.seed + seed_offset)]
    if "--prefill-tps" in features:
        flags += ["--prefill-tps", f"{args.prefill_tps:g}"]
    if "--batch-slowdown" in features:
        flags += ["--batch-slowdown", f"{args.batch_slowdown:g}"]
    return flags


def start_sim(logdir: Path, module: str, name: str, argv: list[str],
              ready: str) -> tuple[Child, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    return Child(name, [sys.executable, "-m", module, "--port", str(port), *argv],
                 url + ready, logdir), url


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.routing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=30.0, help="seconds of arrivals a trace")
    p.add_argument("--traces", default=",".join(TRACES))
    p.add_argument("--load", type=float, default=1.7, help="mean arrival rate / local capacity")
    p.add_argument("--calm-load", type=float, default=1.2, help="bursty: calm rate / capacity")
    p.add_argument("--burst-load", type=float, default=4.0, help="bursty: burst rate / capacity")
    p.add_argument("--mean-burst", type=float, default=2.0, help="bursty: mean burst (s)")
    p.add_argument("--answer-tokens", default="lognormal:24:1.0:400",
                   help="answer length spec (fixed, lognormal:MEDIAN:SIGMA[:MAX], "
                        "pareto:MIN:ALPHA[:MAX])")
    p.add_argument("--private-share", type=float, default=0.24)
    p.add_argument("--long-prompt-share", type=float, default=0.03)
    p.add_argument("--long-prompt-tokens", type=int, default=3000)
    p.add_argument("--max-tokens-share", type=float, default=0.1)
    p.add_argument("--prefill-tps", type=float, default=6000.0, help="prompt tokens/s, 0 free")
    p.add_argument("--batch-slowdown", type=float, default=0.0)
    p.add_argument("--bound", type=float, default=1.0, help="hybrid wait bound (s)")
    p.add_argument("--parallel", type=int, default=2, help="local slots")
    p.add_argument("--token-delay", type=float, default=0.015, help="local s per token")
    p.add_argument("--cloud-token-delay", type=float, default=None,
                   help="Bedrock s per token (default: same as local)")
    p.add_argument("--calibration", type=int, default=5, help="requests per backend")
    p.add_argument("--seed", type=int, default=20250805)
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--sequential", action="store_true",
                   help="replay the policies one after another (default: hybrid, then the "
                        "other two together)")
    p.add_argument("--no-explain", action="store_true",
                   help="skip /v1/router/explain before each request (no estimator report)")
    p.add_argument("--quick", action="store_true", help="a few seconds a trace (smoke test)")
    p.add_argument("--out", type=Path, default=RESULTS / "routing.json")
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.calibration, a.token_delay = 3.0, 3, 0.005
    if a.cloud_token_delay is None:
        a.cloud_token_delay = a.token_delay
    a.policies = [x for x in a.policies.split(",") if x]
    a.traces = [x for x in a.traces.split(",") if x]
    unknown = set(a.policies) - set(POLICIES)
    if unknown:
        p.error(f"unknown policies {sorted(unknown)} (known: {', '.join(POLICIES)})")
    if set(a.traces) - set(TRACES):
        p.error(f"unknown traces (known: {', '.join(TRACES)})")
    try:
        LengthSpec.parse(a.answer_tokens)
    except ValueError as exc:
        p.error(str(exc))
    return a


def build_trace(name: str, args: argparse.Namespace, capacity: float, spec: LengthSpec,
                fixed_tokens: int | None) -> list[TraceRequest]:
    mix = Mix(spec, args.private_share, args.long_prompt_share, args.long_prompt_tokens,
              args.max_tokens_share)
    seed = args.seed + TRACES.index(name)
    if name == "steady":
        trace = poisson_trace(args.load * capacity, args.duration, mix, seed)
    else:
        trace = bursty_trace(args.calm_load * capacity, args.burst_load * capacity,
                             args.load * capacity, args.duration, mix, seed, args.mean_burst)
    if fixed_tokens is not None:  # the simulator answers its script: that is the length
        trace = [r.with_answer(min(fixed_tokens, r.max_tokens or fixed_tokens)) for r in trace]
    return trace


async def run(args: argparse.Namespace, routers: dict[str, tuple[str, str]],
              features: list[str]) -> dict[str, Any]:
    """`routers`: policy -> (router URL, URL of that router's own Ollama simulator)."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    svc = Service(args.parallel, args.token_delay,
                  args.prefill_tps if "--prefill-tps" in features else 0.0,
                  args.batch_slowdown if "--batch-slowdown" in features else 0.0)
    spec = LengthSpec.parse(args.answer_tokens)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=900)) as session:
        calib = {k: await calibrate(session, url, args.calibration, cloud=k != "local-only")
                 for k, (url, _) in routers.items()}
        ref = calib.get("hybrid") or next(iter(calib.values()))
        fixed = None if "--answer-tokens" in features else int(ref["local_tokens"])
        mean_tokens = fixed if fixed is not None else spec.mean()
        mean_service = (mean_tokens * args.token_delay + args.long_prompt_share
                        * svc.prefill_s(args.long_prompt_tokens))
        capacity = args.parallel / mean_service
        print(f"calibration {ref}; mean service {mean_service:.3f} s, capacity "
              f"{capacity:.2f} req/s", flush=True)
        rounds: dict[str, Any] = {}
        pf_rows: dict[str, dict[str, Any]] = {}  # trace -> private-first oracle on hybrid's
        for name in args.traces:
            trace = build_trace(name, args, capacity, spec, fixed)
            rows: dict[str, dict[str, Any]] = {}
            prefill = [svc.prefill_s(r.prompt_tokens) if r.long_prompt else 0.0 for r in trace]

            async def one_policy(kind: str, name: str = name,
                                 trace: list[TraceRequest] = trace,
                                 rows: dict[str, dict[str, Any]] = rows,
                                 prefill: list[float] = prefill) -> None:
                url, sim_url = routers[kind]
                outcomes, util, wall = await replay(session, url, sim_url, trace,
                                                    explain=not args.no_explain)
                first = {"local": calib[kind]["local_first_byte"],
                         "bedrock": ref.get("bedrock_first_byte", ref["local_first_byte"])}
                row = summarise(kind, outcomes, util, first, prefill, args.parallel,
                                args.bound, CLOUD_PRICE)
                served = [r.with_answer(o.completion_tokens) if o.ok else r
                          for r, o in zip(trace, outcomes, strict=True)]
                row["oracle_utilisation"] = round(
                    oracle_replay(served, svc, args.bound).utilisation, 4)
                if kind == "hybrid":
                    pf = oracle_replay(served, svc, args.bound, private_first=True)
                    orow = oracle_row(served, pf, CLOUD_PRICE)
                    pf_rows[name] = {"utilisation": round(pf.utilisation, 4), **{
                        k: orow[k] for k in ("local_share", "standard_wait_p95_s",
                                             "private_wait_p50_s", "private_wait_p95_s")}}
                if row["local_utilisation"] is not None:
                    row["utilisation_gap_to_oracle"] = round(
                        row["local_utilisation"] - row["oracle_utilisation"], 4)
                row["wall_s"] = round(wall, 1)
                rows[kind] = row
                print(f"  {name}/{kind}: {row['ok']} ok, {row['errors']} errors, "
                      f"{row['wall_s']} s", flush=True)

            if args.sequential:
                for kind in routers:
                    await one_policy(kind)
            else:  # hybrid alone, then the others together (their queues grow unbounded)
                first = [k for k in routers if k == "hybrid"]
                for group in (first, [k for k in routers if k not in first]):
                    await asyncio.gather(*(one_policy(k) for k in group))
            orc = oracle_row(trace, oracle_replay(trace, svc, args.bound), CLOUD_PRICE)
            orc["oracle_utilisation"] = orc["local_utilisation"]
            rows = {k: rows[k] for k in routers}
            rounds[name] = {"load": args.load, "trace": trace_summary(trace, args.duration),
                            "policies": rows, "oracle": orc,
                            "targets": round_targets(rows, args.bound)}
            if name in pf_rows:
                rounds[name]["oracle_private_first"] = pf_rows[name]
    return {"calibration": {"per_router": calib, "mean_service_s": round(mean_service, 4),
                            "capacity_per_s": round(capacity, 3),
                            "fixed_answer_tokens": fixed},
            "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_handlers()
    load_before = [round(x, 2) for x in os.getloadavg()]
    features = sim_features("router_simulators.ollama")
    bed_features = sim_features("router_simulators.bedrock")
    with tempfile.TemporaryDirectory(prefix="hr-routing-") as tmp:
        logdir = Path(tmp)
        try:
            sims = {k: start_sim(logdir, "router_simulators.ollama", f"ollama-{k}",
                                 ["--parallel", str(args.parallel), "--token-delay",
                                  str(args.token_delay), "--max-queue", "4096",
                                  *sim_flags(args, features, 0)], "/api/version")
                    for k in args.policies}
            bed, bed_url = start_sim(logdir, "router_simulators.bedrock", "bedrock-sim",
                                     ["--token-delay", str(args.cloud_token_delay),
                                      *sim_flags(args, bed_features, 0)], "/_sim/stats")
            started = {k: start_router(k, policy(k, sims[k][1], bed_url, args.parallel,
                                                 args.bound, CLOUD_PRICE), logdir)
                       for k in args.policies}
            for child in (bed, *(c for c, _ in sims.values()),
                          *(c for c, _ in started.values())):
                child.wait_ready()
            result = asyncio.run(run(args, {k: (u, sims[k][1])
                                            for k, (_, u) in started.items()}, features))
        except (RuntimeError, OSError, aiohttp.ClientError) as exc:
            print(f"benchmark broke: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_all()
    rounds = result["rounds"]
    primary = rounds.get("bursty") or next(iter(rounds.values()))
    report = {
        "benchmark": "routing", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "loadavg_before": load_before,
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("out",)} | {"duration_s": args.duration, "bound_s": args.bound},
        "simulator_features": {"ollama": features, "bedrock": bed_features},
        "calibration": result["calibration"],
        "rounds": rounds,
        # The first benchmark's keys, on the primary (bursty) round.
        "trace": primary["trace"], "policies": primary["policies"],
        "targets": legacy_targets(primary["policies"], args.bound),
    }
    write_json(args.out, report)
    print_report(report)
    print(f"targets (first benchmark, {'bursty' if 'bursty' in rounds else 'primary'} round): "
          + ", ".join(f"{k} {'met' if t['met'] else 'MISSED'}"
                      for k, t in report["targets"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
