"""The benchmarks run end to end: `benchmarks/overhead.py --quick` (thin proxy, direct,
router, router on Redis, two workers on Redis) and `benchmarks/routing.py
--quick` as subprocesses (simulators and routers in their own processes), each must exit 0 and
write well-formed JSON with the expected keys. Behaviour only, never speed: no timing, rate or
latency is asserted, only shapes, counts, errors and the privacy invariant. So the runs are
shorter than `--quick` alone where that holds under load (`ROUTING_SMOKE`, `AMPLIFICATION_SMOKE`):
every policy, trace and body still runs, for just long enough to answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import percentile
from benchmarks.routing import make_trace, reason_class

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("HR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The overhead smoke keeps `--quick`'s 0.5 s cells: at 0.25 s a streamed c32 cell on Redis once
# finished no request under -n 2 on a loaded machine.
# Both traces, 1.5 s of arrivals each, otherwise what `--quick` sets (which fixes 3 s a trace,
# so it is not passed): still 1.7x overload with private requests in each trace.
ROUTING_SMOKE = ("--duration", "1.5", "--calibration", "3", "--token-delay", "0.005")
# Every body, 0.3 s of load and of idle polling each (`--quick` alone: 0.5 s each).
AMPLIFICATION_SMOKE = ("--duration", "0.3", "--idle", "0.3")


def run_benchmark(module: str, out: Path, *extra: str, quick: bool = True) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *(["--quick"] if quick else []),
         "--out", str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "targets" in proc.stdout  # the table was printed
    data = json.loads(out.read_text())
    assert isinstance(data, dict)
    return data


def _check_target_entries(targets: dict[str, Any], names: set[str]) -> None:
    assert set(targets) == names
    for entry in targets.values():
        assert {"value", "limit", "met"} <= set(entry)
        assert isinstance(entry["met"], bool)


@pytest.mark.slow
@pytest.mark.redis
def test_overhead_quick_writes_every_cell(tmp_path: Path) -> None:
    data = run_benchmark("overhead", tmp_path / "overhead.json", "--redis", REDIS_URL)
    assert data["benchmark"] == "overhead"
    assert {"date", "machine", "config", "cells", "comparisons", "memory", "stores",
            "targets"} <= set(data)
    assert data["config"]["quick"] is True and data["config"]["workers"] == 2
    names = ("thin", "direct", "router", "router+redis", "router+redis-2w")
    cells = {(c["target"], c["mode"], c["concurrency"]): c for c in data["cells"]}
    expected = {(t, m, c) for t in names for m in ("json", "stream") for c in (1, 16, 32)}
    assert set(cells) == expected
    for key, cell in cells.items():
        assert cell["requests"] > 0, key
        assert cell["errors"] == 0, (key, cell["failures"])
        assert cell["p50_ms"] is not None and cell["p50_ms"] <= cell["p99_ms"], key
        assert {"upstream", "loadgen"} <= set(cell["cpu_ms_per_req"]), key
    assert {(c["base"], c["target"]) for c in data["comparisons"]} == {
        ("thin", "router"), ("thin", "router+redis"), ("direct", "thin"),
        ("direct", "router"), ("direct", "router+redis"), ("router", "router+redis"),
        ("router+redis", "router+redis-2w"), ("thin", "router+redis-2w"),
        ("direct", "router+redis-2w")}
    for name in ("router", "router+redis", "router+redis-2w"):
        assert data["memory"][name]["rss_mb"] > 0
        assert data["memory"][name]["hwm_mb"] >= data["memory"][name]["rss_mb"]
    assert data["stores"]["router"]["kind"] == "memory"
    assert data["stores"]["router+redis"]["kind"] == "redis"
    assert data["stores"]["router+redis-2w"]["kind"] == "redis"
    _check_target_entries(data["targets"], {
        "json_c32_vs_thin", "stream_c32_vs_thin", "c1_added_p50_ms", "c16_added_p99_ms",
        "router_peak_rss_mb", "redis_vs_memory_c32", "workers_vs_one_c32"})


@pytest.mark.slow
def test_routing_quick_replays_one_trace_through_three_policies(tmp_path: Path) -> None:
    data = run_benchmark("routing", tmp_path / "routing.json", *ROUTING_SMOKE, quick=False)
    assert data["benchmark"] == "routing"
    assert {"date", "machine", "config", "calibration", "trace", "policies",
            "targets"} <= set(data)
    n = data["trace"]["requests"]
    assert n > 0 and 0 <= data["trace"]["private"] <= n
    rows = data["policies"]
    assert list(rows) == ["local-only", "spill-on-error", "hybrid"]
    for name, row in rows.items():
        assert row["requests"] == n, name
        assert row["ok"] + row["errors"] == n, name
        assert row["errors"] == 0, (name, row["error_samples"])
        assert row["private_requests"] == data["trace"]["private"], name
        assert row["private_on_cloud"] == 0, name  # the privacy invariant, under overload
        assert 0.0 <= row["local_utilisation"] <= 1.0, name
        assert row["latency_p50_s"] <= row["latency_p95_s"], name
        for key in ("local_share", "wait_p95_s", "share_wait_above_bound", "cloud_tokens"):
            assert row[key] is not None, (name, key)
    only = rows["local-only"]
    assert only["local_share"] == 1.0 and only["cloud_requests"] == 0
    assert only["cloud_tokens"] == 0 and only["local_tokens"] > 0
    _check_target_entries(data["targets"], {"hybrid_local_utilisation", "hybrid_wait_p95_s",
                                            "private_on_cloud_any_policy"})
    # Each trace's round: the oracle beside the policies, the estimator report.
    for trace, rnd in data["rounds"].items():
        n = rnd["trace"]["requests"]
        row = rnd["policies"]["hybrid"]
        assert n > 0 and row["requests"] == n and row["errors"] == 0, (trace, row)
        assert row["private_on_cloud"] == 0
        assert row["private_requests"] == rnd["trace"]["private"]
        for key in ("local_share", "local_utilisation", "oracle_utilisation",
                    "standard_wait_p95_s", "standard_waited_then_spilled_share",
                    "cloud_tokens", "cloud_cost_usd"):
            assert row[key] is not None, (trace, key)
        assert row["estimator"]["available"] and row["estimator"]["pairs"] > 0
        assert rnd["oracle"]["requests"] == n and rnd["oracle"]["private_on_cloud"] == 0


def test_trace_is_seeded_and_mixes_private_requests() -> None:
    a = make_trace(20.0, 30.0, 0.2, seed=7)
    assert a == make_trace(20.0, 30.0, 0.2, seed=7)
    assert a != make_trace(20.0, 30.0, 0.2, seed=8)
    assert all(x.at_s <= y.at_s for x, y in zip(a, a[1:], strict=False))
    assert 0 < sum(x.private for x in a) < len(a)
    assert make_trace(20.0, 30.0, 0.0, seed=7)[0].private is False


def test_percentile_and_reason_classes() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 50) is None
    assert reason_class("queue_wait_1800ms>1000ms") == "queue_wait"
    assert reason_class("failover_after=queue_timeout") == "failover_after"
    assert reason_class("local") == "local"
    assert reason_class("") == "none"


@pytest.mark.slow
def test_amplification_quick_reports_rss_and_healthz_for_every_body(tmp_path: Path) -> None:
    out = tmp_path / "amplification.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.amplification", "--quick", "--out", str(out),
         *AMPLIFICATION_SMOKE],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(out.read_text())
    assert data["benchmark"] == "amplification" and data["config"]["quick"] is True
    rows = data["rows"]
    assert list(rows) == ["idle", "tiny_messages", "max_messages", "max_parts"]
    for name, row in rows.items():
        assert row["healthz"]["samples"] > 0 and row["healthz"]["errors"] == 0, name
        assert row["rss_mb"]["before"] > 0 and row["rss_mb"]["peak"] >= 0, name
        if name != "idle":
            assert sum(row["answers"].values()) > 0, name
            assert all(k.isdigit() and int(k) < 500 for k in row["answers"]), (name, row)
            assert set(row["ratios"]) == {"healthz_p50", "healthz_p99", "healthz_max",
                                          "rss_peak_over_before"}
    assert set(rows["tiny_messages"]["answers"]) == {"400"}  # over the message-count limit
