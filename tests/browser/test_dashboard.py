"""The live dashboard in a real browser: headless Chromium (Debian's `chromium` package)
driven by Playwright for Python, against a real router process and the simulators.

Loads `/ui`, drives traffic, and checks that the figures on the page change, that a private
request and a spill show up in the decision table with their reasons, that the explain box
shows a plan, and that the page logs no console error. Saves a screenshot in the test's
folder and copies it to `SCREENSHOT`. Playwright never downloads a browser here: it launches
the system's Chromium (`executable_path`). Without Chromium or Playwright the test skips,
except under CI (`CI=true`), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from router_simulators.server import SimServer
from tests.conftest import RouterProcess, base_policy

SCREENSHOT = Path("/tmp/hybrid-router-dashboard.png")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")

pytestmark = pytest.mark.slow


def chromium_path() -> str | None:
    explicit = os.environ.get("HR_CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _need(what: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing (scripts/test.sh installs it)")
    pytest.skip(f"{what} is missing (scripts/test.sh installs it)")


def chat(url: str, model: str, **headers: str) -> httpx.Response:
    r = httpx.post(url + "/v1/chat/completions", timeout=15, headers=headers, json={
        "model": model, "messages": [{"role": "user", "content": "dashboard test"}],
        "max_tokens": 16})
    assert r.status_code == 200, r.text
    return r


def test_the_dashboard_shows_live_figures_and_decisions(
        ollama_sim: SimServer, bedrock_sim: SimServer, tmp_path: Path) -> None:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _need("Playwright for Python")
    exe = chromium_path()
    if exe is None:
        _need("Chromium")
    policy: dict[str, Any] = base_policy(ollama_sim.url, bedrock_sim.url)
    policy["backends"]["local"]["models"] = {"gpt-oss-20b": "gpt-oss:20b"}  # 120b spills
    router = RouterProcess(policy, tmp_path)
    errors: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(router.url + "/ui")
            # `expect` polls without eval(), which the page's CSP forbids.
            expect(page.locator("body")).to_have_attribute("data-updates", re.compile(r"\d"),
                                                           timeout=10_000)
            assert page.text_content("#sum-total") == "0"
            assert page.text_content("#ready") == "ready"
            assert page.text_content("#conn") == "live"

            for _ in range(2):
                chat(router.url, "gpt-oss-20b")
            with httpx.stream("POST", router.url + "/v1/chat/completions", timeout=15, json={
                    "model": "gpt-oss-20b", "stream": True, "max_tokens": 16,
                    "messages": [{"role": "user", "content": "stream"}]}) as r:
                assert r.status_code == 200 and b"[DONE]" in r.read()
            private = chat(router.url, "gpt-oss-20b", **{"x-privacy": "private"})
            spill = chat(router.url, "gpt-oss-120b")
            assert spill.headers["x-router-backend"] == "bedrock"

            expect(page.locator("#sum-total")).to_have_text("5", timeout=10_000)
            assert page.text_content("#sum-requests") == "5"
            assert page.text_content("#sum-private-local") == "1"
            assert page.text_content("#sum-spill") == "20.0%"
            assert page.text_content("tr[data-backend='local'] .rps") != "0.00"
            ttft = page.text_content("tr[data-backend='local'] td:nth-child(6)") or ""
            assert ttft.endswith("s") and not ttft.startswith("–"), ttft  # the stream's TTFT
            assert page.locator("#by-backend div[data-name='bedrock']").count() == 1

            def decision(r: httpx.Response) -> Any:
                return page.locator(
                    f"#decisions tr[data-request-id='{r.headers['x-request-id']}']")

            row = decision(private)
            assert row.get_attribute("data-privacy") == "private"
            assert row.get_attribute("data-backend") == "local"
            assert row.locator("td").nth(6).text_content() == private.headers["x-router-reason"]
            row = decision(spill)
            assert "spill" in (row.get_attribute("class") or "")
            assert row.locator("td").nth(5).text_content() == "bedrock"
            assert row.locator("td").nth(6).text_content() == spill.headers["x-router-reason"]
            assert page.locator("#decisions tbody tr").count() == 5
            # Replicas: this process alone on a memory store, its store healthy; the shared slots.
            assert page.locator("#replicas tbody tr").count() == 1
            assert page.text_content("#replicas tbody td:nth-child(2)") == "ok"
            assert page.locator("#shared-slots tbody tr").count() >= 1

            page.check("#explain-private")
            page.click("#explain-form button")
            expect(page.locator("#explain-out")).to_have_text(re.compile("^route private"),
                                                              timeout=10_000)

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            shutil.copyfile(shot, SCREENSHOT)
            browser.close()
    finally:
        assert router.stop() == 0, router.log.read_text()
    assert errors == []
    assert shot.stat().st_size > 10_000
