"""Runtime: a reload keeps requests on the old runtime until they leave; the old one closes
its backends only then; a given pool reaches every backend that uses one."""

from __future__ import annotations

import asyncio
from typing import Any

from router.backends.pool import BlockingPool
from router.policy.loader import parse_policy
from router.policy.schema import Policy
from router.runtime import Runtime
from router.service import ClientContext, RouterService
from router.state.memory import MemoryStore
from router.types import ChatRequest
from tests.fakes import FakeBackend
from tests.unit.router.test_service import POLICY


class PooledFake(FakeBackend):
    pool: BlockingPool | None = None

    def use_pool(self, pool: BlockingPool) -> None:
        self.pool = pool


def runtime(built: list[FakeBackend], store: MemoryStore | None = None,
            pool: BlockingPool | None = None) -> Runtime:
    def backend(name: str, cfg: Any) -> FakeBackend:
        b = PooledFake(name, local=bool(cfg.local)) if name == "bedrock" else FakeBackend(
            name, local=bool(cfg.local), gate=asyncio.Event())
        built.append(b)
        return b

    return Runtime(parse_policy(POLICY), store or MemoryStore(), clock=lambda: 0.0,
                   backend_factory=backend, pool=pool)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_retire_waits_for_the_last_request_to_leave() -> None:
    built: list[FakeBackend] = []
    rt = runtime(built)
    rt.enter()
    await rt.retire()
    assert not any(b.closed for b in built)
    rt.leave()
    await settle()
    assert all(b.closed for b in built)


async def test_retire_with_no_request_closes_at_once() -> None:
    built: list[FakeBackend] = []
    rt = runtime(built)
    await rt.retire()
    assert all(b.closed for b in built)


async def test_the_pool_is_handed_to_backends_that_use_one() -> None:
    built: list[FakeBackend] = []
    pool = BlockingPool()
    runtime(built, pool=pool)
    pooled = [b for b in built if isinstance(b, PooledFake)]
    assert pooled and all(b.pool is pool for b in pooled)
    assert not pool.started  # threads start only when work arrives


async def test_a_reload_keeps_a_request_in_flight_on_the_old_runtime() -> None:
    store = MemoryStore()
    generations: list[list[FakeBackend]] = []

    def factory(p: Policy) -> Runtime:
        generations.append([])
        return runtime(generations[-1], store)

    service = RouterService(parse_policy(POLICY), store, runtime_factory=factory)
    old = service.runtime
    request = ChatRequest.model_validate(
        {"model": "gpt-oss-20b", "messages": [{"role": "user", "content": "Hi"}]})
    task = asyncio.get_running_loop().create_task(
        service.complete(request, ClientContext(request_id="r", address="127.0.0.1")))
    while not generations[0][0].calls:
        await asyncio.sleep(0)
    await service.reload(parse_policy(POLICY))
    assert service.runtime is not old and old.active == 1
    assert not any(b.closed for b in generations[0])
    gate = generations[0][0].gate
    assert gate is not None
    gate.set()
    done = await task
    assert done.meta.backend == "local" and old.active == 0
    await settle()
    assert all(b.closed for b in generations[0])
    assert not any(b.closed for b in generations[1])
    assert service.reloads["ok"] == 1
    await service.runtime.close()


async def test_a_pool_is_shut_down_by_its_owner() -> None:
    pool = BlockingPool(max_workers=2)
    assert await pool.run(lambda x: x + 1, 1) == 2
    assert pool.started
    pool.shutdown()
    assert pool.closed and not pool.started
