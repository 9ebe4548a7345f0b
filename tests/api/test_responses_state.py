"""Stored responses through the real router process: retrieve, delete, input items, 404s,
the dialect's 400s, a broken stream's `response.failed`, and privacy continuity: a private
conversation continued by `previous_response_id` never reaches the cloud, not even while
the local backend is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy, sim_get


@pytest.fixture(scope="module")
def local() -> Iterator[SimServer]:
    """This module's own Ollama simulator: the outage test stops it."""
    with SimServer(lambda: ollama_app(OllamaSimConfig(parallel=4, token_delay_s=0.0))) as s:
        yield s


@pytest.fixture(scope="module")
def router(local: SimServer, bedrock_sim: SimServer, module_tmp: Path
           ) -> Iterator[RouterProcess]:
    audit = module_tmp / "audit.jsonl"
    proc = RouterProcess(base_policy(local.url, bedrock_sim.url), module_tmp,
                         env={"ROUTER_AUDIT_LOG": str(audit)})
    try:
        yield proc
    finally:
        proc.stop()


def post(router: RouterProcess, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(router.url + "/v1/responses", json={"model": "gpt-oss-20b", **body},
                      headers=headers, timeout=30)


def test_store_retrieve_list_delete(router: RouterProcess) -> None:
    r = post(router, {"input": "Hi", "metadata": {"team": "a"}})
    assert r.status_code == 200, r.text
    body = r.json()
    got = httpx.get(f"{router.url}/v1/responses/{body['id']}", timeout=5)
    assert got.status_code == 200 and got.json() == body
    items = httpx.get(f"{router.url}/v1/responses/{body['id']}/input_items", timeout=5).json()
    assert items["object"] == "list" and items["has_more"] is False
    assert items["data"][0]["content"] == [{"type": "input_text", "text": "Hi"}]
    assert items["first_id"] == items["data"][0]["id"]
    gone = httpx.delete(f"{router.url}/v1/responses/{body['id']}", timeout=5)
    assert gone.json() == {"id": body["id"], "object": "response", "deleted": True}
    again = httpx.get(f"{router.url}/v1/responses/{body['id']}", timeout=5)
    assert again.status_code == 404 and body["id"] in again.json()["error"]["message"]


def test_store_false_keeps_nothing(router: RouterProcess) -> None:
    body = post(router, {"input": "Hi", "store": False}).json()
    assert body["store"] is False
    assert httpx.get(f"{router.url}/v1/responses/{body['id']}", timeout=5).status_code == 404


def test_unknown_previous_response_is_a_404_naming_it(router: RouterProcess) -> None:
    r = post(router, {"input": "Hi", "previous_response_id": "resp_nope"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert "resp_nope" in err["message"] and err["param"] == "previous_response_id"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": "Hi", "background": True}, "background"),
    ({"input": "Hi", "max_output_tokens": "ten"}, "max_output_tokens"),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"input": 5}, "input"),
])
def test_bad_input_is_a_400_in_openai_shape(router: RouterProcess, body: dict[str, Any],
                                            param: str) -> None:
    r = post(router, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"


def test_a_broken_stream_ends_with_response_failed(router: RouterProcess, local: SimServer
                                                   ) -> None:
    httpx.post(local.url + "/_sim/faults", timeout=5, json={
        "faults": [{"kind": "cut", "after_tokens": 3}]})
    with httpx.stream("POST", router.url + "/v1/responses", timeout=30,
                      headers={"x-privacy": "private"},
                      json={"model": "gpt-oss-20b", "input": "Hi", "stream": True}) as r:
        assert r.status_code == 200
        events = [orjson.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    assert events[-1]["response"]["status"] == "failed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_private_conversation_stays_private_even_when_local_is_down(
        router: RouterProcess, local: SimServer, bedrock_sim: SimServer) -> None:
    cloud_before = sim_get(bedrock_sim, "/_sim/stats")["requests"]
    first = post(router, {"input": "My account notes"}, **{"x-privacy": "private"})
    assert first.status_code == 200 and first.headers["x-router-backend"] == "local"
    # The follow-up carries no marker at all: the stored class decides.
    second = post(router, {"input": "And then?", "previous_response_id": first.json()["id"]})
    assert second.status_code == 200 and second.headers["x-router-backend"] == "local"
    explain = httpx.post(router.url + "/v1/router/explain", timeout=5, json={
        "model": "gpt-oss-20b", "messages": [{"role": "user", "content": "x"}]}).json()
    assert explain["privacy"] == "standard"  # the same request without the history is not
    standard = post(router, {"input": "Public question"})
    assert standard.status_code == 200
    local.stop()  # the local backend is gone
    try:
        down = post(router, {"input": "Still there?",
                             "previous_response_id": second.json()["id"],
                             "metadata": {"privacy": "standard"}})
        assert down.status_code == 503, down.text
        assert sim_get(bedrock_sim, "/_sim/stats")["requests"] == cloud_before
        # Control: a standard conversation continued now does go to the cloud.
        cloud = post(router, {"input": "More?", "previous_response_id": standard.json()["id"]})
        assert cloud.status_code == 200 and cloud.headers["x-router-backend"] == "bedrock"
    finally:
        local.start()
    audit = [orjson.loads(line) for line in
             (router.log.parent / "audit.jsonl").read_text().splitlines()]
    private = [a for a in audit if "previous_response" in str(a.get("privacy_sources", ""))]
    assert private and all(a.get("backend") in (None, "local") for a in private)
