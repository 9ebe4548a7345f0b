"""The `hybrid-router` command: serve, check, explain, demo, audit, keygen.

Settings come from `ROUTER_*` environment variables (see settings.py); flags override them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from router.policy.loader import PolicyError, default_policy, load_policy, policy_warnings

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
) -> None:
    """Run the router."""
    from router.app import create_app
    from router.settings import RouterSettings

    overrides: dict[str, object] = {}
    if policy is not None:
        overrides["policy_file"] = policy
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = RouterSettings(**overrides)  # type: ignore[arg-type]
    from router.server import configure_logging

    configure_logging(settings)
    try:
        asgi = create_app(settings)
    except PolicyError as exc:
        for line in exc.lines:
            err_console.print(line, markup=False)
        raise typer.Exit(1) from None
    if settings.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("router").warning("binding to %s: reachable beyond this machine",
                                            settings.host)
    from router.server import run

    run(asgi, settings)


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
            for line in exc.lines:
                err_console.print(line, markup=False)
            raise typer.Exit(1) from None
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
_DEMO_MODULES = frozenset({"openai", "router_demo", "router_simulators"})
DEMO_EXTRA_MISSING = "the demo needs the 'demo' extra: pip install 'hybrid-router[demo]'"


@app.command()
def demo(
    fast: Annotated[bool, typer.Option(help="shorter delays")] = False,
) -> None:
    """Start the simulators and the router on free loopback ports and drive them."""
    try:
        from router_demo.run import run_demo  # the demo ships beside the router, not in it
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _DEMO_MODULES:
            raise
        err_console.print(DEMO_EXTRA_MISSING, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None

    out = console if console.is_terminal else Console(width=150)
    raise typer.Exit(run_demo(out, fast=fast))


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
