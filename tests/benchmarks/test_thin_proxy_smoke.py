"""`benchmarks/thin_proxy.py`, the ceiling of the overhead benchmark: it starts as a child
process and forwards a non-streamed and a streamed chat completion to the Ollama simulator,
bytes unchanged (behaviour only, never speed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.harness import Child
from benchmarks.thin_proxy import start_thin_proxy
from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.server import SimServer

BODY = {"model": "gpt-oss:20b", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[SimServer, str]]:
    with SimServer(lambda: ollama_app(OllamaSimConfig(parallel=4))) as sim:
        child: Child
        child, url = start_thin_proxy(sim.url, tmp_path)
        try:
            child.wait_ready(30)
            yield sim, url
        finally:
            child.stop()


def test_thin_proxy_forwards_json_and_streams(proxy: tuple[SimServer, str]) -> None:
    sim, url = proxy
    with httpx.Client(timeout=10, trust_env=False) as client:
        r = client.post(url + "/v1/chat/completions", json=BODY)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["choices"][0]["message"]["content"]
        with client.stream("POST", url + "/v1/chat/completions",
                           json={**BODY, "stream": True}) as s:
            assert s.status_code == 200
            assert s.headers["content-type"].startswith("text/event-stream")
            raw = b"".join(s.iter_raw())
        assert raw.endswith(b"data: [DONE]\n\n") and raw.count(b"data: ") > 2
        # An upstream error passes through as it came: status and body.
        bad = client.post(url + "/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
        direct = client.post(sim.url + "/v1/chat/completions", content=b"{not json",
                             headers={"content-type": "application/json"})
        assert (bad.status_code, bad.content) == (direct.status_code, direct.content)
        assert client.get(url + "/healthz").text == "ok"
