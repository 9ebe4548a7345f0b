"""What both benchmarks share: child processes (simulators, routers) that are always killed,
per-process CPU time and memory from /proc, percentiles, machine facts, JSON output, and the
small Redis and router-status helpers of the overhead benchmark.

Every child is started with its own log file and waited for until a readiness URL answers; it
is killed on every exit path: `stop_all()` in the caller's `finally`, `atexit`, SIGTERM
(turned into SystemExit so `finally` blocks run) and, on Linux, the parent's death
(PR_SET_PDEATHSIG), so a killed benchmark leaves no simulator or router behind.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

from router_simulators.server import free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-west-2", "AWS_EC2_METADATA_DISABLED": "true"}
_CLK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------------------------
# Child processes (killed on every exit path: finally, atexit, SIGTERM, parent death)
# --------------------------------------------------------------------------------------------

_LIVE: list[Child] = []


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux only)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Child:
    """A child process with its log file, waited for until `ready_url` answers 200."""

    def __init__(self, name: str, argv: list[str], ready_url: str, logdir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        base = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env={**base, **AWS_ENV, **(env or {})}, stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # noqa: PLW1509
        _LIVE.append(self)
        self.ready_url = ready_url

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            with contextlib.suppress(OSError), \
                    urllib.request.urlopen(self.ready_url, timeout=1) as r:  # noqa: S310
                if r.status == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout_s:g}s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, n: int = 30) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        if self in _LIVE:
            _LIVE.remove(self)


def stop_all() -> None:
    for child in list(reversed(_LIVE)):
        with contextlib.suppress(Exception):
            child.stop()


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


atexit.register(stop_all)


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)


def start_ollama_sim(logdir: Path, *, parallel: int, token_delay_s: float,
                     max_queue: int = 4096, name: str = "ollama-sim") -> tuple[Child, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = Child(name, [sys.executable, "-m", "router_simulators.ollama", "--port", str(port),
                         "--parallel", str(parallel), "--token-delay", str(token_delay_s),
                         "--max-queue", str(max_queue)], url + "/api/version", logdir)
    return child, url


def start_bedrock_sim(logdir: Path, *, token_delay_s: float) -> tuple[Child, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    child = Child("bedrock-sim", [sys.executable, "-m", "router_simulators.bedrock", "--port",
                                  str(port), "--token-delay", str(token_delay_s)],
                  url + "/_sim/stats", logdir)
    return child, url


def start_router(name: str, policy: dict[str, Any], logdir: Path,
                 env: dict[str, str] | None = None) -> tuple[Child, str]:
    port = free_port()
    path = logdir / f"{name}-policy.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    url = f"http://127.0.0.1:{port}"
    child = Child(name, [sys.executable, "-m", "router.cli", "serve", "--policy", str(path),
                         "--port", str(port)], url + "/healthz", logdir,
                  {"ROUTER_LOG_LEVEL": "warning", **(env or {})})
    return child, url


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (0.0 where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


def memory_mb(pid: int) -> dict[str, float | None]:
    """VmRSS (now) and VmHWM (peak) in MB (10^6 bytes) from /proc/<pid>/status."""
    out: dict[str, float | None] = {"rss_mb": None, "hwm_mb": None}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_mb" if key == "VmRSS" else "hwm_mb"] = round(
                    int(value.split()[0]) * 1024 / 1e6, 1)
    return out


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "machine": platform.machine()}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")


def store_status(router_url: str) -> dict[str, Any]:
    """The router's state-store status (kind, degraded, fallbacks) from /v1/router/status."""
    try:
        with urllib.request.urlopen(router_url + "/v1/router/status", timeout=5) as r:  # noqa: S310
            store = orjson.loads(r.read()).get("store") or {}
    except (OSError, ValueError) as exc:
        return {"error": repr(exc)}
    keep = ("kind", "degraded", "fallbacks_total", "round_trips", "errors_total")
    return {k: store[k] for k in keep if k in store}


def redis_reachable(url: str) -> str | None:
    """None when Redis answers PING, else why not."""
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable Redis
        return repr(exc)
    return None


def clean_redis(url: str, prefix: str) -> None:
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
