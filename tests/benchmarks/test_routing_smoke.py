"""The routing benchmark end to end on one policy and one trace (`--quick --policies hybrid
--traces bursty`): it exits 0 and writes the round's rows, oracle, estimator and targets.
Shapes, counts and the privacy invariant only; never a latency, rate or utilisation value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_routing_quick_hybrid_bursty_round(tmp_path: Path) -> None:
    out = tmp_path / "routing.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.routing", "--quick", "--policies", "hybrid",
         "--traces", "bursty", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    data = json.loads(out.read_text())
    assert list(data["rounds"]) == ["bursty"]
    rnd = data["rounds"]["bursty"]
    n = rnd["trace"]["requests"]
    assert n > 0
    row = rnd["policies"]["hybrid"]
    assert row["requests"] == n and row["errors"] == 0, row["error_samples"]
    assert row["private_on_cloud"] == 0
    assert row["private_requests"] == rnd["trace"]["private"]
    for key in ("local_share", "local_utilisation", "oracle_utilisation",
                "standard_wait_p95_s", "standard_waited_then_spilled_share",
                "cloud_tokens", "cloud_cost_usd"):
        assert row[key] is not None, key
    assert row["estimator"]["available"] and row["estimator"]["pairs"] > 0
    assert rnd["oracle"]["requests"] == n and rnd["oracle"]["private_on_cloud"] == 0
    assert 0.0 <= rnd["oracle"]["local_utilisation"] <= 1.0
    assert set(rnd["targets"]) == {"standard_waited_then_spilled", "private_wait_p95_s",
                                   "utilisation_vs_oracle", "standard_wait_p95_s",
                                   "private_on_cloud_any_policy"}
    assert data["policies"] == rnd["policies"]  # the first benchmark's keys, bursty round
