"""Protocol-faithful simulators of Ollama, the Bedrock runtime and the SageMaker runtime.

A package of its own beside `router` (the router never imports it): used by the tests, the
demo and the benchmarks; each can also run alone on any port
(`python -m router_simulators.<ollama|bedrock|sagemaker> --port N`). Output is deterministic
(`script.py`); faults are scripted per request through `POST /_sim/faults` (same vocabulary
everywhere).
"""
