"""`benchmarks/profile_router.py`: the self/total shares it computes from py-spy's raw stacks
(total: router frames only; pure: the profile run itself needs py-spy and is not in the suite).
"""

from __future__ import annotations

from benchmarks.profile_router import top_functions

RAW = """\
run (router/server.py);handle (router/api/chat.py);dumps (orjson) 6
run (router/server.py);handle (router/api/chat.py);plan (router/planner.py) 2
run (router/server.py);select (selectors.py) 2
not a stack line
"""


def test_top_functions_counts_leaf_frames_as_self_and_every_frame_once_as_total() -> None:
    top = top_functions(RAW, 2)
    assert top["samples"] == 10
    assert top["self"] == [
        {"function": "dumps (orjson)", "samples": 6, "share": 0.6},
        {"function": "plan (router/planner.py)", "samples": 2, "share": 0.2}]
    # Total: the router's own functions, not its entry frames (under every sample).
    assert top["total"] == [
        {"function": "handle (router/api/chat.py)", "samples": 8, "share": 0.8},
        {"function": "plan (router/planner.py)", "samples": 2, "share": 0.2}]
