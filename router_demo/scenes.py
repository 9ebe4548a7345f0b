"""The demo's scenes: each sends real requests through the official `openai` client and checks
that the router decided as it should (backend and reason)."""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from openai import OpenAI
from rich.console import Console

from router_demo.common import WEATHER_TOOL, Row
from router_demo.scene_anthropic import anthropic_scene
from router_demo.scene_ollama import ollama_scene
from router_demo.scene_responses import responses_scene
from router_simulators.server import SimServer

# Loopback only: never through a proxy from the environment.
_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Scenes:
    def __init__(self, router_url: str, ollama: SimServer, console: Console) -> None:
        self.url = router_url
        self.client = OpenAI(base_url=f"{router_url}/v1", api_key="demo", max_retries=0,
                             timeout=30)
        self.ollama = ollama
        self.console = console
        self.rows: list[Row] = []

    # -- helpers -------------------------------------------------------------------------

    def chat(self, scene: str, label: str, expect: Callable[[str, str], bool],
             **kwargs: Any) -> Any:
        kwargs.setdefault("model", "gpt-oss-20b")
        t = time.perf_counter()
        try:
            raw = self.client.chat.completions.with_raw_response.create(**kwargs)
            resp = raw.parse()
            backend = raw.headers.get("x-router-backend", "?")
            reason = raw.headers.get("x-router-reason", "?")
            usage = resp.usage
            tokens = f"{usage.prompt_tokens}+{usage.completion_tokens}" if usage else "-"
        except Exception as exc:  # noqa: BLE001 - the demo reports what the client saw
            resp = exc
            backend = "-"
            status = getattr(exc, "status_code", "?")
            body = getattr(exc, "body", None) or {}
            code = body.get("code") if isinstance(body, dict) else None
            reason = f"HTTP {status} {code or type(exc).__name__}"
            tokens = "-"
        ms = (time.perf_counter() - t) * 1000
        self.rows.append(Row(scene, label, backend, reason, ms, tokens, expect(backend, reason)))
        return resp

    def stream(self, scene: str, label: str, expect: Callable[[str, str], bool],
               **kwargs: Any) -> str:
        kwargs.setdefault("model", "gpt-oss-20b")
        t = time.perf_counter()
        text, reasoning, backend, reason, tokens = "", "", "-", "-", "-"
        try:
            with self.client.chat.completions.with_streaming_response.create(
                    stream=True, stream_options={"include_usage": True}, **kwargs) as raw:
                backend = raw.headers.get("x-router-backend", "?")
                reason = raw.headers.get("x-router-reason", "?")
                for chunk in raw.parse():
                    if chunk.usage:
                        tokens = f"{chunk.usage.prompt_tokens}+{chunk.usage.completion_tokens}"
                    for choice in chunk.choices:
                        text += choice.delta.content or ""
                        reasoning += getattr(choice.delta, "reasoning", None) or ""
        except Exception as exc:  # noqa: BLE001
            reason = f"{reason} / {type(exc).__name__}"
        ms = (time.perf_counter() - t) * 1000
        ok = expect(backend, reason) and bool(text)
        self.rows.append(Row(scene, label, backend, reason, ms, tokens, ok))
        return text

    def sim(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body or {}).encode()
        req = urllib.request.Request(self.ollama.url + path, data=data,
                                     headers={"content-type": "application/json"})
        with _LOOPBACK.open(req, timeout=10) as r:
            raw = r.read()
        return json.loads(raw) if raw else None

    def wait_until(self, cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return True
            time.sleep(0.1)
        return False

    def status(self) -> dict[str, Any]:
        with _LOOPBACK.open(self.url + "/v1/router/status", timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
        return data

    # -- scenes --------------------------------------------------------------------------

    def run_all(self) -> list[Row]:
        for scene in (self.basics, self.agents_sdk, self.anthropic, self.privacy, self.cloud,
                      self.long_prompt, self.burst, self.ollama_native, self.cold_model,
                      self.outage):
            self.console.print(f"scene: {scene.__name__.replace('_', ' ')}")
            scene()
        return self.rows

    # The other client dialects (one module each): the Agents SDK on the Responses API, an
    # Anthropic Messages client, and an Ollama-native client served by the cloud while the
    # GPU is busy.
    def agents_sdk(self) -> None:
        self.rows += responses_scene(self.url)

    def anthropic(self) -> None:
        anthropic_scene(self.url, self.rows)

    def ollama_native(self) -> None:
        ollama_scene(self.url, self.rows)

    def basics(self) -> None:
        local = lambda b, r: b == "local" and r == "local"  # noqa: E731
        msg = [{"role": "user", "content": "Say hello in one sentence."}]
        self.chat("answer", "gpt-oss-20b, plain", local, messages=msg)
        self.stream("stream", "gpt-oss-20b, streamed", local, messages=msg)
        tool_msgs: list[dict[str, Any]] = [
            {"role": "user", "content": "What is the weather in Tokyo?"}]
        first = self.chat("tools", "tool call requested", local, messages=tool_msgs,
                          tools=[WEATHER_TOOL], reasoning_effort="low")
        if isinstance(first, Exception) or not first.choices[0].message.tool_calls:
            self.rows[-1].ok = False
            return
        m = first.choices[0].message
        call = m.tool_calls[0]
        tool_msgs.append({"role": "assistant", "content": m.content, "tool_calls": [
            {"id": call.id, "type": "function", "function": {
                "name": call.function.name, "arguments": call.function.arguments}}],
            "reasoning": getattr(m, "reasoning", None)})
        tool_msgs.append({"role": "tool", "tool_call_id": call.id,
                          "content": '{"city":"Tokyo","temp_c":21}'})
        self.chat("tools", "tool result + reasoning back", local, messages=tool_msgs,
                  tools=[WEATHER_TOOL])

    def privacy(self) -> None:
        private = lambda b, r: b == "local" and r == "private_local_only"  # noqa: E731
        self.chat("private", "X-Privacy: private", private,
                  messages=[{"role": "user", "content": "Summarise our Q3 numbers."}],
                  extra_headers={"X-Privacy": "private"})
        self.chat("private", "e-mail in prompt (detector)", private,
                  messages=[{"role": "user", "content": "Draft a reply to ana@example.com"}])
        self.chat("private", "model alias gpt-oss-20b-private", private,
                  model="gpt-oss-20b-private",
                  messages=[{"role": "user", "content": "Internal memo."}])

    def cloud(self) -> None:
        self.chat("cloud", "gpt-oss-120b (65 GB > 24 GB card)",
                  lambda b, r: b == "bedrock" and r == "vram_insufficient",
                  model="gpt-oss-120b", messages=[{"role": "user", "content": "Hard question."}])
        self.stream("cloud", "gpt-oss-120b streamed via Bedrock",
                    lambda b, r: b == "bedrock", model="openai.gpt-oss-120b-1:0",
                    messages=[{"role": "user", "content": "Explain routing."}])
        self.chat("cloud", "team research -> SageMaker endpoint",
                  lambda b, r: b == "sagemaker",
                  messages=[{"role": "user", "content": "Hello from research."}],
                  extra_headers={"x-team": "research"})

    def long_prompt(self) -> None:
        big = "lorem ipsum dolor sit amet " * 6000  # ~160K chars, ~54K estimated tokens
        self.chat("long prompt", "~54K tokens, standard",
                  lambda b, r: b == "bedrock" and r.startswith("context_"),
                  messages=[{"role": "user", "content": big}], max_tokens=256)
        self.chat("long prompt", "~54K tokens, private",
                  lambda b, r: "400" in r and "context_length_exceeded" in r,
                  messages=[{"role": "user", "content": big}], max_tokens=256,
                  extra_headers={"X-Privacy": "private"})

    def burst(self) -> None:
        msgs = [{"role": "user", "content": "Burst request."}]
        start = len(self.rows)
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            futs = [pool.submit(self.stream, "burst", f"burst #{i + 1} of 10",
                                lambda b, r: b in ("local", "bedrock"), messages=msgs)
                    for i in range(10)]
            for f in futs:
                f.result()
        burst_rows = self.rows[start:]
        spilled = [r for r in burst_rows if r.backend == "bedrock"]
        local = [r for r in burst_rows if r.backend == "local"]
        # Spilled on the wait estimate, early from the queue once its predicted wait passed
        # what was left of the bound, or after waiting out the bound.
        ok = bool(spilled) and bool(local) and all(
            r.reason.startswith("queue_wait_")
            or r.reason in ("failover_after=queue_spilled", "failover_after=queue_timeout")
            for r in spilled)
        for r in burst_rows:
            r.ok = r.ok and ok

    def cold_model(self) -> None:
        self.sim("/api/chat", {"model": "gpt-oss:20b", "messages": [], "keep_alive": 0})
        self.wait_until(lambda: not any(
            m["model"] == "gpt-oss:20b"
            for m in (self.status()["backends"]["local"]["probe"] or {}).get("loaded", [])))
        msgs = [{"role": "user", "content": "Cold start?"}]
        self.chat("cold model", "20b unloaded: standard",
                  lambda b, r: b == "bedrock" and r == "model_not_resident", messages=msgs)
        warmed = self.wait_until(lambda: any(
            m["model"] == "gpt-oss:20b"
            for m in (self.status()["backends"]["local"]["probe"] or {}).get("loaded", [])))
        self.chat("cold model", "after the router warmed it",
                  lambda b, r: warmed and b == "local", messages=msgs)

    def outage(self) -> None:
        msgs = [{"role": "user", "content": "Are you there?"}]
        self.ollama.stop()
        try:
            self.chat("outage", "Ollama down: standard",
                      lambda b, r: b == "bedrock", messages=msgs)
            self.chat("outage", "Ollama down: private",
                      lambda b, r: "503" in r and "no_local_capacity" in r, messages=msgs,
                      extra_headers={"X-Privacy": "private"})
        finally:
            self.ollama.start()
        back = self.wait_until(
            lambda: self.status()["backends"]["local"]["breaker"] != "open"
            and bool((self.status()["backends"]["local"]["probe"] or {}).get("ok")))
        self.chat("outage", "Ollama back: standard",
                  lambda b, r: back and b == "local", messages=msgs)
