"""`hybrid-router demo`: the router plus simulated Ollama, Bedrock and SageMaker on loopback.

Starts the three simulators and the router on free 127.0.0.1 ports, drives the router with the
official `openai` client through a series of scenes, and prints what was routed where and why.
Needs no network, leaves no process or thread behind, and exits 0 when every scene behaved.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from router.policy.loader import parse_policy
from router.policy.schema import Policy
from router_demo.scenes import Scenes
from router_simulators.bedrock import BedrockSimConfig
from router_simulators.bedrock import create_app as bedrock_app
from router_simulators.ollama import OllamaSimConfig
from router_simulators.ollama import create_app as ollama_app
from router_simulators.sagemaker import SageMakerSimConfig
from router_simulators.sagemaker import create_app as sagemaker_app
from router_simulators.server import SimServer, free_port


def demo_policy(ollama_url: str, bedrock_url: str, sagemaker_url: str) -> Policy:
    return parse_policy({
        "models": {
            "gpt-oss-20b": {"vram_gb": 14, "kv_bytes_per_token": 24576},
            "gpt-oss-120b": {"vram_gb": 65, "kv_bytes_per_token": 36864},
        },
        "backends": {
            "local": {"type": "ollama", "base_url": ollama_url, "parallel": 2,
                      "gpu_memory_gb": 24, "num_ctx": 8192, "probe_interval_s": 0.3,
                      "models": {"gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b"},
                      "price": {"input_per_mtok": 0.07, "output_per_mtok": 0.3}},
            "bedrock": {"type": "bedrock", "region": "us-west-2", "endpoint_url": bedrock_url,
                        "context_window": 128000,
                        "models": {"gpt-oss-20b": "openai.gpt-oss-20b-1:0",
                                   "gpt-oss-120b": "openai.gpt-oss-120b-1:0"},
                        "price": {"input_per_mtok": 0.07, "output_per_mtok": 0.3}},
            "sagemaker": {"type": "sagemaker", "region": "us-west-2",
                          "endpoint_url": sagemaker_url, "endpoint_name": "gpt-oss-20b-endpoint",
                          "context_window": 128000,
                          "models": {"gpt-oss-20b": "gpt-oss-20b"}},
        },
        "routes": [
            {"name": "private", "match": {"privacy": "private"}, "targets": ["local"]},
            {"name": "research", "match": {"headers": {"x-team": "research"}},
             "targets": ["sagemaker", "bedrock"]},
            {"name": "default", "targets": ["local", "bedrock"], "max_queue_wait_s": 0.25},
        ],
        "privacy": {"private_max_queue_wait_s": 3, "private_aliases":
                    {"gpt-oss-20b-private": "gpt-oss-20b"}},
        "circuit": {"failure_threshold": 2, "local_open_for_s": 1.0},
        "retry": {"attempts": 2, "initial_s": 0.05, "max_s": 0.2},
        "deadline_s": 30,
    }, "<demo policy>")


class RouterThread:
    """The real router app under uvicorn, in a background thread (no signal handlers)."""

    def __init__(self, policy: Policy) -> None:
        import uvicorn

        from router.app import create_app
        from router.settings import RouterSettings

        self.port = free_port()
        settings = RouterSettings(port=self.port, watch_policy=False)
        self.app = create_app(settings, policy=policy)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")
        self.server = uvicorn.Server(config)
        # uvicorn installs signal handlers only in the main thread: none here.
        self.thread = threading.Thread(target=self.server.run, name="router", daemon=True)

    def __enter__(self) -> RouterThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("router did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextlib.contextmanager
def simulators(token_delay: float, load_time: float) -> Iterator[tuple[SimServer, ...]]:
    olla = SimServer(lambda: ollama_app(OllamaSimConfig(
        parallel=2, token_delay_s=token_delay, load_time_s=load_time)))
    bed = SimServer(lambda: bedrock_app(BedrockSimConfig(token_delay_s=token_delay)))
    sm = SimServer(lambda: sagemaker_app(SageMakerSimConfig(token_delay_s=token_delay)))
    for s in (olla, bed, sm):
        s.start()
    try:
        yield olla, bed, sm
    finally:
        for s in (olla, bed, sm):
            s.stop()


def run_demo(console: Console, fast: bool = False, hold_s: float = 0.0) -> int:
    """Run every scene; with `hold_s`, keep the router (and its dashboard) up that long
    after the scenes, so a person can look at `/ui`."""
    for var, value in (("AWS_ACCESS_KEY_ID", "demo"), ("AWS_SECRET_ACCESS_KEY", "demo"),
                       ("AWS_DEFAULT_REGION", "us-west-2")):
        os.environ.setdefault(var, value)
    token_delay = 0.005 if fast else 0.02
    with simulators(token_delay, load_time=0.6 if fast else 1.5) as (olla, bed, sm):
        policy = demo_policy(olla.url, bed.url, sm.url)
        with RouterThread(policy) as rt:
            console.print(f"simulated Ollama {olla.url} (24 GiB card, 2 slots), Bedrock {bed.url},"
                          f" SageMaker {sm.url}; router http://127.0.0.1:{rt.port}/v1")
            console.print(f"dashboard: http://127.0.0.1:{rt.port}/ui  (terminal: hybrid-router"
                          f" top --url http://127.0.0.1:{rt.port})", markup=False)
            scenes = Scenes(f"http://127.0.0.1:{rt.port}", olla, console)
            rows = scenes.run_all()
            if hold_s > 0:
                console.print(f"holding the router for {hold_s:g} s: open "
                              f"http://127.0.0.1:{rt.port}/ui (Ctrl-C ends it)", markup=False)
                with contextlib.suppress(KeyboardInterrupt):
                    time.sleep(hold_s)
            rt.app.state.service.dashboard.closing = True  # open dashboard feeds end now
    table = Table("scene", "request", "backend", "reason (x-router-reason)", "latency",
                  "tokens", "ok", title="hybrid-router demo: real routing decisions")
    for r in rows:
        table.add_row(r.scene, r.request, r.backend, r.reason, f"{r.latency_ms:.0f} ms",
                      r.tokens, "yes" if r.ok else "[red]NO[/]")
    console.print(table)
    failed = [r for r in rows if not r.ok]
    if failed:
        console.print(f"[red]{len(failed)} scene(s) did not behave as expected[/]")
        return 1
    console.print("every scene behaved as expected")
    return 0
