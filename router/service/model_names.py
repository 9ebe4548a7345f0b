"""Every name a client may send for each served logical model: what `/v1/models` lists.

Per logical model, in policy order, first spelling wins (names compare case-insensitively):

- the canonical id (`gpt-oss-20b`) and its Ollama spelling (`gpt-oss:20b`);
- for gpt-oss, OpenAI's own ids: Hugging Face's `openai/gpt-oss-20b` and Bedrock's
  `openai.gpt-oss-20b-1:0`;
- the policy's aliases, each backend's own id for the model (an Ollama tag, a Bedrock id);
- the private aliases (sending one makes the request private; listing it only says it exists).

A name is listed only if the router resolves it back to that model the way chat does (exact
alias, else `normalise_model_name`), so every listed name works in every dialect; a backend id
that resolves elsewhere or nowhere (`gpt-oss:120b-cloud`) is left out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from router.policy.schema import Policy, normalise_model_name

AliasTable = Mapping[str, tuple[str, bool]]


def resolve(aliases: AliasTable, name: str) -> str | None:
    """The logical model `name` means, as admission resolves it; None when unknown."""
    hit = aliases.get(name.lower()) or aliases.get(normalise_model_name(name))
    return hit[0] if hit else None


def _spellings(policy: Policy, logical: str) -> Iterator[str]:
    yield logical
    head, _, size = logical.rpartition("-")
    if head and size:
        yield f"{head}:{size}"
    if logical.lower().startswith("gpt-oss"):
        yield f"openai/{logical}"
        yield f"openai.{logical}-1:0"
    yield from policy.models[logical].aliases
    for cfg in policy.backends.values():
        if logical in cfg.models:
            yield cfg.models[logical]
    for alias, target in policy.privacy.private_aliases.items():
        if target == logical:
            yield alias


def client_model_names(policy: Policy, aliases: AliasTable, served: list[str]) -> dict[str, str]:
    """Each client-sendable name -> its logical model, for the served models in order."""
    names: dict[str, str] = {}
    seen: set[str] = set()
    for logical in served:
        for name in _spellings(policy, logical):
            if name.lower() in seen or resolve(aliases, name) != logical:
                continue
            seen.add(name.lower())
            names[name] = logical
    return names
