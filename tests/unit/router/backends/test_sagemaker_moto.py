"""SageMakerBackend against moto: readiness from `DescribeEndpoint`, answers from moto's queue.

moto 5.2: the control plane works (`InService` at once; `ml.g4dn.xlarge` is in its
instance list, `ml.g6e.*` is not); `invoke_endpoint` answers from a FIFO set through
`POST /moto-api/static/sagemaker/endpoint-results`; streaming is not implemented there (the
simulator covers it).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from router.backends.base import BackendCall
from router.backends.configs import SageMakerConfig, Timeouts
from router.backends.sagemaker import SageMakerBackend
from router.types import ChatRequest
from router_simulators.sagemaker import SageMakerSimConfig, create_app
from router_simulators.server import SimServer, free_port

REGION = "us-west-2"
ACCOUNT = "123456789012"
ENDPOINT = "gpt-oss-20b-endpoint"


@pytest.fixture(scope="module", autouse=True)
def _dummy_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    none = str(tmp_path_factory.mktemp("aws") / "none")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none,
                     "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(k, v)
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
            mp.delenv(var, raising=False)
        yield


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def create_endpoint(endpoint_url: str | None, name: str = ENDPOINT) -> Any:
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=endpoint_url)
    sm.create_model(
        ModelName=f"{name}-model", ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
        PrimaryContainer={"Image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/vllm:latest"})
    sm.create_endpoint_config(EndpointConfigName=f"{name}-config", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": f"{name}-model",
        "InitialInstanceCount": 1, "InstanceType": "ml.g4dn.xlarge"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    return sm


def make_backend(endpoint_url: str | None, name: str = ENDPOINT,
                 control_endpoint_url: str | None = None) -> SageMakerBackend:
    cfg = SageMakerConfig(models={"gpt-oss-20b": "openai/gpt-oss-20b"}, endpoint_name=name,
                          region=REGION, endpoint_url=endpoint_url,
                          timeouts=Timeouts(connect_s=1, read_s=5))
    return SageMakerBackend("sm", cfg, control_endpoint_url=control_endpoint_url)


def call_for(text: str) -> BackendCall:
    req = ChatRequest(model="gpt-oss-20b", messages=[{"role": "user", "content": text}])
    return BackendCall(request=req, model_id="openai/gpt-oss-20b", logical_model="gpt-oss-20b")


def queue_results(moto_url: str, bodies: list[dict[str, Any]]) -> None:
    data = {"account_id": ACCOUNT, "region": REGION, "results": [
        {"Body": json.dumps(b), "ContentType": "application/json",
         "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""} for b in bodies]}
    req = urllib.request.Request(f"{moto_url}/moto-api/static/sagemaker/endpoint-results",
                                 data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 201


async def test_probe_reads_describe_endpoint_in_mock_mode() -> None:
    with mock_aws():
        sm = create_endpoint(None)
        backend = make_backend(None)
        try:
            result = await backend.probe()
            assert result.ok and result.detail == "EndpointStatus=InService"
            sm.delete_endpoint(EndpointName=ENDPOINT)
            gone = await backend.probe()
            assert not gone.ok and "ValidationException" in gone.detail
        finally:
            await backend.aclose()


async def test_probe_uses_the_separate_control_endpoint(moto_url: str) -> None:
    """Runtime on the simulator, control plane on moto (`control_endpoint_url`)."""
    create_endpoint(moto_url, name="ctl-endpoint")
    sim = SimServer(lambda: create_app(SageMakerSimConfig(endpoints=("other",)))).start()
    backend = make_backend(sim.url, name="ctl-endpoint", control_endpoint_url=moto_url)
    try:
        assert (await backend.probe()).ok  # the simulator does not know this endpoint: moto does
    finally:
        await backend.aclose()
        sim.stop()


async def test_invoke_endpoint_answers_from_moto_queue(moto_url: str) -> None:
    create_endpoint(moto_url, name="queue-endpoint")
    queue_results(moto_url, [
        {"id": "chatcmpl-1", "object": "chat.completion", "model": "openai/gpt-oss-20b",
         "choices": [{"index": 0, "finish_reason": "stop", "message": {
             "role": "assistant", "content": "Bonjour – ça va?",
             "reasoning_content": "User greets in French."}}],
         "usage": {"prompt_tokens": 11, "completion_tokens": 9,
                   "completion_tokens_details": {"reasoning_tokens": 4}}},
        {"id": "chatcmpl-2", "object": "chat.completion", "model": "openai/gpt-oss-20b",
         "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
             "role": "assistant", "content": None, "tool_calls": [
                 {"type": "function", "function": {"name": "lookup",
                                                   "arguments": {"q": "Paris"}}}]}}],
         "usage": {"prompt_tokens": 20, "completion_tokens": 7}},
    ])
    backend = make_backend(moto_url, name="queue-endpoint")
    try:
        first = await backend.chat(call_for("salut"))
        assert first.content == "Bonjour – ça va?" and first.reasoning == "User greets in French."
        assert first.finish_reason == "stop"
        assert (first.usage.prompt_tokens, first.usage.completion_tokens,
                first.usage.reasoning_tokens) == (11, 9, 4)
        second = await backend.chat(call_for("look up Paris"))
        (tc,) = second.tool_calls
        assert second.finish_reason == "tool_calls" and second.content is None
        assert tc.function.name == "lookup" and json.loads(tc.function.arguments) == {"q": "Paris"}
        assert isinstance(tc.function.arguments, str) and tc.id.startswith("call_")
        assert second.usage.reasoning_tokens is None
    finally:
        await backend.aclose()
