"""A stream whose upstream reported no usage (or only zeros) never shows zeros as counts: the
final event carries the router's estimate, marked as one, and every dialect marks it; usage
the upstream did report passes through unmarked. The served model reaches the facade's answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest

from router.api.anthropic_wire import usage_dict as anthropic_usage
from router.api.ollama_encode import Encoder
from router.api.openai_wire import ChunkEncoder
from router.api.responses_objects import usage_object
from router.backends.base import BackendCall
from router.tokens import estimate_prompt_tokens
from router.types import StreamEvent, Usage
from tests.fakes import FakeBackend
from tests.unit.router.test_service import LOOPBACK, chat, make

TEXT = ["Hello", " there,", " friend"]


@dataclass
class NoUsageBackend(FakeBackend):
    final_usage: Usage | None = None

    async def stream(self, call: BackendCall) -> AsyncIterator[StreamEvent]:
        self.calls.append(call)
        yield StreamEvent(reasoning="think")
        for t in TEXT:
            yield StreamEvent(content=t)
        yield StreamEvent(finish_reason="stop", usage=self.final_usage)


@pytest.mark.parametrize("upstream", [None, Usage(0, 0)])
async def test_a_stream_without_usage_gets_a_marked_estimate(upstream: Usage | None) -> None:
    service, _, _ = make(local=NoUsageBackend("local", local=True, final_usage=upstream))
    request = chat(stream=True)
    opened = await service.stream(request, LOOPBACK)
    try:
        events = [e async for e in opened]
    finally:
        await opened.aclose()
    usage = events[-1].usage
    assert usage is not None and usage.estimated
    assert usage.prompt_tokens == estimate_prompt_tokens(request) > 0
    chars = len("think") + len("".join(TEXT))
    assert usage.completion_tokens == -(-chars // 3) > 0
    assert opened.usage == usage  # what is recorded is the estimate too


async def test_reported_usage_passes_through_unmarked() -> None:
    service, _, _ = make(local=NoUsageBackend("local", local=True, final_usage=Usage(7, 3)))
    opened = await service.stream(chat(stream=True), LOOPBACK)
    try:
        events = [e async for e in opened]
    finally:
        await opened.aclose()
    assert events[-1].usage == Usage(7, 3) and not events[-1].usage.estimated


async def test_the_facade_names_the_served_model() -> None:
    service, _, _ = make()
    done = await service.complete(chat(), LOOPBACK)
    assert (done.model, done.served_model, done.meta.served_model) == (
        "gpt-oss-20b", "gpt-oss:20b", "gpt-oss:20b")
    opened = await service.stream(chat(stream=True), LOOPBACK)
    await opened.aclose()
    assert opened.served_model == opened.meta.served_model == "gpt-oss:20b"


ESTIMATE = Usage(12, 5, estimated=True)


def test_chat_completions_marks_an_estimate_and_never_sends_zeros() -> None:
    enc = ChunkEncoder(completion_id="c", created=1, model="m", include_usage=True)
    out = enc.encode(StreamEvent(finish_reason="stop", usage=ESTIMATE)).decode()
    usage = [orjson.loads(x[6:]) for x in out.split("\n\n") if '"usage"' in x][0]["usage"]
    assert usage == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                     "estimated": True}
    enc = ChunkEncoder(completion_id="c", created=1, model="m", include_usage=True)
    out = enc.encode(StreamEvent(finish_reason="stop")).decode()
    assert '"usage"' not in out and out.endswith("data: [DONE]\n\n")  # unknown: omitted
    enc = ChunkEncoder(completion_id="c", created=1, model="m", include_usage=True)
    assert b"estimated" not in enc.encode(StreamEvent(finish_reason="stop", usage=Usage(1, 2)))


def test_responses_marks_an_estimate_and_omits_unknown_usage() -> None:
    usage = usage_object(ESTIMATE)
    assert usage is not None and usage["estimated"] is True and usage["output_tokens"] == 5
    assert usage_object(None) is None
    reported = usage_object(Usage(1, 2))
    assert reported is not None and "estimated" not in reported


def test_anthropic_marks_an_estimate() -> None:
    assert anthropic_usage(ESTIMATE)["estimated"] is True
    assert anthropic_usage(ESTIMATE)["output_tokens"] == 5
    assert "estimated" not in anthropic_usage(Usage(1, 2))


def test_ollama_marks_an_estimate_and_omits_unknown_counts() -> None:
    def final(usage: Usage | None) -> dict[str, object]:
        line = Encoder("m", chat=True, show_thinking=True).line(
            StreamEvent(finish_reason="stop", usage=usage))
        return dict(orjson.loads(line.splitlines()[-1]))

    est = final(ESTIMATE)
    assert (est["prompt_eval_count"], est["eval_count"], est["usage_estimated"]) == (12, 5, True)
    unknown = final(None)
    assert "eval_count" not in unknown and "prompt_eval_count" not in unknown
    assert "usage_estimated" not in final(Usage(1, 2))
