"""The service facade with scripted in-process backends: complete, stream (closing releases
the slot and the runtime), explain, what finish records, and the drain."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from router.audit import AuditLog
from router.errors import BackendRejected, BackendStreamError, ModelNotFound, Unauthorized
from router.policy.loader import parse_policy
from router.policy.schema import Policy
from router.runtime import Runtime
from router.service import ClientContext, RouterService, StreamOutcome
from router.state.base import slot_key
from router.state.memory import MemoryStore
from router.types import ChatRequest
from tests.fakes import FakeBackend

POLICY: dict[str, Any] = {
    "models": {"gpt-oss-20b": {"vram_gb": 14}},
    "backends": {
        "local": {"type": "ollama", "parallel": 1, "models": {"gpt-oss-20b": "gpt-oss:20b"}},
        "bedrock": {"type": "bedrock", "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"}},
    },
    "routes": [{"name": "r", "targets": ["local", "bedrock"], "max_queue_wait_s": 1}],
    "retry": {"attempts": 1},
}
LOOPBACK = ClientContext(request_id="req-1", address="127.0.0.1")
SLOT = slot_key("local", "gpt-oss:20b")


def make(policy: dict[str, Any] | None = None, audit: AuditLog | None = None,
         **fakes: FakeBackend) -> tuple[RouterService, dict[str, FakeBackend], MemoryStore]:
    store = MemoryStore()
    built: dict[str, FakeBackend] = {}

    def backend(name: str, cfg: Any) -> FakeBackend:
        built[name] = fakes.get(name) or FakeBackend(name, local=bool(cfg.local))
        return built[name]

    def runtime(p: Policy) -> Runtime:
        return Runtime(p, store, clock=asyncio.get_event_loop().time, backend_factory=backend)

    service = RouterService(parse_policy(policy or POLICY), store, audit=audit,
                            runtime_factory=runtime)
    return service, built, store


def chat(stream: bool = False, model: str = "gpt-oss-20b") -> ChatRequest:
    return ChatRequest.model_validate({"model": model, "stream": stream,
                                       "messages": [{"role": "user", "content": "Hi"}]})


def count(service: RouterService, **labels: str) -> float:
    value = service.metrics.registry.get_sample_value("router_requests_total", labels)
    return value or 0.0


async def in_flight(store: MemoryStore) -> int:
    snap = await store.snapshot([SLOT], [])
    return snap.slots[SLOT].in_flight


async def test_complete_returns_the_answer_and_the_meta_and_records_it() -> None:
    service, backends, _ = make()
    done = await service.complete(chat(), LOOPBACK)
    assert done.result.content == "answer from local" and done.model == "gpt-oss-20b"
    meta = done.meta
    assert (meta.request_id, meta.route, meta.backend, meta.reason) == (
        "req-1", "r", "local", "local")
    assert service.runtime.active == 0
    assert count(service, backend="local", route="r", reason="local", outcome="ok") == 1


async def test_a_failed_request_raises_with_its_meta_and_is_recorded() -> None:
    local = FakeBackend("local", local=True, script=[BackendRejected("no", backend="local")])
    service, _, _ = make(local=local)
    with pytest.raises(BackendRejected) as info:
        await service.complete(chat(), LOOPBACK)
    assert info.value.meta is not None and info.value.meta.route == "r"
    assert info.value.meta.reason == "local" and info.value.meta.backend is None
    assert service.runtime.active == 0
    assert count(service, backend="none", route="r", reason="local",
                 outcome="backend_rejected") == 1


async def test_rejections_before_planning_carry_the_request_id_and_count_as_rejected() -> None:
    service, _, _ = make()
    with pytest.raises(ModelNotFound) as info:
        await service.complete(chat(model="nope"), LOOPBACK)
    assert info.value.meta is not None and info.value.meta.request_id == "req-1"
    assert info.value.meta.route is None
    with pytest.raises(Unauthorized):  # no keys: loopback clients only
        await service.complete(chat(), ClientContext(request_id="r2", address="10.0.0.5"))
    assert count(service, backend="none", route="none", reason="rejected",
                 outcome="model_not_found") == 1
    assert count(service, backend="none", route="none", reason="rejected",
                 outcome="invalid_api_key") == 1


async def test_a_stream_read_to_the_end_records_ok_and_releases_everything() -> None:
    service, _, store = make()
    opened = await service.stream(chat(stream=True), LOOPBACK)
    assert opened.meta.backend == "local" and opened.meta.route == "r"
    assert await in_flight(store) == 1 and service.runtime.active == 1
    events = [e async for e in opened]
    await opened.aclose()
    assert events[-1].finish_reason == "stop" and opened.usage is not None
    assert await in_flight(store) == 0 and service.runtime.active == 0
    assert count(service, backend="local", route="r", reason="local", outcome="ok") == 1
    await opened.aclose()  # once only
    assert count(service, backend="local", route="r", reason="local", outcome="ok") == 1


async def test_closing_a_stream_early_releases_the_slot_and_records_the_disconnect() -> None:
    service, backends, store = make()
    opened = await service.stream(chat(stream=True), LOOPBACK)
    async for _ in opened:
        break
    await opened.aclose()
    assert await in_flight(store) == 0 and service.runtime.active == 0
    assert not service.streams.active
    assert opened.status == 499
    assert count(service, backend="local", route="r", reason="local",
                 outcome=StreamOutcome.CLIENT_DISCONNECTED) == 1
    # the slot is free: the next stream is admitted at once
    again = await service.stream(chat(stream=True), LOOPBACK)
    await again.aclose()
    assert len(backends["local"].calls) == 2


async def test_a_stalled_client_is_recorded_as_client_stalled() -> None:
    service, _, store = make()
    opened = await service.stream(chat(stream=True), LOOPBACK)
    async for _ in opened:
        break
    opened.client_stalled()
    await opened.aclose()
    assert await in_flight(store) == 0
    assert count(service, backend="local", route="r", reason="local",
                 outcome=StreamOutcome.CLIENT_STALLED) == 1


async def test_a_stream_that_breaks_after_its_first_event_raises_with_meta() -> None:
    local = FakeBackend("local", local=True, stream_fail_after=2,
                        stream_error=BackendStreamError("cut", backend="local",
                                                        code="stream_truncated"))
    # No continuation (stream.max_continuations 0): the break reaches the surface.
    service, _, store = make({**POLICY, "stream": {"max_continuations": 0}}, local=local)
    opened = await service.stream(chat(stream=True), LOOPBACK)
    seen = 0
    with pytest.raises(BackendStreamError) as info:
        async for _ in opened:
            seen += 1
    await opened.aclose()
    assert seen == 2 and info.value.meta == opened.meta
    assert await in_flight(store) == 0
    assert count(service, backend="local", route="r", reason="local",
                 outcome="stream_truncated") == 1


async def test_explain_plans_without_sending_or_recording() -> None:
    service, backends, _ = make()
    view = await service.explain(chat(), LOOPBACK)
    assert view["route"] == "r" and view["reason"] == "local"
    assert [c["backend"] for c in view["candidates"]] == ["local", "bedrock"]
    assert view["error"] is None
    assert not backends["local"].calls and not backends["bedrock"].calls
    assert count(service, backend="none", route="r", reason="local", outcome="ok") == 0


async def test_finish_writes_one_audit_record_with_rendered_reasons(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path))
    service, _, _ = make(audit=audit)
    await service.complete(chat(), LOOPBACK)
    audit.close()
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert len(records) == 1
    rec = records[0]
    assert rec["request_id"] == "req-1" and rec["backend"] == "local" and rec["outcome"] == "ok"
    assert rec["candidates"][0] == {"backend": "local", "reason": "local"}
    assert "Hi" not in path.read_text()


async def test_drain_ends_open_streams_in_band() -> None:
    local = FakeBackend("local", local=True, stall_after=2)
    service, _, store = make(local=local)
    opened = await service.stream(chat(stream=True), LOOPBACK)
    seen: list[object] = []

    async def read() -> None:
        async for event in opened:
            seen.append(event)

    reader = asyncio.get_running_loop().create_task(read())
    while len(seen) < 2:
        await asyncio.sleep(0)
    service.begin_drain(0.0)
    with pytest.raises(BackendStreamError) as info:
        await reader
    assert info.value.code == "stream_interrupted"
    await opened.aclose()
    assert await in_flight(store) == 0 and service.runtime.active == 0
