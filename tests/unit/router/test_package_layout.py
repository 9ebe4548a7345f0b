"""The router package holds only the router: the simulators and the demo are packages of their
own, and a production install of the router needs neither them nor the demo's `openai`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
ROUTER = ROOT / "router"
OUTSIDE = ("router_simulators", "router_demo", "openai")
# The one place that may name the demo: `hybrid-router demo`, importing it lazily.
LAZY_DEMO_IMPORT = ROUTER / "cli.py"


def imported_modules(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every import in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, id(node) in top))
    return found


def test_no_simulator_or_demo_module_in_the_router_package() -> None:
    names = [p.relative_to(ROOT).as_posix() for p in ROUTER.rglob("*.py")]
    assert not [n for n in names if "sim" in Path(n).stem or "demo" in Path(n).stem], names
    assert not [d for d in ROUTER.rglob("*") if d.is_dir() and d.name in ("simulators", "demo")]


def test_the_router_imports_neither_simulators_nor_demo_nor_openai() -> None:
    bad = []
    for path in sorted(ROUTER.rglob("*.py")):
        for module, top_level in imported_modules(path):
            if module.split(".")[0] not in OUTSIDE:
                continue
            if path == LAZY_DEMO_IMPORT and module == "router_demo.run" and not top_level:
                continue
            bad.append(f"{path.relative_to(ROOT)}: {module}")
    assert bad == []


def test_the_simulators_do_not_depend_on_the_router() -> None:
    """Protocol-faithful stand-ins: they speak the wire format, they never borrow the router's."""
    bad = [f"{p.relative_to(ROOT)}: {m}" for p in sorted((ROOT / "router_simulators").rglob("*.py"))
           for m, _ in imported_modules(p) if m.split(".")[0] in ("router", "router_demo")]
    assert bad == []


def test_importing_the_cli_and_app_loads_no_demo_dependency() -> None:
    code = ("import sys, router.cli, router.app; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            f"{OUTSIDE!r}); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
