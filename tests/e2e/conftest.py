"""Fixtures and helpers of the end-to-end fault suite (`test_faults.py`, `test_fault_streams.py`,
`test_lifecycle.py`, `test_outage.py`).

What lives here:
- `fast_policy`: the time-scaled policy every fault test runs under (its knobs and the scale
  are documented in `fault_helpers.py`), with one route per backend pinned by a header so the
  suite can reach (and heal) each backend directly;
- `Stack`: one real router process plus the simulators behind it, with `fault`, `stats`,
  `settle` (clear faults, close every breaker with a pinned request, then check the router is
  healthy: `/readyz` 200 with every backend usable, no local slot held or queued);
- `stacks` / `stack`: one router process per primary (local, bedrock, sagemaker), started on
  first use and shared by every fault module of the session; `stack` settles before and after
  each test;
- the simulators behind them (one Ollama, Bedrock and SageMaker simulator for the session).

The HTTP client every test calls the router with (`call`, `Outcome`) is in `client.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from router.audit import summarize
from router_simulators.bedrock import BedrockSimConfig
from router_simulators.bedrock import create_app as bedrock_app
from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.sagemaker import SageMakerSimConfig
from router_simulators.sagemaker import create_app as sagemaker_app
from router_simulators.server import SimServer
from tests.conftest import RouterProcess

# The suite's helper modules: pytest rewrites their asserts as it does a conftest's (detailed
# failure messages), provided this runs before they are first imported.
pytest.register_assert_rewrite(
    "tests.e2e.client", "tests.e2e.fault_helpers", "tests.e2e.replica_helpers")

from tests.e2e.client import HTTP, PIN, call, get_json  # noqa: E402 - after the registration

# Every audit log of every router this suite started (checked for private requests at the end).
AUDIT_LOGS: list[Path] = []


# -- policy ------------------------------------------------------------------------------------

def fast_policy(ollama_url: str, bedrock_url: str, sagemaker_url: str | None = None,
                primary: str = "local", **over: Any) -> dict[str, Any]:
    """The time-scaled policy: small timeouts, fast backoff, short breaker windows."""
    fast = {"connect_s": 0.5, "read_s": 1.0}
    backends: dict[str, Any] = {
        "local": {"type": "ollama", "base_url": ollama_url, "parallel": 4,
                  "gpu_memory_gb": 24, "probe_interval_s": 0.2, "timeouts": fast,
                  "models": {"gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b"}},
        "bedrock": {"type": "bedrock", "endpoint_url": bedrock_url, "context_window": 128000,
                    "timeouts": fast,
                    "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0",
                               "gpt-oss-120b": "openai.gpt-oss-120b-1:0"}},
    }
    if sagemaker_url:
        # A smaller window than Bedrock's: a context error on SageMaker can move to Bedrock.
        backends["sagemaker"] = {"type": "sagemaker", "endpoint_url": sagemaker_url,
                                 "endpoint_name": "gpt-oss-20b-endpoint",
                                 "context_window": 32768, "timeouts": fast,
                                 "models": {"gpt-oss-20b": "gpt-oss-20b"}}
    default = {"local": ["local", "bedrock"], "bedrock": ["bedrock", "sagemaker"],
               "sagemaker": ["sagemaker", "bedrock"]}[primary]
    routes: list[dict[str, Any]] = [
        {"name": "private", "match": {"privacy": "private"}, "targets": ["local"],
         "max_queue_wait_s": 2},
        *({"name": f"pin-{b}", "match": {"headers": {PIN: b}}, "targets": [b],
           "max_queue_wait_s": 2} for b in backends),
        {"name": "default", "targets": default, "max_queue_wait_s": 2},
    ]
    policy: dict[str, Any] = {
        "models": {"gpt-oss-20b": {"vram_gb": 14}, "gpt-oss-120b": {"vram_gb": 65}},
        "backends": backends,
        "routes": routes,
        "privacy": {"private_max_queue_wait_s": 2},
        "retry": {"attempts": 3, "initial_s": 0.05, "max_s": 0.2, "jitter_s": 0.05,
                  "retry_after_cap_s": 3, "budget_ratio": 1.0},
        "circuit": {"failure_threshold": 5, "open_for_s": 1.0, "local_open_for_s": 0.5},
        "stream": {"first_token_timeout_s": 1.0, "idle_timeout_s": 0.5},
        "deadline_s": 10,
    }
    policy.update(over)
    return policy


# -- a router and its simulators ---------------------------------------------------------------

FALLBACK = {"local": "bedrock", "bedrock": "sagemaker", "sagemaker": "bedrock"}


@dataclass
class Stack:
    router: RouterProcess
    sims: dict[str, SimServer]  # backend name -> simulator
    audit_path: Path
    primary: str = "local"

    @property
    def fallback(self) -> str:
        return FALLBACK[self.primary]

    @property
    def url(self) -> str:
        return self.router.url

    def fault(self, backend: str, kind: str, **fields: Any) -> None:
        r = HTTP.post(self.sims[backend].url + "/_sim/faults",
                       json={"faults": [{"kind": kind, **fields}]}, timeout=5)
        assert r.status_code == 200, r.text

    def stats(self, backend: str) -> dict[str, Any]:
        return get_json(self.sims[backend].url, "/_sim/stats")  # type: ignore[no-any-return]

    def requests(self, backend: str) -> int:
        return int(self.stats(backend)["requests"])

    def reset_sims(self) -> None:
        for sim in self.sims.values():
            HTTP.post(sim.url + "/_sim/reset", json={}, timeout=5)

    def status(self) -> dict[str, Any]:
        return get_json(self.url, "/v1/router/status")  # type: ignore[no-any-return]

    def breaker(self, backend: str) -> str:
        return str(self.status()["backends"][backend]["breaker"])

    def slots_in_use(self) -> int:
        total = 0
        for entry in self.status()["backends"].values():
            for q in (entry.get("queues") or {}).values():
                total += int(q["in_flight"]) + int(q["queued"])
        return total

    def wait_idle(self, timeout: float = 5.0) -> None:
        """No local slot held or queued (the ledger is empty)."""
        deadline = time.monotonic() + timeout
        while self.slots_in_use() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.slots_in_use() == 0, self.status()

    def wait_upstreams_closed(self, timeout: float = 5.0) -> None:
        """No simulator still serving a request: the router let go of every upstream call."""
        deadline = time.monotonic() + timeout
        busy = {n: self.stats(n)["in_flight"] for n in self.sims}
        while any(busy.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
            busy = {n: self.stats(n)["in_flight"] for n in self.sims}
        assert not any(busy.values()), f"upstream requests left open: {busy}"

    def settle(self, timeout: float = 8.0) -> None:
        """Clear faults, close every breaker, and check the router is healthy and idle."""
        self.reset_sims()
        deadline = time.monotonic() + timeout
        for name in self.status()["backends"]:
            while self.breaker(name) == "open" and time.monotonic() < deadline:
                time.sleep(0.05)
            out = call(self.url, stream=False, headers={PIN: name})
            assert out.status == 200 and out.backend == name, out.describe()
        status = self.status()
        assert {n: b["breaker"] for n, b in status["backends"].items()} == {
            n: "closed" for n in status["backends"]}, status
        self.wait_idle()
        self.wait_upstreams_closed()
        while time.monotonic() < deadline:
            ready = HTTP.get(self.url + "/readyz", timeout=5)
            # /readyz says only ready or not; which backends are usable is in the status.
            if ready.status_code == 200 and set(self.status()["usable_backends"]) == set(
                    status["backends"]):
                break
            time.sleep(0.05)
        assert ready.status_code == 200, ready.text
        assert set(self.status()["usable_backends"]) == set(status["backends"]), ready.text
        self.reset_sims()

    def private_on_cloud(self) -> int:
        return private_on_cloud(self.audit_path)


def private_on_cloud(audit_path: Path) -> int:
    """Private requests the audit log shows attempted on, or answered by, a cloud backend."""
    if not audit_path.exists():
        return 0
    summary = summarize(str(audit_path), local_backends={"local"})
    return int(summary["private_on_non_local"])


def start_stack(policy: dict[str, Any], sims: dict[str, SimServer], tmp: Path,
                env: dict[str, str] | None = None, primary: str = "local") -> Stack:
    audit = tmp / f"audit-{len(AUDIT_LOGS)}.jsonl"
    AUDIT_LOGS.append(audit)
    router = RouterProcess(policy, tmp, {"ROUTER_AUDIT_LOG": str(audit), **(env or {})})
    return Stack(router, sims, audit, primary)


# -- simulators owned by this suite (shared by its modules) -----------------------------------

@pytest.fixture(scope="session")
def e2e_ollama() -> Iterator[SimServer]:
    with SimServer(lambda: ollama_app(OllamaSimConfig(parallel=4, token_delay_s=0.0))) as s:
        yield s


@pytest.fixture(scope="session")
def e2e_bedrock() -> Iterator[SimServer]:
    with SimServer(lambda: bedrock_app(BedrockSimConfig())) as s:
        yield s


@pytest.fixture(scope="session")
def e2e_sagemaker() -> Iterator[SimServer]:
    with SimServer(lambda: sagemaker_app(SageMakerSimConfig())) as s:
        yield s


# -- stacks: one router process per primary, shared by the fault modules ----------------------

class Stacks:
    """Router processes by primary, started on first use and kept for the session."""

    def __init__(self, sims: dict[str, SimServer], tmp: Path) -> None:
        self.sims, self.tmp = sims, tmp
        self.made: dict[str, Stack] = {}

    def __call__(self, primary: str) -> Stack:
        if primary not in self.made:
            policy = fast_policy(self.sims["local"].url, self.sims["bedrock"].url,
                                 self.sims["sagemaker"].url, primary=primary)
            self.made[primary] = start_stack(policy, self.sims, self.tmp, primary=primary)
        return self.made[primary]


@pytest.fixture(scope="session")
def stacks(e2e_ollama: SimServer, e2e_bedrock: SimServer, e2e_sagemaker: SimServer,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    pool = Stacks({"local": e2e_ollama, "bedrock": e2e_bedrock, "sagemaker": e2e_sagemaker},
                  tmp_path_factory.mktemp("router"))
    yield pool
    for st in pool.made.values():
        st.router.stop()


@pytest.fixture
def stack(request: pytest.FixtureRequest, stacks: Stacks) -> Iterator[Stack]:
    """The router for `request.param` as primary: settled before, checked healthy after."""
    st = stacks(request.param)
    st.settle()
    yield st
    st.settle()


# -- the fault table (rows collected by `fault_helpers.record`) --------------------------------

@pytest.fixture(scope="session", autouse=True)
def fault_table() -> Iterator[None]:
    """At session end, writes the fault suite's table as markdown to `$HR_FAULT_TABLE` (when
    set and some case recorded a row)."""
    yield
    from tests.e2e import fault_helpers  # here: fault_helpers imports this module

    path = fault_helpers.table_path()
    if path and fault_helpers.TABLE:
        fault_helpers.write_table(path)


DIR = "x-e2e-dir"  # on `prefill_stack`'s router: "bedrock" routes Bedrock -> SageMaker


@pytest.fixture
def prefill_stack(request: pytest.FixtureRequest, stacks: Stacks) -> Iterator[Stack]:
    """Like `stack`, on one more router whose cloud backends declare that they continue a
    trailing assistant message (`prefill: true`), so a continuation goes by prefill. One process
    for both directions: Ollama -> Bedrock by default, Bedrock -> SageMaker with `DIR: bedrock`
    (the test sends it); kept with `stacks`' processes (stopped, checked by the invariants)."""
    primary = request.param
    if "prefill-local" not in stacks.made:
        policy = fast_policy(stacks.sims["local"].url, stacks.sims["bedrock"].url,
                             stacks.sims["sagemaker"].url)
        for name in ("bedrock", "sagemaker"):
            policy["backends"][name]["prefill"] = True
        policy["routes"].insert(-1, {"name": "dir-bedrock", "match": {"headers": {DIR: "bedrock"}},
                                     "targets": ["bedrock", "sagemaker"], "max_queue_wait_s": 2})
        st = start_stack(policy, stacks.sims, stacks.tmp)
        stacks.made["prefill-local"] = st
        stacks.made["prefill-bedrock"] = Stack(st.router, st.sims, st.audit_path, "bedrock")
    st = stacks.made[f"prefill-{primary}"]
    st.settle()
    yield st
    st.settle()
