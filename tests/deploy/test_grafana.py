"""`deploy/grafana/`: the Grafana dashboard and the Prometheus alert rules name only metrics the
router exports. Both files are loaded, every metric name is pulled out of their PromQL, and
each must appear in `/metrics` of an in-process router after some traffic (a histogram's
`_bucket`, `_sum` and `_count` series, a counter's `_total`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from router.app import create_app
from router.policy.loader import parse_policy
from router.settings import RouterSettings
from router_simulators.server import SimServer
from tests.conftest import base_policy

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA / "hybrid-router-dashboard.json"
ALERTS = GRAFANA / "alerts.yaml"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "bool", "offset", "inf", "nan"}
ALERT_NAMES = {"HybridRouterPrivateRefusedNoLocalCapacity", "HybridRouterBreakerOpen",
               "HybridRouterSpillRateHigh", "HybridRouterCloudSpendNearCap",
               "HybridRouterStateStoreDegraded"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names or values."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers (and ${datasource}-style variables)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range selectors
    names = set()
    for m in re.finditer(r"(?<![\w$.])([a-zA-Z_:][\w:]*)\s*(\()?", e):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", ())]
    for v in doc["templating"]["list"]:  # Grafana's label_values(metric, label)
        if v.get("type") == "query":
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", v["query"])
            assert m, v["query"]
            exprs.append(m.group(1))
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def exported(text: str) -> set[str]:
    """Every series name the exposition can hold (from its TYPE lines and its samples)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if kind == "counter":  # prometheus_client names the family with its `_total`
                name = name.removesuffix("_total")
            suffixes = {"counter": ("_total", "_created"),
                        "histogram": ("_bucket", "_sum", "_count", "_created"),
                        "summary": ("_sum", "_count", "_created")}.get(kind, ("",))
            names.update(name + s for s in suffixes)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def metrics_text(ollama_sim: SimServer, bedrock_sim: SimServer) -> str:
    policy = base_policy(ollama_sim.url, bedrock_sim.url)
    policy["backends"]["bedrock"]["daily_budget_usd"] = 50  # router_spend_cap_usd has a scope
    app = create_app(RouterSettings(), policy=parse_policy(policy))
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(app, base_url="http://localhost", client=("127.0.0.1", 5000)) as c:
        assert c.post("/v1/chat/completions", json=body).status_code == 200
        assert c.post("/v1/chat/completions", json={**body, "stream": True}).status_code == 200
        r = c.get("/metrics")
        assert r.status_code == 200
        return r.text


def test_the_extractor_finds_names_and_skips_functions_labels_and_ranges() -> None:
    expr = ('histogram_quantile(0.95, sum by (backend, le) (rate(router_ttft_seconds_bucket'
            '{job=~"$job",x="a b"}[5m]))) / clamp_min(sum(rate(router_requests_total[1h])), '
            '1e-9) > 0.5 and on (job) up offset 5m')
    assert metric_names(expr) == {"router_ttft_seconds_bucket", "router_requests_total", "up"}


def test_the_dashboard_covers_the_pages_panels() -> None:
    doc = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in doc["panels"]).lower()
    for what in ("requests / s by backend", "error rate", "time to first token", "breaker",
                 "in flight and queued", "estimated local wait", "vram", "by reason",
                 "spill", "private requests refused", "cloud spend", "local value",
                 "state store"):
        assert what in titles, what
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])


def test_the_alert_rules_are_the_five_expected() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == ALERT_NAMES
    for r in rules:
        assert r["expr"].strip() and r["labels"]["severity"] and r["annotations"]["summary"]
    breaker = next(r for r in rules if r["alert"] == "HybridRouterBreakerOpen")
    assert breaker["for"] == "5m"


def test_every_metric_named_exists_in_metrics(metrics_text: str) -> None:
    have = exported(metrics_text)
    named: dict[str, set[str]] = {}
    for expr in dashboard_exprs():
        for n in metric_names(expr):
            named.setdefault(n, set()).add("dashboard")
    for rule in alert_rules():
        for n in metric_names(rule["expr"]):
            named.setdefault(n, set()).add(rule["alert"])
    assert len(named) >= 15, sorted(named)
    missing = {n: sorted(where) for n, where in named.items() if n not in have}
    assert missing == {}


def test_tokens_and_spend_against_cap_carry_the_figures(
        ollama_sim: SimServer, bedrock_sim: SimServer) -> None:
    """The series the tokens/s panel and the spend-near-cap alert read: tokens per backend and
    kind from the usage, today's spend per scope from the store, the cap from the policy."""
    policy = base_policy(ollama_sim.url, bedrock_sim.url)
    policy["routes"][1]["targets"] = ["bedrock"]  # standard requests go to the cloud
    policy["backends"]["bedrock"].update(
        daily_budget_usd=2.0, price={"input_per_mtok": 1000.0, "output_per_mtok": 1000.0})
    app = create_app(RouterSettings(), policy=parse_policy(policy))
    body = {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "hi"}]}
    with TestClient(app, base_url="http://localhost", client=("127.0.0.1", 5000)) as c:
        usage = c.post("/v1/chat/completions", json=body).json()["usage"]
        text = c.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    tokens = {kind: samples[("router_tokens_total", (("backend", "bedrock"), ("kind", kind)))]
              for kind in ("prompt", "completion")}
    assert tokens == {"prompt": usage["prompt_tokens"],
                      "completion": usage["completion_tokens"]}
    spent = samples[("router_spend_today_usd", (("scope", "backend:bedrock"),))]
    expected = (usage["prompt_tokens"] + usage["completion_tokens"]) * 1000.0 / 1_000_000
    assert spent == pytest.approx(expected) and spent > 0
    assert samples[("router_spend_cap_usd", (("scope", "backend:bedrock"),))] == 2.0
