"""`hybrid-router demo`: the router in front of simulated Ollama, Bedrock and SageMaker.

A package of its own, beside `router` and `router_simulators`, so the router ships without it:
`run.py` starts everything and prints the table, `scenes.py` drives the router with the official
`openai` client (the `demo` extra), `common.py` holds what both use. `python -m router_demo`
runs it too.
"""
