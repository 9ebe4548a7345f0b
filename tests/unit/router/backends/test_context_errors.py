"""Context-window refusals per backend: every text-table entry has an example that it matches
(and a test fails when an entry is added without one), structured fields win first, and
unrelated errors keep their own mapping (a ValidationException stays a 400 validation error)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from botocore import exceptions as bexc

from router.backends import bedrock_errors, ollama_errors, openai_errors
from router.backends.bedrock_errors import _Attempt
from router.backends.bedrock_errors import map_error as bedrock_map
from router.backends.context_errors import ContextPattern
from router.backends.openai_stream import ChunkAssembler
from router.backends.sagemaker import map_error as sagemaker_map
from router.errors import BackendContextExceeded, BackendRejected, BackendStreamError
from tests.unit.router.backends.test_ollama_backend import _serve, call, collect, make_backend

# meaning -> (an example message, the window it names or None)
OLLAMA_EXAMPLES = {
    "runner: prompt over num_ctx with truncate false":
        ("the input length exceeds the context length", None),
    "llama-server runner: prompt over num_ctx, no context shift":
        ("the prompt is longer than the context length currently available to the model; "
         "shorten the prompt, adjust the context length in settings, or use a model with a "
         "longer context length", None),
    "llama-server: prompt over n_ctx":
        ("request (9000 tokens) exceeds the available context size (8192 tokens)", 8192),
    "mlx runner: prompt over the model's context length":
        ("input length (9000 tokens) exceeds the model's maximum context length (8192 tokens)",
         8192),
}
BEDROCK_EXAMPLES = {
    "bedrock: input is too long for requested model":
        ("Input is too long for requested model.", None),
    "model: prompt is too long":
        ("The model returned the following errors: prompt is too long: 200049 tokens > 200000 "
         "maximum", 200000),
    "model: maximum context length":
        ("The model returned the following errors: This model's maximum context length is "
         "131072 tokens. However, you requested 140000 tokens", 131072),
}
OPENAI_EXAMPLES = {
    "vllm: maximum context length":
        ("'max_tokens' or 'max_completion_tokens' is too large: 8192. This model's maximum "
         "context length is 8192 tokens and your request has 1210 input tokens", 8192),
    "vllm: prompt longer than max_model_len":
        ("The decoder prompt (length 12324) is longer than the maximum model length of 8192.",
         8192),
    "tgi: inputs + max_new_tokens over the limit":
        ("Input validation error: `inputs` tokens + `max_new_tokens` must be <= 32768. Given: "
         "33000 `inputs` tokens and 100 `max_new_tokens`", 32768),
}
UNRELATED = [
    "1 validation error detected: Value at 'messages' failed to satisfy constraint",
    "The provided model identifier is invalid.",
    "A conversation must alternate between user and assistant roles.",
    "max_tokens must be at least 1, got 0.",
]
TABLES: list[tuple[str, tuple[ContextPattern, ...], dict[str, tuple[str, int | None]]]] = [
    ("ollama", ollama_errors.CONTEXT_PATTERNS, OLLAMA_EXAMPLES),
    ("bedrock", bedrock_errors.CONTEXT_PATTERNS, BEDROCK_EXAMPLES),
    ("openai", openai_errors.CONTEXT_PATTERNS, OPENAI_EXAMPLES),
]
ENTRIES = [pytest.param(table, entry, examples[entry.meaning], id=f"{name}:{entry.meaning}")
           for name, table, examples in TABLES for entry in table]


@pytest.mark.parametrize(("name", "table", "examples"), TABLES, ids=[t[0] for t in TABLES])
def test_every_entry_has_an_example(name: str, table: tuple[ContextPattern, ...],
                                    examples: dict[str, Any]) -> None:
    assert [e.meaning for e in table] == list(examples)


@pytest.mark.parametrize(("table", "entry", "example"), ENTRIES)
def test_each_entry_matches_its_example_first(table: tuple[ContextPattern, ...],
                                              entry: ContextPattern,
                                              example: tuple[str, int | None]) -> None:
    from router.backends.context_errors import match_context

    text, window = example
    got = match_context(table, text)
    assert got is not None and got.meaning == entry.meaning and got.window == window


@pytest.mark.parametrize("text", UNRELATED)
def test_unrelated_texts_match_no_table(text: str) -> None:
    assert ollama_errors.context_refusal(text) is None
    assert openai_errors.context_refusal(openai_errors.ErrorObject(message=text)) is None
    assert bedrock_map(_validation(text), _Attempt("bedrock", 10, 128_000)).__class__ \
        is BackendRejected


# -- Ollama ---------------------------------------------------------------------------------
def test_ollama_llama_server_json_is_read_by_type() -> None:
    body = orjson.dumps({"error": {"code": 400, "message": "whatever the words",
                                   "type": "exceed_context_size_error",
                                   "n_prompt_tokens": 9000, "n_ctx": 4096}}).decode()
    got = ollama_errors.context_refusal(body)
    assert got is not None and got.window == 4096
    other = orjson.dumps({"error": {"code": 400, "message": "bad grammar",
                                    "type": "invalid_request_error"}}).decode()
    assert ollama_errors.context_refusal(other) is None


@pytest.mark.parametrize(("status", "error", "exc"), [
    (400, "the input length exceeds the context length", BackendContextExceeded),
    (400, orjson.dumps({"error": {"type": "exceed_context_size_error", "n_ctx": 2048,
                                  "message": "x"}}).decode(), BackendContextExceeded),
    (500, "input length (9 tokens) exceeds the model's maximum context length (8 tokens)",
     BackendContextExceeded),
    (400, "invalid format", BackendRejected),
])
async def test_ollama_refusal_over_http(status: int, error: str,
                                        exc: type[Exception]) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(orjson.loads(await request.read()))
        return web.json_response({"error": error}, status=status)

    runner, url = await _serve(handler)
    b = make_backend(url)
    try:
        for stream in (False, True):
            with pytest.raises(exc) as info:
                if stream:
                    await collect(b, call())
                else:
                    await b.chat(call())
            assert type(info.value) is exc and info.value.retryable is False
    finally:
        await b.aclose()
        await runner.cleanup()
    assert all(body["truncate"] is False for body in seen)


# -- Bedrock --------------------------------------------------------------------------------
def _validation(message: str, code: str = "ValidationException") -> bexc.ClientError:
    return bexc.ClientError({"Error": {"Code": code, "Message": message},
                             "ResponseMetadata": {"HTTPStatusCode": 400}}, "Converse")


@pytest.mark.parametrize("code", ["ValidationException", "validationException"])
def test_bedrock_text_is_context_exceeded_for_a_small_request(code: str) -> None:
    err = bedrock_map(_validation("Input is too long for requested model.", code),
                      _Attempt("bedrock", 10, 128_000))
    assert isinstance(err, BackendContextExceeded) and err.backend == "bedrock"
    err = bedrock_map(_validation(BEDROCK_EXAMPLES["model: prompt is too long"][0]),
                      _Attempt("bedrock", 10, 128_000))
    assert isinstance(err, BackendContextExceeded) and "window 200000" in err.message


def test_bedrock_text_matters_only_on_a_validation_exception() -> None:
    err = bedrock_map(_validation("Input is too long for requested model.",
                                  "AccessDeniedException"), _Attempt("bedrock", 10, 128_000))
    assert not isinstance(err, BackendContextExceeded)


# -- SageMaker / OpenAI-style ---------------------------------------------------------------
def _model_error(container: dict[str, Any], orig: int = 400) -> bexc.ClientError:
    return bexc.ClientError({"Error": {"Code": "ModelError", "Message": "container said no"},
                             "OriginalStatusCode": orig,
                             "OriginalMessage": orjson.dumps(container).decode(),
                             "ResponseMetadata": {"HTTPStatusCode": 424}}, "InvokeEndpoint")


@pytest.mark.parametrize(("container", "window"), [
    ({"error": {"code": "context_length_exceeded", "message": "too long"}}, None),
    ({"error": {"type": "exceed_context_size_error", "n_ctx": 4096, "code": 400,
                "message": "the request exceeds the available context size"}}, 4096),
    ({"error": {"type": "BadRequestError", "code": 400,
                "message": OPENAI_EXAMPLES["vllm: maximum context length"][0]}}, 8192),
    ({"message": OPENAI_EXAMPLES["tgi: inputs + max_new_tokens over the limit"][0]}, 32768),
])
def test_sagemaker_container_refusals(container: dict[str, Any], window: int | None) -> None:
    err = sagemaker_map(_model_error(container), "sagemaker")
    assert isinstance(err, BackendContextExceeded) and err.backend == "sagemaker"
    assert (f"window {window} tokens" in err.message) is (window is not None)


@pytest.mark.parametrize(("container", "orig"), [
    ({"error": {"type": "BadRequestError", "code": 400, "message": "bad tool schema"}}, 400),
    ({"error": {"type": "InternalServerError", "code": 500,
                "message": "This model's maximum context length is 8192 tokens"}}, 500),
])
def test_sagemaker_other_container_errors_keep_their_mapping(container: dict[str, Any],
                                                             orig: int) -> None:
    err = sagemaker_map(_model_error(container, orig), "sagemaker")
    assert not isinstance(err, BackendContextExceeded)


def test_sagemaker_validation_error_stays_rejected() -> None:
    exc = bexc.ClientError({"Error": {"Code": "ValidationError",
                                      "Message": "Input is too long for requested model."},
                            "ResponseMetadata": {"HTTPStatusCode": 400}}, "InvokeEndpoint")
    assert type(sagemaker_map(exc, "sagemaker")) is BackendRejected


def test_in_band_refusal_before_output_is_context_exceeded_after_it_a_stream_error() -> None:
    error = {"error": {"code": "context_length_exceeded", "message": "too long"}}
    with pytest.raises(BackendContextExceeded):
        ChunkAssembler("s").chunk(error)
    asm = ChunkAssembler("s")
    asm.chunk({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})
    with pytest.raises(BackendStreamError) as info:
        asm.chunk(error)
    assert type(info.value) is BackendStreamError
