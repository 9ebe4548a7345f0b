"""Mid-stream continuation: a stream that breaks after answer text reached the client goes on
on the plan's next candidate, and the client sees one stream.

`ContinuedStream` wraps the first `StreamSession` and yields its events. When it breaks (cut,
stall, an upstream error event, a run of malformed chunks: any retryable `BackendError` but a
shutdown interrupt or a router bug), and no tool call has begun streaming, and the request has
continuations left (`stream.max_continuations`, default 1), and time is left:

- only reasoning went out: the next candidate restarts the answer and all its events follow;
- the target continues a trailing assistant message (`supports_prefill`): it gets the original
  messages plus the delivered text as that message, and only its new text is forwarded (an
  echo of the delivered text at its start is skipped); a 400 to the prefill counts as
  "unsupported" and is never shown: the same target regenerates, and so do later
  continuations there (until the policy is reloaded);
- otherwise the target regenerates, and its answer is forwarded only if it starts with exactly
  what was delivered (after whitespace normalisation), that part skipped; if not, the stream
  ends with the original break's in-band error, as without continuation.

The continuing attempts' reasoning is not forwarded once answer text went out. Candidates come
from the plan being run, after the broken one; a private request continues only on a local
candidate. The client sees one finish (the last attempt's) and the usage summed over the
attempts (an attempt that reported none is estimated, and the sum marked estimated).

Every continuation is counted (`Hooks.on_continuation(backend, outcome)`) and shows in the
audit's attempts: the broken attempt with its error code, the continuing one as
`continuation_<outcome>` (or its own error code when it broke too), a rejected prefill as
`prefill_unsupported`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import weakref
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import TYPE_CHECKING

from router.context import AttemptRecord, RequestContext
from router.errors import BackendError, BackendRejected, BackendStreamError, RouterError
from router.planner import Candidate, Plan
from router.tokens import CHARS_PER_TOKEN
from router.types import ChatRequest, Message, StreamEvent, Usage

if TYPE_CHECKING:
    from router.executor import Executor
    from router.stream_session import StreamSession

log = logging.getLogger("router.executor")

# Breaks that are never continued: the shutdown grace ending a stream, and the router's bugs.
NOT_CONTINUED = frozenset({"stream_interrupted", "internal_error"})

# Backends that answered a prefill with a 400, per executor (a policy reload starts afresh).
_REFUSED_PREFILL: weakref.WeakKeyDictionary[Executor, set[str]] = weakref.WeakKeyDictionary()


class ContinuationOutcome(StrEnum):
    PREFILL = "prefill"  # continued after the delivered text; the answer finished
    REGENERATED = "regenerated"  # regenerated, started with the delivered text; finished
    RESTARTED = "restarted"  # only reasoning had gone out: restarted; finished
    MISMATCH = "mismatch"  # the regenerated answer did not start with the delivered text
    BROKEN = "broken"  # the continuing stream broke too
    UNAVAILABLE = "unavailable"  # no remaining candidate could take it


class Mode(StrEnum):
    FIRST = "first"
    RESTART = "restart"
    PREFILL = "prefill"
    REGENERATE = "regenerate"


NEED_MORE = -1
MISMATCH = -2


def match_delivered(delivered: str, text: str, final: bool = False) -> int:
    """How many characters at the start of `text` repeat `delivered`, compared after
    whitespace normalisation (leading whitespace ignored, any run of whitespace equal to any
    other); NEED_MORE while `text` is a prefix of it so far (or its whitespace may go on);
    MISMATCH once it differs. `final`: `text` is all there will be."""
    i = j = 0
    n, m = len(delivered), len(text)
    while i < n and delivered[i].isspace():
        i += 1
    while j < m and text[j].isspace():
        j += 1
    if i == n:
        return j if (j < m or final) else NEED_MORE
    if j == m:
        return MISMATCH if final else NEED_MORE
    while i < n:
        if delivered[i].isspace():
            while i < n and delivered[i].isspace():
                i += 1
            if j == m:
                return j if (final and i == n) else (MISMATCH if final else NEED_MORE)
            if not text[j].isspace():
                return MISMATCH
            while j < m and text[j].isspace():
                j += 1
            if j == m and not final:
                return NEED_MORE  # the whitespace run may go on in the next chunk
            continue
        if j == m:
            return MISMATCH if final else NEED_MORE
        if text[j] != delivered[i]:
            return MISMATCH
        i += 1
        j += 1
    return j


class Mismatched(Exception):
    """The regenerated answer does not start with what the client already has."""


@dataclasses.dataclass(slots=True)
class _Attempt:
    """One session's events, filtered for the client in its mode."""

    mode: Mode
    delivered: str  # the answer text the client had when this attempt started
    buffer: str = ""  # text held back until it is known to repeat `delivered` or not
    resolved: bool = False
    chars: int = 0  # text this attempt produced (for an estimate)
    usage: Usage | None = None

    def __post_init__(self) -> None:
        self.resolved = self.mode in (Mode.FIRST, Mode.RESTART)

    def feed(self, ev: StreamEvent) -> StreamEvent | None:
        """The event to forward (None: nothing to forward); raises Mismatched."""
        self.chars += len(ev.content or "") + len(ev.reasoning or "")
        if ev.usage is not None:
            self.usage = ev.usage
        if self.mode in (Mode.FIRST, Mode.RESTART):
            return ev
        content = ev.content
        if not self.resolved:
            self.buffer += ev.content or ""
            final = ev.finish_reason is not None or bool(ev.tool_calls)
            got = match_delivered(self.delivered, self.buffer, final=final)
            if got == NEED_MORE:
                content = None
            elif got == MISMATCH and self.mode is Mode.REGENERATE:
                raise Mismatched
            else:
                self.resolved = True
                content = self.buffer if got == MISMATCH else self.buffer[got:]
                self.buffer = ""
            if not final and content is None:
                return None
        out = dataclasses.replace(ev, content=content or None, reasoning=None)
        if out.content is None and not out.tool_calls and out.finish_reason is None:
            return None
        return out


class ContinuedStream:
    """What a surface iterates: the first session's events, continued after a break."""

    def __init__(self, session: StreamSession) -> None:
        self.session = session
        self._first = session  # its context is the request's, its plan the whole plan
        self.delivered = ""
        self.tool_started = False
        self.continuations = 0
        self._tried: set[tuple[str, str]] = set()
        self._record: AttemptRecord | None = None  # the current attempt's, once known
        self._spent: list[Usage] = []  # the usage of every attempt before the current one
        self._task: asyncio.Task[object] | None = None
        self._interrupted: str | None = None
        self._opening = False

    @property
    def executor(self) -> Executor:
        return self._first.executor

    @property
    def ctx(self) -> RequestContext:
        return self._first.ctx

    def interrupt(self, reason: str) -> None:
        """The shutdown grace ran out: end at once with an in-band error."""
        if self._interrupted is not None:
            return
        self._interrupted = reason
        if self._opening and self._task is not None:
            self._task.cancel()
        else:
            self.session.interrupt(reason)

    async def aclose(self) -> None:
        await self.session.aclose()

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Yield the one stream; raise the break's BackendError when it cannot go on."""
        self._task = asyncio.current_task()
        attempt = _Attempt(Mode.FIRST, "")
        broken: BackendError | None = None  # the first break: what a mismatch shows
        while True:
            events = self.session.events()
            try:
                async for ev in events:
                    out = attempt.feed(ev)
                    if out is None:
                        continue
                    if out.finish_reason is not None and self._spent:
                        out = dataclasses.replace(out, usage=self._summed(attempt))
                    self.delivered += out.content or ""
                    self.tool_started = self.tool_started or bool(out.tool_calls)
                    yield out
                    if out.finish_reason is not None:
                        self._count(attempt.mode)
                return  # the session ends after its finish (and closes its upstream)
            except Mismatched:
                await events.aclose()  # type: ignore[attr-defined]
                self._outcome(ContinuationOutcome.MISMATCH)
                assert broken is not None  # a mismatch needs a continuation
                raise broken from None
            except BackendError as exc:
                if attempt.mode is not Mode.FIRST:
                    self._outcome(ContinuationOutcome.BROKEN, record=exc.code or "error")
                broken = broken or exc
                mode = await self._continue(exc, attempt)
                if mode is None:
                    raise  # the break that ended it (a continuing stream's own, if it broke)
                attempt = _Attempt(mode, self.delivered)

    # -- continuing ----------------------------------------------------------------------

    async def _continue(self, exc: BackendError, attempt: _Attempt) -> Mode | None:
        """Open the next session (self.session) after a break; None: the stream ends."""
        ex, ctx = self.executor, self.ctx
        if (exc.code in NOT_CONTINUED or not exc.retryable or self.tool_started
                or self._interrupted is not None
                or self.continuations >= ex.policy.stream.max_continuations
                or ex._remaining(ctx) <= 0):
            return None
        if attempt.mode is Mode.FIRST:
            self._record = _record_of(self.session)
            self._tried.add((self.session.candidate.backend, self.session.candidate.model_id))
        cands = self._remaining()
        if not cands:
            return None
        self.continuations += 1
        if self._record is not None and self._record.outcome == "ok":
            self._record.outcome = exc.code or "error"
        self._spent.append(self._usage_of(attempt, prefilled=attempt.mode is Mode.PREFILL))
        broken_backend = self.session.candidate.backend
        self._opening = True
        try:
            for cand in cands:
                self._tried.add((cand.backend, cand.model_id))
                mode = await self._open(cand)
                if mode is not None:
                    log.warning("continuing a broken stream from %s on %s (req %s, %s)",
                                broken_backend, cand.backend, ctx.request_id, mode.value)
                    return mode
        except asyncio.CancelledError:
            if self._interrupted is None or self._task is None:
                raise
            self._task.uncancel()
            raise BackendStreamError(self._interrupted, backend=broken_backend,
                                     code="stream_interrupted") from None
        finally:
            self._opening = False
        if ex.hooks.on_continuation:
            ex.hooks.on_continuation(broken_backend, ContinuationOutcome.UNAVAILABLE)
        return None

    def _remaining(self) -> list[Candidate]:
        """The plan's candidates after the broken one, not tried yet; local ones only for a
        private request."""
        plan = self.ctx.plan
        cands = list(plan.candidates) if plan is not None else []
        current = self.session.candidate
        if current in cands:
            cands = cands[cands.index(current) + 1:]
        out = [c for c in cands if (c.backend, c.model_id) not in self._tried]
        if self.ctx.facts.privacy == "private":
            out = [c for c in out if self.executor._is_local(c.backend, c.model_id)]
        return out

    async def _open(self, cand: Candidate) -> Mode | None:
        ex = self.executor
        if not self.delivered:
            mode = Mode.RESTART
        else:
            cfg = ex.policy.backends.get(cand.backend)
            prefill = (cfg is not None and cfg.supports_prefill
                       and cand.backend not in _REFUSED_PREFILL.get(ex, ()))
            mode = Mode.PREFILL if prefill else Mode.REGENERATE
        whole = self.ctx.plan
        plan = Plan(route=whole.route if whole else "", privacy=self.ctx.facts.privacy,
                    needed_tokens=whole.needed_tokens if whole else 0,
                    candidates=[cand], excluded=[])
        request = (prefilled(self.ctx.request, self.delivered) if mode is Mode.PREFILL
                   else self.ctx.request)
        try:
            session = await ex.open_stream(dataclasses.replace(self.ctx, request=request), plan)
        except BackendRejected as exc:
            if mode is not Mode.PREFILL or exc.status not in (400, None):
                return None
            # A 400 to the prefill: the target does not continue; regenerate there instead.
            record = _last_record(self.ctx, cand.backend)
            if record is not None:
                record.outcome = "prefill_unsupported"
            _REFUSED_PREFILL.setdefault(ex, set()).add(cand.backend)
            log.warning("%s refused a prefill (400): regenerating there, and from now on",
                        cand.backend)
            mode = Mode.REGENERATE
            try:
                session = await ex.open_stream(dataclasses.replace(self.ctx), plan)
            except RouterError:
                return None
        except RouterError:
            return None
        self.session = session
        self._record = _record_of(session)
        self.ctx.served_by = session.candidate.backend
        return mode

    # -- counting ------------------------------------------------------------------------

    def _count(self, mode: Mode) -> None:
        outcome = {Mode.PREFILL: ContinuationOutcome.PREFILL,
                   Mode.REGENERATE: ContinuationOutcome.REGENERATED,
                   Mode.RESTART: ContinuationOutcome.RESTARTED}.get(mode)
        if outcome is not None:
            self._outcome(outcome)

    def _outcome(self, outcome: ContinuationOutcome, record: str | None = None) -> None:
        if self._record is not None:
            self._record.outcome = record or f"continuation_{outcome.value}"
        hook = self.executor.hooks.on_continuation
        if hook:
            hook(self.session.candidate.backend, outcome)

    def _usage_of(self, attempt: _Attempt, prefilled: bool) -> Usage:
        if attempt.usage is not None and (attempt.usage.prompt_tokens
                                          or attempt.usage.completion_tokens):
            return attempt.usage
        prompt = self.ctx.facts.prompt_tokens
        if prefilled:
            prompt += -(-len(attempt.delivered) // CHARS_PER_TOKEN)
        return Usage(prompt, -(-attempt.chars // CHARS_PER_TOKEN), estimated=True)

    def _summed(self, attempt: _Attempt) -> Usage:
        parts = [*self._spent, self._usage_of(attempt, prefilled=attempt.mode is Mode.PREFILL)]
        reasoning = [u.reasoning_tokens for u in parts if u.reasoning_tokens is not None]
        return Usage(sum(u.prompt_tokens for u in parts),
                     sum(u.completion_tokens for u in parts),
                     reasoning_tokens=sum(reasoning) if reasoning else None,
                     estimated=any(u.estimated for u in parts))


def prefilled(request: ChatRequest, delivered: str) -> ChatRequest:
    """The request with the delivered text as a trailing assistant message (appended to the
    client's own trailing assistant message, if it sent one)."""
    messages = list(request.messages)
    last = messages[-1]
    if last.role == "assistant" and not last.tool_calls:
        messages[-1] = last.model_copy(update={"content": (last.content or "") + delivered})
    else:
        messages.append(Message(role="assistant", content=delivered))
    return request.model_copy(update={"messages": messages})


def _record_of(session: StreamSession) -> AttemptRecord | None:
    return _last_record(session.ctx, session.candidate.backend)


def _last_record(ctx: RequestContext, backend: str) -> AttemptRecord | None:
    return next((a for a in reversed(ctx.attempts) if a.backend == backend), None)
