"""The Node clients, unchanged except for their base URL, against the real router process on
each backend: the `ollama` npm package (`tests/node/ollama_js.mjs`: list, show, chat, stream,
think, tool round trip, generate) and the AI SDK's Ollama provider (`tests/node/ai_sdk.mjs`:
generateText, reasoning, streamText, a tool loop). Each script prints one JSON summary line
and exits non-zero on any failed check.

The versions are pinned by `tests/node/package-lock.json`; `scripts/test.sh` runs `npm ci`.
Without node (or its packages) the tests skip, except in CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy, sim_get

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPTS = ["ollama_js", "ai_sdk"]
BACKENDS = ["local", "bedrock", "sagemaker"]


def _node() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "ollama").is_dir():
        problem = "tests/node has no node_modules: run npm ci --prefix tests/node"
    if problem is None:
        assert node is not None
        return node
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem} (CI must run the Node client tests)")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def node() -> str:
    return _node()


@pytest.fixture(scope="module", params=BACKENDS)
def served_by(request: pytest.FixtureRequest, ollama_sim: SimServer, bedrock_sim: SimServer,
              sagemaker_sim: SimServer, module_tmp: Path) -> Iterator[tuple[str, RouterProcess]]:
    """The router with one backend in its default route (the Ollama simulator stays local)."""
    backend = str(request.param)
    policy = base_policy(ollama_sim.url, bedrock_sim.url, sagemaker_sim.url)
    policy["routes"][-1]["targets"] = [backend]
    proc = RouterProcess(policy, module_tmp)
    yield backend, proc
    proc.stop()


def _requests(*sims: SimServer) -> list[int]:
    return [int(sim_get(s, "/_sim/stats").get("requests", 0)) for s in sims]


def run_script(node: str, script: str, base_url: str) -> dict[str, Any]:
    proc = subprocess.run([node, str(NODE_DIR / f"{script}.mjs"), base_url, "gpt-oss:20b"],
                          cwd=NODE_DIR, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"{script}: no JSON summary (rc {proc.returncode})\n{proc.stdout}{proc.stderr}"
    summary: dict[str, Any] = json.loads(lines[-1])
    failed = {k: v["error"] for k, v in summary["results"].items() if not v["ok"]}
    assert proc.returncode == 0 and summary["ok"] and not failed, json.dumps(failed, indent=1)
    return summary


@pytest.mark.parametrize("script", SCRIPTS)
def test_node_client_on_each_backend(node: str, served_by: tuple[str, RouterProcess],
                                     script: str, ollama_sim: SimServer, bedrock_sim: SimServer,
                                     sagemaker_sim: SimServer) -> None:
    backend, router = served_by
    sims = [ollama_sim, bedrock_sim, sagemaker_sim]
    before = _requests(*sims)
    summary = run_script(node, script, router.url)
    grew = [after > b for after, b in zip(_requests(*sims), before, strict=True)]
    assert grew == [b == backend for b in BACKENDS], (backend, grew)  # only that one answered
    expected = {"ollama_js": {"list", "show", "chat", "chatStream", "think", "toolRoundTrip",
                              "generate"},
                "ai_sdk": {"generateText", "reasoning", "streamText", "toolCall"}}[script]
    assert set(summary["results"]) == expected
