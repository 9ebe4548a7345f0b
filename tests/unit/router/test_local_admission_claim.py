"""The slot claimed with admission's snapshot (service/admission.py, local_admission.py): the
first attempt uses it instead of acquiring; a plan that does not use it, a first attempt
elsewhere, an error or a cancellation gives it back; explain never claims; releases do not
wait for the store. In-process store and scripted backends (no network)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from router.context import RequestContext
from router.errors import BackendTimeout, RouterError
from router.executor import Executor
from router.planner import Candidate, Plan, RequestFacts
from router.policy.loader import parse_policy
from router.reasons import LOCAL
from router.resilience.circuit import BreakerBook
from router.state.base import Lease, SlotClaim, SlotRequest, Spilled, StoreSnapshot
from router.state.memory import MemoryStore
from router.types import ChatRequest
from tests.fakes import FakeBackend
from tests.unit.router.test_service import LOOPBACK, POLICY, SLOT, chat, make


class SpyStore(MemoryStore):
    """Counts claims, acquisitions and awaited releases."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[Lease | None] = []
        self.acquires = 0
        self.awaited_releases = 0

    async def acquire_slot(self, key: str, slots: int, timeout_s: float,
                           request: SlotRequest | None = None) -> Lease | Spilled | None:
        self.acquires += 1
        return await super().acquire_slot(key, slots, timeout_s, request)

    async def release_slot(self, lease: Lease) -> None:
        self.awaited_releases += 1
        await super().release_slot(lease)

    def claim(self, claim: SlotClaim) -> Lease | None:
        got = super().claim(claim)
        self.claims.append(got)
        return got


def spy_service(policy: dict[str, Any] | None = None, **fakes: FakeBackend
                ) -> tuple[Any, SpyStore]:
    service, _, _ = make(policy, **fakes)
    store = SpyStore()
    service.admission.store = store
    service.runtime.executor.store = store
    service.runtime.executor.admission.store = store
    return service, store


async def test_the_first_attempt_uses_the_claimed_slot_and_releases_it() -> None:
    service, store = spy_service()
    done = await service.complete(chat(), LOOPBACK)
    assert done.meta.backend == "local"
    assert [c.key for c in store.claims if c] == [SLOT] and len(store.claims) == 1
    assert store.acquires == 0 and store.awaited_releases == 0
    assert store.held() == 0
    load = (await store.snapshot([SLOT], [])).slots[SLOT]
    assert load.service_time_s is not None and len(load.samples) == 1  # sample went along


async def test_a_stream_uses_the_claim_and_closing_it_releases() -> None:
    service, store = spy_service()
    opened = await service.stream(chat(stream=True), LOOPBACK)
    assert store.held() == 1 and store.acquires == 0
    async for _ in opened:
        pass
    await opened.aclose()
    assert store.held() == 0 and len(store.claims) == 1


async def test_a_plan_that_does_not_start_on_the_claimed_slot_gives_it_back() -> None:
    # The local host's window is too small for this request: it goes to the cloud.
    policy = {**POLICY, "backends": {
        **POLICY["backends"],
        "local": {**POLICY["backends"]["local"], "context_window": 1024}}}
    service, store = spy_service(policy)
    request = ChatRequest.model_validate({"model": "gpt-oss-20b", "max_tokens": 4000,
                                          "messages": [{"role": "user", "content": "Hi"}]})
    prep = await service.admission.prepare(service.runtime, request, LOOPBACK)
    assert store.claims and store.claims[0] is not None  # claimed before planning...
    assert prep.plan.candidates[0].backend == "bedrock"
    assert prep.ctx.claim is None and store.held() == 0  # ...and given back at once


async def test_explain_never_claims() -> None:
    service, store = spy_service()
    view = await service.explain(chat(), LOOPBACK)
    assert view["candidates"][0]["backend"] == "local"
    assert store.claims == [] and store.held() == 0


async def test_cancelling_a_request_that_holds_the_claim_releases_it() -> None:
    gate = asyncio.Event()
    service, store = spy_service(local=FakeBackend("local", local=True, gate=gate))
    task = asyncio.create_task(service.complete(chat(), LOOPBACK))
    while store.held() == 0 or not service.runtime.executor.backends["local"].calls:  # type: ignore[attr-defined]
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert store.held() == 0 and store.acquires == 0


async def test_a_failed_first_attempt_releases_the_claim_and_fails_over() -> None:
    service, store = spy_service(
        local=FakeBackend("local", local=True, script=[BackendTimeout("slow", backend="local")]))
    done = await service.complete(chat(), LOOPBACK)
    assert done.meta.backend == "bedrock"
    assert store.held() == 0 and len(store.claims) == 1 and store.acquires == 0


# -- the executor alone: a claim on a key no attempt uses ---------------------------------------

def _executor(store: MemoryStore, **backends: FakeBackend) -> Executor:
    policy = parse_policy(POLICY)
    loop = asyncio.get_running_loop()
    return Executor(backends=backends, policy=policy, store=store,
                    breakers=BreakerBook(store, policy.circuit,
                                         {"local": True, "bedrock": False}, loop.time),
                    clock=loop.time)


def _ctx(claim: Lease | None) -> RequestContext:
    loop = asyncio.get_running_loop()
    facts = RequestFacts(model="gpt-oss-20b", privacy="standard", prompt_tokens=5)
    return RequestContext("r1", chat(), facts, (), loop.time(), loop.time() + 30, claim=claim)


def _plan(*cands: Candidate) -> Plan:
    return Plan("r", "standard", 10, list(cands), [])


async def test_a_claim_the_first_attempt_does_not_use_is_released_before_it_runs() -> None:
    store = MemoryStore()
    claimed = store.claim(SlotClaim((("other|m", 1),)))
    assert claimed is not None and store.held() == 1
    ex = _executor(store, bedrock=FakeBackend("bedrock"))
    ctx = _ctx(claimed)
    result = await ex.chat(ctx, _plan(Candidate("bedrock", "b", False, LOCAL)))
    assert result.content == "answer from bedrock"
    assert ctx.claim is None and claimed.released and store.held() == 0


async def test_a_claim_left_when_the_request_ends_is_released() -> None:
    store = MemoryStore()
    claimed = store.claim(SlotClaim(((SLOT, 1),)))
    assert claimed is not None
    ex = _executor(store)
    ctx = _ctx(claimed)
    with pytest.raises(RouterError):  # nothing to attempt: the no-candidate error
        await ex.chat(ctx, _plan())
    assert ctx.claim is None and store.held() == 0


async def test_memory_snapshot_with_a_claim_shows_the_load_before_it() -> None:
    store = MemoryStore()
    snap: StoreSnapshot = await store.snapshot([SLOT], [], claim=SlotClaim(((SLOT, 1),)))
    assert snap.claimed is not None and snap.claimed.key == SLOT
    assert snap.slots[SLOT].in_flight == 0  # before the claim
    full = await store.snapshot([SLOT], [], claim=SlotClaim(((SLOT, 1),)))
    assert full.claimed is None and full.slots[SLOT].in_flight == 1  # no room: no claim
    waiter = asyncio.create_task(store.acquire_slot(SLOT, 1, 5.0))
    await asyncio.sleep(0)
    store.release_nowait(snap.claimed)
    assert (await waiter) is not None  # the released slot went to the waiter


# -- the route on the lease: the estimator's per-route samples ---------------------------------

async def test_the_served_route_goes_with_the_sample_claimed_or_acquired() -> None:
    service, store = spy_service()
    await service.complete(chat(), LOOPBACK)  # on the slot claimed with the snapshot
    assert store.acquires == 0
    ex = _executor(store, local=FakeBackend("local", local=True))  # no claim: it acquires
    await ex.chat(_ctx(None), _plan(Candidate("local", "gpt-oss:20b", True, LOCAL,
                                              max_wait_s=1.0, slots=1)))
    load = (await store.snapshot([SLOT], [])).slots[SLOT]
    assert store.acquires == 1
    assert [s.route for s in load.samples] == ["r", "r"]
    assert load.samples[0].prompt_tokens == 5  # what _ctx's facts say


async def test_a_plan_without_a_route_records_none() -> None:
    store = MemoryStore()
    ex = _executor(store, local=FakeBackend("local", local=True))
    plan = Plan("", "standard", 10, [Candidate("local", "gpt-oss:20b", True, LOCAL,
                                               max_wait_s=1.0, slots=1)], [])
    await ex.chat(_ctx(None), plan)
    assert (await store.snapshot([SLOT], [])).slots[SLOT].samples[0].route is None
