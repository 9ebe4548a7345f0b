"""Mid-stream continuation (`router/continuation.py`): a stream that breaks after answer text
went out goes on on the next candidate, by prefill where the target continues, by a
regenerated answer that must start with the delivered text where it does not; one finish,
usage summed; never after a tool call, never across the privacy boundary, at most
`stream.max_continuations` times; counted and audited."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from router.continuation import (
    MISMATCH,
    NEED_MORE,
    ContinuedStream,
    match_delivered,
    prefilled,
)
from router.errors import BackendContentFiltered, BackendError, BackendRejected
from router.executor import Executor, Hooks
from router.planner import Candidate, Plan
from router.policy.loader import parse_policy
from router.reasons import Reason, ReasonCode
from router.resilience.circuit import BreakerBook
from router.state.memory import MemoryStore
from router.types import ChatRequest, Message, StreamEvent, Usage
from tests.unit.router.fake_streams import Gate, ScriptBackend, Step, cut, text, tool_call
from tests.unit.router.test_executor import Clock, ctx

MODELS = {"local": "gpt-oss:20b", "local2": "gpt-oss:20b", "bedrock": "openai.gpt-oss-20b-1:0"}


def policy(prefill: bool, limit: int = 1) -> Any:
    return parse_policy({
        "models": {"gpt-oss-20b": {"vram_gb": 14}},
        "backends": {
            "local": {"type": "ollama", "parallel": 1, "prefill": False,
                      "models": {"gpt-oss-20b": "gpt-oss:20b"}},
            "local2": {"type": "ollama", "parallel": 1, "prefill": prefill,
                       "base_url": "http://127.0.0.1:11435",
                       "models": {"gpt-oss-20b": "gpt-oss:20b"}},
            "bedrock": {"type": "bedrock", "prefill": prefill,
                        "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0"}},
        },
        "routes": [{"name": "r", "targets": ["local", "bedrock"]}],
        "stream": {"first_token_timeout_s": 5, "idle_timeout_s": 5, "max_continuations": limit},
    })


class Run:
    def __init__(self, *, first: list[Step], then: list[list[Step]] | None = None,
                 prefill: bool = True, limit: int = 1, target: str = "bedrock",
                 privacy: str = "standard") -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.backends = {"local": ScriptBackend("local", local=True, scripts=[first]),
                         "local2": ScriptBackend("local2", local=True),
                         "bedrock": ScriptBackend("bedrock")}
        self.backends[target].scripts = list(then or [])
        pol = policy(prefill, limit)
        breakers = BreakerBook(self.store, pol.circuit,
                               {"local": True, "local2": True, "bedrock": False}, self.clock)
        self.counted: list[tuple[str, str]] = []
        self.ex = Executor(backends=self.backends, policy=pol, store=self.store,
                           breakers=breakers, clock=self.clock,
                           hooks=Hooks(on_continuation=lambda b, o: self.counted.append((b, o))))
        self.ctx = ctx(self.clock, privacy=privacy, stream=True)
        self.plan = Plan("r", privacy, 10, [  # type: ignore[arg-type]
            _cand("local"), _cand(target)], [])
        self.events: list[StreamEvent] = []
        self.error: BackendError | None = None

    async def go(self, opened: asyncio.Event | None = None) -> Run:
        self.stream = stream = ContinuedStream(await self.ex.open_stream(self.ctx, self.plan))
        if opened is not None:
            opened.set()
        try:
            async for ev in stream.events():
                self.events.append(ev)
        except BackendError as exc:
            self.error = exc
        assert self.store.held() == 0  # every slot went back
        return self

    @property
    def text(self) -> str:
        return "".join(e.content or "" for e in self.events)

    @property
    def finishes(self) -> list[StreamEvent]:
        return [e for e in self.events if e.finish_reason is not None]

    @property
    def attempts(self) -> list[tuple[str, str]]:
        return [(a.backend, a.outcome) for a in self.ctx.attempts]


def _cand(name: str) -> Candidate:
    local = name != "bedrock"
    return Candidate(name, MODELS[name], local, Reason(ReasonCode.LOCAL if local
                                                       else ReasonCode.CLOUD),
                     max_wait_s=1.0, slots=1 if local else 0)


BROKEN = [*text("Hello", " wor", finish=False), cut()]


# -- the whitespace-normalised prefix --------------------------------------------------------

@pytest.mark.parametrize(("delivered", "new", "final", "want"), [
    ("Hello wor", "Hello world", False, 9),
    ("Hello wor", "  Hello   world", False, 13),
    ("Hello wor", "Hello\n\nworld", False, 10),
    ("Hello wor", "Hello", False, NEED_MORE),
    ("Hello wor", "Hello", True, MISMATCH),
    ("Hello wor", "Help", False, MISMATCH),
    ("Hello ", "Hello ", False, NEED_MORE),  # the whitespace may go on
    ("Hello ", "Hello  there", False, 7),
    ("Hello ", "Hello", True, 5),
    ("Hello ", "Hello,", False, MISMATCH),
    ("Hello", "Hello there", False, 5),
])
def test_match_delivered(delivered: str, new: str, final: bool, want: int) -> None:
    assert match_delivered(delivered, new, final=final) == want


def test_prefill_appends_or_extends_the_trailing_assistant_message() -> None:
    req = ChatRequest(model="m", messages=[Message(role="user", content="hi")])
    assert [m.role for m in prefilled(req, "Hel").messages] == ["user", "assistant"]
    assert prefilled(req, "Hel").messages[-1].content == "Hel"
    req2 = prefilled(req, "He")
    assert prefilled(req2, "llo").messages[-1].content == "Hello"
    assert req.messages[-1].role == "user"  # the original is untouched


# -- continuing --------------------------------------------------------------------------

async def test_prefill_continues_after_the_delivered_text() -> None:
    r = await Run(first=BROKEN, then=[text("ld", "!", usage=Usage(20, 3))]).go()
    assert r.error is None and r.text == "Hello world!"
    assert len(r.finishes) == 1 and r.events[-1].finish_reason == "stop"
    assert r.backends["bedrock"].last_messages()[-1] == {"role": "assistant",
                                                         "content": "Hello wor"}
    usage = r.events[-1].usage
    assert usage is not None and usage.estimated  # the broken attempt reported none
    assert usage.prompt_tokens == 5 + 20 and usage.completion_tokens == 3 + 3
    assert r.counted == [("bedrock", "prefill")]
    assert r.attempts == [("local", "stream_truncated"), ("bedrock", "continuation_prefill")]
    assert r.ctx.served_by == "bedrock"


async def test_an_echoed_prefill_is_skipped() -> None:
    r = await Run(first=BROKEN, then=[text("Hello", " world", "!")]).go()
    assert r.error is None and r.text == "Hello world!"


async def test_regeneration_forwards_only_what_follows_the_delivered_text() -> None:
    r = await Run(first=BROKEN, prefill=False,
                  then=[[StreamEvent(reasoning="again"), *text("Hel", "lo  wo", "rld!")]]).go()
    assert r.error is None and r.text == "Hello world!"
    assert not any(e.reasoning for e in r.events)  # its reasoning is not sent after the text
    assert r.backends["bedrock"].last_messages() == [{"role": "user", "content": "hi"}]
    assert r.counted == [("bedrock", "regenerated")]


async def test_a_different_regenerated_answer_ends_with_the_original_error() -> None:
    r = await Run(first=BROKEN, prefill=False, then=[text("Goodbye", " world")]).go()
    assert r.error is not None and r.error.code == "stream_truncated"
    assert r.error.backend == "local" and not r.finishes and r.text == "Hello wor"
    assert r.counted == [("bedrock", "mismatch")]
    assert r.attempts == [("local", "stream_truncated"), ("bedrock", "continuation_mismatch")]


async def test_a_regenerated_answer_shorter_than_the_delivered_text_is_a_mismatch() -> None:
    r = await Run(first=BROKEN, prefill=False, then=[text("Hello")]).go()
    assert r.error is not None and r.error.code == "stream_truncated" and not r.finishes


async def test_a_400_to_the_prefill_is_unsupported_and_regenerates_there() -> None:
    rejected = BackendRejected("assistant prefill not supported", backend="bedrock")
    r = await Run(first=BROKEN, then=[[rejected], text("Hello world!")]).go()
    assert r.error is None and r.text == "Hello world!"
    assert len(r.backends["bedrock"].calls) == 2
    assert r.backends["bedrock"].last_messages()[-1]["role"] == "user"
    assert r.attempts == [("local", "stream_truncated"), ("bedrock", "prefill_unsupported"),
                          ("bedrock", "continuation_regenerated")]
    # The next break on the same executor regenerates there at once.
    again = Run(first=BROKEN, then=[text("Hello world!")])
    again.ex, again.store = r.ex, r.store
    r.backends["local"].scripts, r.backends["bedrock"].scripts = [BROKEN], [text("Hello world!")]
    again.backends, again.ctx = r.backends, ctx(r.clock, stream=True)
    await again.go()
    assert again.text == "Hello world!" and len(r.backends["bedrock"].calls) == 3
    assert r.backends["bedrock"].last_messages()[-1]["role"] == "user"


async def test_only_reasoning_sent_restarts_and_its_events_follow() -> None:
    first: list[Step] = [StreamEvent(reasoning="thinking"), cut("stream_stalled")]
    r = await Run(first=first, then=[[StreamEvent(reasoning="anew"),
                                      *text("Answer", usage=Usage(9, 4))]]).go()
    assert r.error is None and r.text == "Answer"
    assert [e.reasoning for e in r.events if e.reasoning] == ["thinking", "anew"]
    assert r.backends["bedrock"].last_messages() == [{"role": "user", "content": "hi"}]
    assert r.counted == [("bedrock", "restarted")]


async def test_never_after_a_tool_call_began() -> None:
    r = await Run(first=[*text("Let me look", finish=False), tool_call(), cut()]).go()
    assert r.error is not None and r.error.code == "stream_truncated"
    assert r.backends["bedrock"].calls == [] and r.counted == []


async def test_a_private_request_never_continues_on_the_cloud() -> None:
    r = await Run(first=BROKEN, privacy="private").go()
    assert r.error is not None and r.backends["bedrock"].calls == []


async def test_a_private_request_continues_on_a_local_candidate() -> None:
    r = await Run(first=BROKEN, privacy="private", target="local2",
                  then=[text("ld!")]).go()
    assert r.error is None and r.text == "Hello world!"
    assert r.counted == [("local2", "prefill")]


async def test_a_content_filter_is_not_continued() -> None:
    first = [*text("Hello", finish=False), BackendContentFiltered("no", backend="local")]
    r = await Run(first=first).go()
    assert r.error is not None and r.error.code == "content_filter"
    assert r.backends["bedrock"].calls == []


async def test_at_most_max_continuations() -> None:
    r = await Run(first=BROKEN, then=[[*text("ld", finish=False), cut()]]).go()
    assert r.error is not None and r.error.backend == "bedrock"  # the break that ended it
    assert r.text == "Hello world" and not r.finishes
    assert r.counted == [("bedrock", "broken")]
    assert r.attempts == [("local", "stream_truncated"), ("bedrock", "stream_truncated")]
    r = await Run(first=BROKEN, limit=0).go()
    assert r.error is not None and r.backends["bedrock"].calls == []


async def test_no_candidate_left_counts_unavailable() -> None:
    r = await Run(first=BROKEN, then=[[BackendRejected("down", backend="bedrock",
                                                       status=403)]]).go()
    assert r.error is not None and r.error.code == "stream_truncated"
    assert r.counted == [("local", "unavailable")]


@pytest.mark.parametrize("where", ["mid_stream", "opening"])
async def test_the_shutdown_grace_ends_a_continuation_in_band(where: str) -> None:
    gate = Gate()
    then: list[Step] = [*text("ld", finish=False), gate] if where == "mid_stream" else [gate]
    r = Run(first=BROKEN, then=[[*then, *text("!")]])
    opened = asyncio.Event()
    task = asyncio.create_task(r.go(opened))
    await opened.wait()
    await gate.reached.wait()
    r.stream.interrupt("the router is shutting down")
    await task
    assert r.error is not None and r.error.code == "stream_interrupted" and not r.finishes
    assert r.text == ("Hello world" if where == "mid_stream" else "Hello wor")
