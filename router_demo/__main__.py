"""`python -m router_demo [--fast]`: the same demo as `hybrid-router demo`."""

from __future__ import annotations

import sys

from rich.console import Console

from router_demo.run import run_demo

if __name__ == "__main__":
    console = Console()
    sys.exit(run_demo(console if console.is_terminal else Console(width=150),
                      fast="--fast" in sys.argv[1:]))
