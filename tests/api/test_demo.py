"""The README's first command: the demo runs every scene and exits 0, leaving nothing behind."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import AWS_ENV


def test_demo_exits_0_with_every_scene_as_expected() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "AWS_"))}
    env.update(AWS_ENV)
    proc = subprocess.run([sys.executable, "-m", "router.cli", "demo", "--fast"], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "every scene behaved as expected" in out
    for reason in ("private_local_only", "vram_insufficient", "model_not_resident",
                   "no_local_capacity", "context_", "failover_after="):
        assert reason in out, reason
    # The other dialects' scenes ran: the Agents SDK on the Responses API, an Anthropic client,
    # and an Ollama-native client spilled to the cloud while the GPU was busy.
    for scene in ("scene: agents sdk", "scene: anthropic", "scene: ollama native",
                  "previous_response_id of a private turn", "NDJSON stream"):
        assert scene in out, scene
