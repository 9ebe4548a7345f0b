"""Prober: probe results for the planner, health for local breakers, loops that stop."""

from __future__ import annotations

import asyncio

from router.backends.base import ProbeResult
from router.policy.loader import parse_policy
from router.resilience.circuit import BreakerBook
from router.resilience.prober import Prober
from router.state.memory import MemoryStore
from tests.fakes import FakeBackend

CIRCUIT = parse_policy({
    "models": {"m": {"vram_gb": 1}},
    "backends": {"local": {"type": "ollama", "models": {"m": "m:1"}}},
    "routes": [{"name": "r", "targets": ["local"]}],
    "circuit": {"failure_threshold": 2, "local_open_for_s": 30},
}).circuit


class Raising(FakeBackend):
    async def probe(self) -> ProbeResult:
        raise RuntimeError("boom: secret detail")


def prober(**backends: FakeBackend) -> tuple[Prober, BreakerBook]:
    local = {n: b.local for n, b in backends.items()}
    breakers = BreakerBook(MemoryStore(), CIRCUIT, local, lambda: 1000.0)
    return Prober(backends, {n: 1.0 for n in backends}, breakers), breakers


async def test_a_failed_local_probe_counts_against_its_breaker() -> None:
    local = FakeBackend("local", local=True, probe_result=ProbeResult(ok=False, detail="down"))
    p, breakers = prober(local=local)
    await p.probe_once("local")
    assert p.results["local"].ok is False and breakers.allows("local")
    await p.probe_once("local")
    assert not breakers.allows("local")  # threshold 2: open


async def test_a_good_probe_half_opens_an_open_local_breaker() -> None:
    local = FakeBackend("local", local=True, probe_result=ProbeResult(ok=False))
    p, breakers = prober(local=local)
    for _ in range(2):
        await p.probe_once("local")
    assert breakers.state_name("local") == "open"
    local.probe_result = ProbeResult(ok=True)
    await p.probe_once("local")
    assert breakers.state_name("local") == "half_open"


async def test_a_probe_that_raises_is_a_failed_result_without_its_message() -> None:
    p, _ = prober(local=Raising("local", local=True))
    result = await p.probe_once("local")
    assert result.ok is False and result.detail == "probe error: RuntimeError"


async def test_cloud_probes_never_touch_breakers() -> None:
    cloud = FakeBackend("cloud", probe_result=ProbeResult(ok=False))
    p, breakers = prober(cloud=cloud)
    for _ in range(3):
        await p.probe_once("cloud")
    assert breakers.allows("cloud") and p.results["cloud"].ok is False


async def test_probe_loops_use_the_given_sleep_and_stop() -> None:
    local = FakeBackend("local", local=True)
    slept: list[float] = []
    done = asyncio.Event()

    async def sleep(d: float) -> None:
        slept.append(d)
        if len(slept) >= 3:
            done.set()
        await asyncio.sleep(0)

    breakers = BreakerBook(MemoryStore(), CIRCUIT, {"local": True}, lambda: 1000.0)
    p = Prober({"local": local}, {"local": 0.25}, breakers, sleep=sleep)
    await p.probe_all()
    assert "local" in p.results
    p.start()
    await done.wait()
    await p.stop()
    assert slept[:3] == [0.25, 0.25, 0.25]
