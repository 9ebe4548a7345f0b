"""Per-type prefill defaults, the config override, and each request builder sending a trailing
assistant message (the delivered text of a continued stream) through unchanged."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.backends.base import BackendCall
from router.backends.bedrock_converse import converse_request
from router.backends.configs import (
    BackendConfigBase,
    BedrockConfig,
    OllamaConfig,
    SageMakerConfig,
)
from router.backends.ollama_wire import build_payload
from router.backends.sagemaker import build_body
from router.types import ChatRequest

MODELS = {"gpt-oss-20b": "x"}
DELIVERED = "The answer so far, mid-sentence and ending in a space "


def _configs(**kw: Any) -> list[BackendConfigBase]:
    return [OllamaConfig(models=MODELS, **kw), BedrockConfig(models=MODELS, **kw),
            SageMakerConfig(models=MODELS, endpoint_name="e", **kw)]


def test_type_defaults() -> None:
    ollama, bedrock, sagemaker = _configs()
    assert (ollama.prefill_default, bedrock.prefill_default, sagemaker.prefill_default) == (
        True, False, False)
    assert [c.supports_prefill for c in (ollama, bedrock, sagemaker)] == [True, False, False]


@pytest.mark.parametrize("value", [True, False])
def test_the_config_overrides_the_default(value: bool) -> None:
    assert all(c.supports_prefill is value for c in _configs(prefill=value))


def _call() -> BackendCall:
    request = ChatRequest.model_validate({"model": "gpt-oss-20b", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Tell me a story."},
        {"role": "assistant", "content": DELIVERED}]})
    return BackendCall(request, "x", "gpt-oss-20b")


def test_ollama_sends_the_trailing_assistant_message_unchanged() -> None:
    body = orjson.loads(build_payload(_call(), OllamaConfig(models=MODELS), stream=True))
    assert body["messages"][-1] == {"role": "assistant", "content": DELIVERED}


def test_bedrock_sends_the_trailing_assistant_turn_unchanged() -> None:
    kwargs = converse_request(_call().request, "openai.gpt-oss-20b-1:0")
    assert kwargs["messages"][-1] == {"role": "assistant", "content": [{"text": DELIVERED}]}


def test_sagemaker_sends_the_trailing_assistant_message_unchanged() -> None:
    body = build_body(_call(), stream=True)
    assert body["messages"][-1] == {"role": "assistant", "content": DELIVERED}
