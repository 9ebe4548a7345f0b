"""Assistant prefill (continuation) and the vendor texts for refusing it, shared by every simulator.

A request whose last message is role `assistant` is a prefill. `scripted_answer` builds the
script from the conversation *without* that message (so the answer is the one a request without
prefill gets: deterministic from the prompt), then, when the prefill text is a prefix of the
scripted content (compared after whitespace normalisation), answers only the rest: no reasoning,
the remaining content tokens, `completion_tokens` counting only those (the prefill's tokens are
counted as prompt). With the `echo_prefill` fault the prefix is re-sent before the rest (as some
servers do). A prefill that is not a prefix of the script is ignored (the whole answer comes back).

Vendor refusals (fault `reject_prefill`):
- Bedrock Converse: ValidationException "The model that you are using requires the last turn in
  the conversation to be a user message. Add a user message to the conversation and try again."
  (the text Bedrock sends for models without prefill; seen in public bug reports of Converse
  clients).
- Ollama and the vLLM-style SageMaker container accept prefill for real; their refusal text here
  is the simulator's own (`PREFILL_REJECTED_OPENAI`), in each vendor's 400 shape.
"""

from __future__ import annotations

from typing import Any

from router_simulators.script import Script, build_script, count_tokens
from router_simulators.service_time import AnswerLengths

BEDROCK_PREFILL_REJECTED = (
    "The model that you are using requires the last turn in the conversation to be a user "
    "message. Add a user message to the conversation and try again."
)
PREFILL_REJECTED_OPENAI = "the final message must be from the user or a tool, not the assistant"


def is_prefill(messages: list[dict[str, Any]]) -> bool:
    return bool(messages) and isinstance(messages[-1], dict) and (
        messages[-1].get("role") == "assistant")


def _norm(text: str) -> str:
    return " ".join(text.split())


def _rest_after(content: list[str], prefix: str) -> list[str] | None:
    """The content tokens after `prefix`, or None when `prefix` does not start the content."""
    p = _norm(prefix)
    if not _norm("".join(content)).startswith(p):
        return None
    for k in range(len(content) + 1):
        acc = _norm("".join(content[:k]))
        if len(acc) >= len(p):
            rest = content[k:]
            if len(acc) > len(p):  # the prefix ends inside token k-1
                rest = [acc[len(p):]] + rest
            if rest and prefix[-1:].isspace():  # the prefix already ends in the space
                rest = [rest[0].lstrip()] + rest[1:]
            return rest
    return []


def scripted_answer(
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
    effort: str | None = None,
    max_tokens: int | None = None,
    *,
    echo: bool = False,
    lengths: AnswerLengths | None = None,
    model: str = "",
) -> Script:
    """`build_script`, continued after an assistant prefill when there is one; the answer's
    length comes from `lengths` (service_time.py) for `model`, drawn from the prompt without
    the prefill."""
    prefill = is_prefill(messages)
    head = messages[:-1] if prefill else messages
    drawn = lengths.tokens(model, " ".join(str(m.get("content") or "") for m in head)) \
        if lengths is not None else None
    answer_tokens = drawn or 12
    if not prefill:
        return build_script(messages, tools, effort, max_tokens, answer_tokens)
    prefix = str(messages[-1].get("content") or "")
    full = build_script(head, tools, effort, None, answer_tokens)
    rest = _rest_after(full.content, prefix) if prefix.strip() and not full.tool_call else None
    if rest is None:
        return build_script(head, tools, effort, max_tokens, answer_tokens)
    finish = "stop"
    if max_tokens is not None and len(rest) > max_tokens:
        rest, finish = rest[:max_tokens], "length"
    content = ([prefix] + rest) if echo else rest
    prompt_tokens = full.prompt_tokens + count_tokens(prefix) + 4
    return Script([], content, None, prompt_tokens, finish)
