"""hybrid-router: one OpenAI-compatible endpoint over local Ollama and gpt-oss on AWS.

Package map (dependencies point downwards only):

    api/         HTTP surface (Starlette): OpenAI /v1 routes, health, admin, error bodies
    executor.py  runs a plan: admission, retries, failover, streaming contract
    planner.py   pure routing decision (request, policy, state snapshot) -> plan
    backends/    one module per wire protocol behind the Backend protocol
    state/       shared state store (memory or Redis): slots, breakers, service time, spend
    policy/      policy schema, loader and built-in default
    types.py     the router's own request/response types (OpenAI Chat Completions shapes)
    errors.py    the error tree
"""

__version__ = "0.1.0"
