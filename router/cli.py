"""The `hybrid-router` command: serve, check, explain, demo, top, audit, keygen.

Settings come from `ROUTER_*` environment variables (see settings.py); flags override them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console, Group
from rich.table import Table

from router.policy.loader import PolicyError, default_policy, load_policy, policy_warnings

if TYPE_CHECKING:
    from router.settings import RouterSettings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="hybrid-router: one OpenAI-compatible endpoint over local Ollama and "
                       "gpt-oss on AWS Bedrock / SageMaker.")
console = Console()
err_console = Console(stderr=True)


@app.command()
def serve(
    policy: Annotated[Optional[str], typer.Option(help="policy YAML (default: built-in)")] = None,  # noqa: UP045
    host: Annotated[Optional[str], typer.Option(help="bind address (default 127.0.0.1)")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="port (default 11435)")] = None,  # noqa: UP045
    workers: Annotated[Optional[int], typer.Option(  # noqa: UP045
        min=1, max=64, help="worker processes on the one port (default 1); more than one "
                            "needs ROUTER_REDIS_URL")] = None,
) -> None:
    """Run the router (with --workers N: N processes sharing one port and the Redis state)."""
    from router.app import create_app
    from router.settings import RouterSettings

    overrides: dict[str, object] = {}
    if policy is not None:
        overrides["policy_file"] = policy
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if workers is not None:
        overrides["workers"] = workers
    settings = RouterSettings(**overrides)  # type: ignore[arg-type]
    from router.server import configure_logging, run_workers, workers_problem

    if problem := workers_problem(settings):
        err_console.print(problem, markup=False, soft_wrap=True)
        raise typer.Exit(2)
    configure_logging(settings)
    if settings.workers > 1:
        _serve_workers(settings, run_workers)
        return
    try:
        asgi = create_app(settings)
    except PolicyError as exc:
        _exit_on_policy_error(exc)
    _warn_if_reachable(settings)
    from router.server import run

    run(asgi, settings)


def _exit_on_policy_error(exc: PolicyError) -> NoReturn:
    for line in exc.lines:
        err_console.print(line, markup=False)
    raise typer.Exit(1) from None


def _warn_if_reachable(settings: RouterSettings) -> None:
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("router").warning("binding to %s: reachable beyond this machine",
                                            settings.host)


def _serve_workers(settings: RouterSettings,
                   run_workers: Callable[[RouterSettings], int]) -> None:
    """Check the policy once in the parent (so a bad file fails fast), then run the workers."""
    if settings.policy_file:
        try:
            load_policy(settings.policy_file)
        except PolicyError as exc:
            _exit_on_policy_error(exc)
    _warn_if_reachable(settings)
    try:
        code = run_workers(settings)
    except OSError as exc:
        err_console.print(f"cannot listen on {settings.host}:{settings.port}: {exc}",
                          markup=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@app.command()
def check(files: Annotated[list[Path], typer.Argument(help="policy files to validate")]) -> None:
    """Validate policy files: exit 0 when all are valid, 1 with one line per problem.

    Valid files may also print warnings (exit 0): e.g. an `ollama` backend model that is one of
    Ollama's cloud models, which never serves private requests."""
    bad = False
    for f in files:
        try:
            policy_obj = load_policy(f)
        except PolicyError as exc:
            bad = True
            for line in exc.lines:
                err_console.print(line, markup=False, soft_wrap=True)
        else:
            console.print(f"{f}: ok", markup=False)
            for line in policy_warnings(policy_obj):
                console.print(f"{f}: warning: {line}", markup=False, soft_wrap=True)
    raise typer.Exit(1 if bad else 0)


@app.command()
def explain(
    model: Annotated[str, typer.Option(help="model name or alias")] = "gpt-oss-20b",
    privacy: Annotated[str, typer.Option(help="private or standard")] = "standard",
    prompt_tokens: Annotated[int, typer.Option(help="approximate prompt size")] = 200,
    max_tokens: Annotated[Optional[int], typer.Option()] = None,  # noqa: UP045
    policy: Annotated[Optional[str], typer.Option(help="policy YAML")] = None,  # noqa: UP045
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    url: Annotated[Optional[str], typer.Option(  # noqa: UP045
        help="ask a running router (its live queues, VRAM, breakers), e.g. "
             "http://127.0.0.1:11435")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="HYBRID_ROUTER_API_KEY")] = None,  # noqa: UP045
) -> None:
    """Plan a sample request and print the candidates and reasons. Sends nothing upstream."""
    from router.explain import explain_live, explain_offline

    if url:
        result = explain_live(url, model, privacy, prompt_tokens, max_tokens, api_key)
    else:
        try:
            pol = load_policy(policy) if policy else default_policy()
        except PolicyError as exc:
            _exit_on_policy_error(exc)
        result = asyncio.run(explain_offline(pol, model, privacy, prompt_tokens, max_tokens))
    if json_out:
        import orjson

        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if "error" in result and "candidates" not in result:
        err_console.print(result["error"], markup=False)
        raise typer.Exit(1)
    console.print(f"model [bold]{result['model']}[/]  privacy [bold]{result['privacy']}[/] "
                  f"({', '.join(result['privacy_sources']) or 'default'})  route "
                  f"[bold]{result['route']}[/]  needs ~{result['needed_tokens']} tokens")
    table = Table("#", "backend", "model id", "where", "reason", "est. wait")
    for i, c in enumerate(result["candidates"], 1):
        table.add_row(str(i), c["backend"], c["model_id"], "local" if c["local"] else "cloud",
                      c["reason"], f"{c['estimated_wait_s']:.2f}s")
    for e in result["excluded"]:
        table.add_row("-", e["backend"], "", "excluded", e["reason"], "")
    console.print(table)
    for note in result.get("notes") or ():
        console.print(f"note: {note}", markup=False)
    if result.get("error"):
        console.print(f"[red]would fail:[/] {result['error']['message']}")


# What `hybrid-router demo` imports beyond the router: missing means the extra is not installed.
_DEMO_MODULES = frozenset({"openai", "agents", "router_demo", "router_simulators"})
DEMO_EXTRA_MISSING = "the demo needs the 'demo' extra: pip install 'hybrid-router[demo]'"


@app.command()
def demo(
    fast: Annotated[bool, typer.Option(help="shorter delays")] = False,
    hold: Annotated[bool, typer.Option(
        "--hold", help="keep the router up after the scenes, to look at its dashboard")] = False,
    hold_seconds: Annotated[float, typer.Option(help="how long --hold keeps it up")] = 30.0,
) -> None:
    """Start the simulators and the router on free loopback ports and drive them; prints the
    dashboard's URL."""
    try:
        from router_demo.run import run_demo  # the demo ships beside the router, not in it
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _DEMO_MODULES:
            raise
        err_console.print(DEMO_EXTRA_MISSING, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None

    out = console if console.is_terminal else Console(width=150)
    raise typer.Exit(run_demo(out, fast=fast, hold_s=hold_seconds if hold else 0.0))


def _events(url: str, api_key: str | None, once: bool) -> Iterator[dict[str, Any]]:
    """The dashboard feed (`/ui/events`) as dicts: one event with `once`, else live."""
    import urllib.request

    headers = {"Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    feed = url.rstrip("/") + "/ui/events" + ("?limit=1" if once else "")
    with urllib.request.urlopen(urllib.request.Request(feed, headers=headers),  # noqa: S310
                                timeout=30) as resp:
        data: list[str] = []
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                yield json.loads("\n".join(data))
                data = []


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"


def render_top(view: dict[str, Any]) -> Group:
    """The dashboard's figures as rich tables (what `top` prints)."""
    r, money = view["routing"], view["money"]
    refused = sum(r["private_refused"].values())
    head = (f"[bold]{'ready' if view['ready'] else '[red]not ready[/]'}[/]  "
            f"{sum(r['rps_series'][-10:]) / 10:.2f} req/s  spill {r['spill_rate']:.0%}  "
            f"private kept local {r['private_local']}, refused {refused}  "
            f"waited {r['waited']}  hedges {r['hedges']}  continuations {r['continuations']}  "
            f"total {view['totals']['requests']}  store {view['store'].get('kind')}"
            f"{' [red]DEGRADED[/]' if view['store'].get('degraded') else ''}")
    backends = Table("backend", "health", "breaker", "req/s", "errors", "TTFT p50/p95",
                     "tok/s p50/p95", "slots", "VRAM free", title="backends (last 60 s)")
    for name, b in view["backends"].items():
        queues = b.get("queues") or {}
        slots = ", ".join(f"{m} {q['in_flight']}/{q['slots']} +{q['queued']} "
                          f"~{q['estimated_wait_s']:.1f}s" for m, q in queues.items()) or "-"
        free = (b.get("probe") or {}).get("gpu_free_bytes")
        tps = b["tokens_per_s"]
        backends.add_row(
            f"{name} ({'local' if b['local'] else 'cloud'})",
            "[green]healthy[/]" if b["healthy"] else "[red]unhealthy[/]", b["breaker"],
            f"{b['rps']:.2f}", f"{b['error_rate']:.0%}",
            f"{_ms(b['ttft_s']['p50'])} / {_ms(b['ttft_s']['p95'])}",
            "-" if tps["p50"] is None else f"{tps['p50']:.0f} / {tps['p95']:.0f}", slots,
            "-" if free is None else f"{free / 2**30:.1f} GiB")
    spend = ", ".join(
        f"{s['name']} ${s['spent_usd'] or 0:.4f}" + (f" of ${s['cap_usd']:.2f}"
                                                    if s["cap_usd"] is not None else "")
        for s in money["spend_today"]) or "-"
    decisions = Table("time", "dialect", "model", "privacy", "backend", "reason", "outcome",
                      "latency", "tokens", title="recent decisions")
    import datetime

    for d in view["decisions"][:15]:
        decisions.add_row(
            datetime.datetime.fromtimestamp(d["time"]).strftime("%H:%M:%S"), d["dialect"],
            d["model"], d["privacy"], d["backend"] or "[red]refused[/]", d["reason"] or "-",
            d["outcome"], f"{d['latency_ms']:.0f} ms",
            "-" if d["prompt_tokens"] is None
            else f"{d['prompt_tokens']}->{d['completion_tokens']}")
    replicas = Table("replica", "state store", "in flight", "last heartbeat",
                     title="replicas")
    for rep in view.get("replicas", []):
        replicas.add_row(rep["id"] + (" (this one)" if rep.get("self") else ""),
                         "[green]ok[/]" if rep["store"] == "ok" else "[red]degraded[/]",
                         str(rep["in_flight"]), f"{rep['last_seen_s_ago']:.1f} s ago")
    shared = ", ".join(f"{s['backend']}/{s['model']} {s['in_flight']}/{s['slots']} "
                       f"+{s['queued']}" for s in view.get("shared_slots", [])) or "-"
    return Group(head, backends, f"cloud spend today: {spend}   local tokens "
                 f"{money['local_tokens']} (worth ${money['local_value_usd']:.4f} on the cloud)",
                 replicas, f"shared slots: {shared}", decisions)


@app.command()
def top(
    url: Annotated[str, typer.Option(help="the router")] = "http://127.0.0.1:11435",
    api_key: Annotated[Optional[str], typer.Option(  # noqa: UP045
        envvar="HYBRID_ROUTER_API_KEY", help="an ops or admin key, when keys are configured")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="print one view and exit")] = False,
) -> None:
    """The live dashboard in the terminal: backends, routing, money and recent decisions."""
    import urllib.error

    from rich.live import Live

    try:
        if once:
            for view in _events(url, api_key, once=True):
                console.print(render_top(view))
            return
        with Live(console=console, auto_refresh=False, screen=False) as live:
            for view in _events(url, api_key, once=False):
                live.update(render_top(view), refresh=True)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        err_console.print(f"{url}: HTTP {exc.code}: {message}", markup=False)
        raise typer.Exit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        err_console.print(f"{url}: {exc}", markup=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        return


@app.command("audit-summary")
def audit_summary(
    path: Annotated[Path, typer.Argument(help="audit log (JSON lines)")],
    policy: Annotated[Optional[str], typer.Option(help="policy, to know which backends are local")] = None,  # noqa: UP045,E501
) -> None:
    """Summarise an audit log: counts, and where every private request went."""
    from router.audit import summarize

    pol = load_policy(policy) if policy else default_policy()
    local = {n for n, c in pol.backends.items() if c.local}
    summary = summarize(str(path), local_backends=local)
    import orjson

    sys.stdout.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode() + "\n")
    raise typer.Exit(1 if summary.get("private_on_non_local") else 0)


@app.command()
def keygen(name: Annotated[str, typer.Argument(help="key name")] = "app") -> None:
    """Make a new API key: prints the key once, and the policy entry holding only its hash."""
    from router.auth import generate_key

    plaintext, digest = generate_key()
    console.print(f"key (give to the client, store nowhere else): {plaintext}", markup=False)
    console.print(f"policy entry:\n  - name: {name}\n    sha256: {digest}", markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
