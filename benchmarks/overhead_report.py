"""What `overhead.py` makes of its cells: the comparisons between targets, the targets met or
missed, and the printed table.

A comparison (`compare`) takes two targets at the same (mode, concurrency): the p50 and p99 the
second adds over the first, and its throughput as a fraction of the first's. The targets
(`targets_report`, issue 15 item 5; 2-core machine): non-streamed at concurrency 32 at least
60% of the thinnest proxy, streamed at least 50%; Redis-backed state at least 75% of
memory-backed (non-streamed, concurrency 32); the router adds at most 0.30 ms at p50 at
concurrency 1 and at most 2 ms at p99 at concurrency 16 over the direct call; peak RSS at most
100 MB; two workers at least 1.6 times one (Redis state, non-streamed, concurrency 32).
"""

from __future__ import annotations

from typing import Any

# (base, target) pairs reported when both ran: ceiling fractions first.
PAIRS = (("thin", "router"), ("thin", "router+redis"), ("direct", "thin"),
         ("direct", "router"), ("direct", "router+redis"), ("router", "router+redis"))
WORKERS_PREFIX = "router+redis-"  # the multi-worker target: router+redis-<N>w


def r3(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def compare(cells: list[dict[str, Any]], base: str, other: str) -> list[dict[str, Any]]:
    by = {(c["target"], c["mode"], c["concurrency"]): c for c in cells}
    out = []
    for (t, mode, conc), b in by.items():
        o = by.get((other, mode, conc))
        if t != base or o is None or b["p50_ms"] is None or o["p50_ms"] is None:
            continue
        out.append({"base": base, "target": other, "mode": mode, "concurrency": conc,
                    "added_p50_ms": r3(o["p50_ms"] - b["p50_ms"]),
                    "added_p99_ms": r3(o["p99_ms"] - b["p99_ms"]),
                    "throughput_ratio": r3(o["rps"] / b["rps"] if b["rps"] else None)})
    return out


def workers_target(names: Any) -> str | None:
    return next((n for n in names if str(n).startswith(WORKERS_PREFIX)), None)


def all_comparisons(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pairs = list(PAIRS)
    if many := workers_target(c["target"] for c in cells):
        pairs += [("router+redis", many), ("thin", many), ("direct", many)]
    return [c for base, other in pairs for c in compare(cells, base, other)]


def _target(value: float | None, limit: float, *, at_most: bool) -> dict[str, Any]:
    met = value is not None and (value <= limit if at_most else value >= limit)
    return {"value": value, "limit": limit, "kind": "max" if at_most else "min", "met": met}


def targets_report(comparisons: list[dict[str, Any]],
                   memory: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    def cmp(base: str, target: str, mode: str, conc: int, key: str) -> float | None:
        found = next((c for c in comparisons if c["base"] == base and c["target"] == target
                      and c["mode"] == mode and c["concurrency"] == conc), {})
        value: float | None = found.get(key)
        return value

    out: dict[str, Any] = {
        "json_c32_vs_thin": _target(cmp("thin", "router", "json", 32, "throughput_ratio"),
                                    0.60, at_most=False),
        "stream_c32_vs_thin": _target(cmp("thin", "router", "stream", 32, "throughput_ratio"),
                                      0.50, at_most=False),
        "c1_added_p50_ms": _target(cmp("direct", "router", "json", 1, "added_p50_ms"),
                                   0.30, at_most=True),
        "c16_added_p99_ms": _target(cmp("direct", "router", "json", 16, "added_p99_ms"),
                                    2.0, at_most=True),
        "router_peak_rss_mb": _target(memory.get("router", {}).get("hwm_mb"), 100,
                                      at_most=True),
    }
    if "router+redis" in memory:
        out["redis_vs_memory_c32"] = _target(
            cmp("router", "router+redis", "json", 32, "throughput_ratio"), 0.75, at_most=False)
    if many := workers_target(memory):
        out["workers_vs_one_c32"] = _target(
            cmp("router+redis", many, "json", 32, "throughput_ratio"), 1.6, at_most=False)
    return out


def _router_key(target: str) -> str:
    return target if target.startswith("router") or target == "thin" else "-"


def _f(v: float | None, width: int = 8, nd: int = 3) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{nd}f}"


def print_report(report: dict[str, Any]) -> None:
    print(f"\nrouter overhead  ({report['machine']['cpus']} CPUs, Python "
          f"{report['machine']['python']}, {report['config']['duration_s']} s per cell)")
    load = report["machine"].get("loadavg_before")
    print(f"load average before the run {load} (other processes share these CPUs); "
          "x thin: req/s as a fraction of the thinnest proxy's; cpu: CPU ms per request "
          "(proxy/upstream/load generator) and cores the proxy used")
    head = (f"{'target':<15} {'mode':<6} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>6}  {'+p50 ms':>8} {'+p99 ms':>8} {'x thin':>6}  "
            f"{'cpu ms/req':<19} {'cores':>5}")
    print(head)
    print("-" * len(head))
    direct = {(c["target"], c["mode"], c["concurrency"]): c for c in report["comparisons"]
              if c["base"] == "direct"}
    thin = {(c["target"], c["mode"], c["concurrency"]): c for c in report["comparisons"]
            if c["base"] == "thin"}
    for c in report["cells"]:
        key = (c["target"], c["mode"], c["concurrency"])
        d, t = direct.get(key, {}), thin.get(key, {})
        cpu = c["cpu_ms_per_req"]
        cpu_s = "/".join(f"{cpu.get(n):.3f}" if cpu.get(n) is not None else "-"
                         for n in (_router_key(c["target"]), "upstream", "loadgen"))
        cores = c["cpu_cores"].get(_router_key(c["target"]))
        print(f"{c['target']:<15} {c['mode']:<6} {c['concurrency']:>4} {c['rps']:>9.1f} "
              f"{_f(c['p50_ms'])} {_f(c['p99_ms'])} {c['errors']:>6}  "
              f"{_f(d.get('added_p50_ms'))} {_f(d.get('added_p99_ms'))} "
              f"{_f(t.get('throughput_ratio'), 6, 2)}  {cpu_s:<19} {_f(cores, 5, 2)}")
    for name, mem in report["memory"].items():
        print(f"{name} resident memory: {mem['rss_mb']} MB now, {mem['hwm_mb']} MB peak")
    for name, st in report.get("stores", {}).items():
        if st.get("kind") != "memory":
            print(f"{name} state store after the run: {st}")
    for c in report["comparisons"]:
        if c["base"] in ("router", "router+redis") and c["mode"] == "json":
            print(f"{c['target']} vs {c['base']}: x{c['throughput_ratio']} req/s, "
                  f"+{c['added_p50_ms']} ms p50 (json, concurrency {c['concurrency']})")
    print("targets:")
    for name, t in report["targets"].items():
        print(f"  {name:<24} {t['value']!s:>10}  ({t['kind']} {t['limit']})  "
              f"{'met' if t['met'] else 'MISSED'}")
