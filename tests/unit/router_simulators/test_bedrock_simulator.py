"""Wire-level checks of the Bedrock simulator: raw HTTP, botocore's frame parser, and boto3."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, cast

import pytest
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer, EventStreamMessage

from router.backends.aws_common import make_client
from router_simulators.bedrock import STATE, BedrockSimConfig, SimState, create_app
from router_simulators.server import SimServer

MODEL = "openai.gpt-oss-20b-1:0"
ENCODED = "openai.gpt-oss-20b-1%3A0"
USER = {"messages": [{"role": "user", "content": [{"text": "Hello there"}]}]}


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimServer]:
    server = SimServer(lambda: create_app(BedrockSimConfig())).start()
    yield server
    server.stop()


@pytest.fixture
def sim(shared_sim: SimServer) -> SimServer:
    state(shared_sim).faults.clear()
    state(shared_sim).stats.reset()
    return shared_sim


def state(sim: SimServer) -> SimState:
    return sim.app[STATE]


def post(sim: SimServer, path: str, body: Any, method: str = "POST") -> tuple[int, dict[str, str],
                                                                              bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(sim.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def frames(raw: bytes) -> list[EventStreamMessage]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return list(buffer)


def hdr(message: EventStreamMessage) -> dict[str, Any]:
    return cast(dict[str, Any], message.headers)  # the stubs type it oddly


def fault(sim: SimServer, **fields: Any) -> None:
    status, _, body = post(sim, "/_sim/faults", {"faults": [fields]})
    assert status == 200, body


def test_url_encoded_model_id_is_decoded(sim: SimServer) -> None:
    status, headers, body = post(sim, f"/model/{ENCODED}/converse", USER)
    assert status == 200
    assert state(sim).last_model == MODEL
    assert headers["x-amzn-RequestId"]
    answer = json.loads(body)
    assert answer["stopReason"] == "end_turn"
    kinds = [next(iter(b)) for b in answer["output"]["message"]["content"]]
    assert kinds == ["reasoningContent", "text"]
    assert answer["usage"]["totalTokens"] == (answer["usage"]["inputTokens"]
                                              + answer["usage"]["outputTokens"])


def test_unknown_model_is_a_404_with_the_error_type_header(sim: SimServer) -> None:
    status, headers, body = post(sim, "/model/openai.gpt-oss-7b-1%3A0/converse", USER)
    assert status == 404
    assert headers["x-amzn-ErrorType"].startswith("ResourceNotFoundException:http://")
    assert "message" in json.loads(body)


def test_converse_stream_frames_decode_with_botocore(sim: SimServer) -> None:
    status, headers, raw = post(sim, f"/model/{ENCODED}/converse-stream", USER)
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.amazon.eventstream"
    assert headers.get("Transfer-Encoding") == "chunked"
    messages = frames(raw)  # validates prelude and message CRCs
    types = [hdr(m)[":event-type"] for m in messages]
    assert types[0] == "messageStart" and types[-2:] == ["messageStop", "metadata"]
    assert all(hdr(m)[":message-type"] == "event" for m in messages)
    deltas = [json.loads(m.payload)["delta"] for m in messages
              if hdr(m)[":event-type"] == "contentBlockDelta"]
    assert len(deltas) == 6 + 12  # one frame per token
    assert json.loads(messages[-2].payload) == {"stopReason": "end_turn"}


def test_bad_crc_frame_raises_checksum_mismatch(sim: SimServer) -> None:
    fault(sim, kind="malformed", after_tokens=1)
    _, _, raw = post(sim, f"/model/{ENCODED}/converse-stream", USER)
    with pytest.raises(ChecksumMismatch):
        frames(raw)


@pytest.mark.parametrize(("status", "name"), [(429, "throttlingException"),
                                              (500, "modelStreamErrorException"),
                                              (503, "serviceUnavailableException")])
def test_midstream_error_is_an_exception_frame(sim: SimServer, status: int, name: str) -> None:
    fault(sim, kind="midstream_error", after_tokens=2, status=status)
    _, _, raw = post(sim, f"/model/{ENCODED}/converse-stream", USER)
    last = frames(raw)[-1]
    assert hdr(last)[":message-type"] == "exception"
    assert hdr(last)[":exception-type"] == name
    assert "message" in json.loads(last.payload)
    assert len([m for m in frames(raw) if hdr(m).get(":event-type") == "contentBlockDelta"]) == 2


@pytest.mark.parametrize(("fields", "code"), [
    ({"status": 429, "retry_after": 3}, "ThrottlingException"),
    ({"status": 500}, "InternalServerException"),
    ({"status": 503}, "ServiceUnavailableException"),
    ({"status": 400}, "ValidationException"),
    ({"status": 403}, "AccessDeniedException"),
    ({"status": 429, "error_type": "ModelNotReadyException"}, "ModelNotReadyException"),
    ({"status": 424, "original_status": 429}, "ModelErrorException"),
])
def test_status_faults_use_aws_error_headers(sim: SimServer, fields: dict[str, Any],
                                             code: str) -> None:
    fault(sim, kind="status", **fields)
    status, headers, body = post(sim, f"/model/{ENCODED}/converse-stream", USER)
    assert status == fields["status"]
    assert headers["x-amzn-ErrorType"] == code + ":http://internal.amazon.com/coral/com.amazon.bedrock/"
    parsed = json.loads(body)
    assert parsed["message"]
    if "retry_after" in fields:
        assert headers["Retry-After"] == "3"
    if code == "ModelErrorException":
        assert parsed["originalStatusCode"] == 429


def test_boto3_sees_modelled_errors_and_request_ids(sim: SimServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    client = make_client("bedrock-runtime", region="us-west-2", endpoint_url=sim.url,
                         profile=None, connect_timeout_s=2, read_timeout_s=5)
    answer = client.converse(modelId=MODEL, **USER)
    assert answer["ResponseMetadata"]["RequestId"]
    fault(sim, kind="status", status=424, original_status=503, times=-1)
    with pytest.raises(client.exceptions.ModelErrorException) as info:
        client.converse(modelId=MODEL, **USER)
    assert info.value.response["originalStatusCode"] == 503
    state(sim).faults.clear()

    streamed = client.invoke_model_with_response_stream(
        modelId=MODEL, body=json.dumps({"messages": [{"role": "user", "content": "Hi"}]}))
    assert streamed["contentType"] == "application/json"
    chunks = [json.loads(e["chunk"]["bytes"]) for e in streamed["body"]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.startswith("<reasoning>Thinking 1") and "</reasoning>" in text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 18
    client.close()


def test_invoke_returns_chat_completion_with_reasoning_tags(sim: SimServer) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "reasoning_effort": "low",
            "max_completion_tokens": 50}
    status, _, raw = post(sim, f"/model/{ENCODED}/invoke", body)
    assert status == 200
    answer = json.loads(raw)
    assert answer["object"] == "chat.completion"
    content = answer["choices"][0]["message"]["content"]
    assert content.startswith("<reasoning>Thinking 1 step 2 step 3.</reasoning>")
    assert answer["choices"][0]["finish_reason"] == "stop"


def test_invoke_stream_chunks_are_base64_json(sim: SimServer) -> None:
    body = {"messages": [{"role": "user", "content": "Weather in Rome?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object", "properties": {"city": {"type": "string"}}}}}]}
    _, _, raw = post(sim, f"/model/{ENCODED}/invoke-with-response-stream", body)
    chunks = [json.loads(base64.b64decode(json.loads(m.payload)["bytes"])) for m in frames(raw)]
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks
             if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Rome"}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_invoke_stream_reasoning_field_mode() -> None:
    with SimServer(lambda: create_app(BedrockSimConfig(invoke_reasoning="field"))) as server:
        body = {"messages": [{"role": "user", "content": "Hi"}]}
        _, _, raw = post(server, f"/model/{ENCODED}/invoke-with-response-stream", body)
    deltas = [json.loads(base64.b64decode(json.loads(m.payload)["bytes"]))["choices"][0]["delta"]
              for m in frames(raw)]
    assert "".join(d.get("reasoning", "") for d in deltas).startswith("Thinking 1 step 2")
    assert "<reasoning>" not in "".join(d.get("content", "") for d in deltas)


def test_context_exceeded_in_a_stream_is_a_stop_reason(sim: SimServer) -> None:
    fault(sim, kind="context_exceeded")
    _, _, raw = post(sim, f"/model/{ENCODED}/converse-stream", USER)
    messages = frames(raw)
    assert [hdr(m)[":event-type"] for m in messages] == ["messageStart", "messageStop",
                                                             "metadata"]
    assert json.loads(messages[1].payload)["stopReason"] == "model_context_window_exceeded"
    fault(sim, kind="context_exceeded")
    status, headers, _ = post(sim, f"/model/{ENCODED}/converse", USER)
    assert status == 400 and headers["x-amzn-ErrorType"].startswith("ValidationException:")


def test_no_terminator_omits_message_stop_and_metadata(sim: SimServer) -> None:
    fault(sim, kind="no_terminator")
    _, _, raw = post(sim, f"/model/{ENCODED}/converse-stream", USER)
    types = {hdr(m)[":event-type"] for m in frames(raw)}
    assert "messageStop" not in types and "metadata" not in types


SIGNED = {"role": "assistant", "content": [
    {"reasoningContent": {"reasoningText": {"text": "hm", "signature": "abc"}}}, {"text": "ok"}]}


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": [{"text": "a"}]}, SIGNED, {"role": "user", "content": [
        {"text": "b"}]}],
    [{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}],
    [{"role": "user", "content": [{"text": "a"}]}, {"role": "assistant", "content": []},
     {"role": "user", "content": [{"text": "b"}]}],
    [{"role": "assistant", "content": [{"text": "a"}]}],
    [{"role": "user", "content": [{"toolResult": {"toolUseId": "x", "content": [{"text": "1"}]}}]}],
], ids=["signature", "no-alternation", "empty-content", "assistant-first", "tool-without-config"])
def test_converse_rejects_what_bedrock_rejects(sim: SimServer, messages: list[Any]) -> None:
    status, headers, _ = post(sim, f"/model/{ENCODED}/converse", {"messages": messages})
    assert status == 400
    assert headers["x-amzn-ErrorType"].startswith("ValidationException:")


def test_control_endpoints(sim: SimServer) -> None:
    post(sim, f"/model/{ENCODED}/converse", USER)
    status, _, raw = post(sim, "/_sim/stats", None, method="GET")
    stats = json.loads(raw)
    assert status == 200 and stats["requests"] == 1 and stats["completed"] == 1
    assert stats["by_model"] == {MODEL: 1}
    status, _, raw = post(sim, "/_sim/faults", {"faults": [{"kind": "explode"}]})
    assert status == 400
    fault(sim, kind="status", status=500, times=-1)
    assert post(sim, f"/model/{ENCODED}/converse", USER)[0] == 500
    assert post(sim, "/_sim/faults", None, method="DELETE")[0] == 200
    assert post(sim, f"/model/{ENCODED}/converse", USER)[0] == 200
    assert post(sim, "/_sim/reset", None)[0] == 200
    assert json.loads(post(sim, "/_sim/stats", None, method="GET")[2])["requests"] == 0
