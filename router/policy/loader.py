"""Load a policy file (YAML), validate it and cross-check it; or build the built-in default.

Every problem becomes one line `FILE: PATH: problem`, e.g.
`policies/prod.yaml: routes[1].targets[0]: unknown backend 'bedrok' (known: bedrock, local)`.
`policy_warnings` lists what is valid but worth saying (`hybrid-router check` prints it): an
`ollama` backend model id that is one of Ollama's cloud models, which is not local.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from router.backends.configs import BackendConfigBase
from router.backends.registry import config_model_for
from router.errors import PolicyError as PolicyError
from router.policy.schema import ApiKey, Policy


def format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _pydantic_lines(source: str, exc: ValidationError, data: Any) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key '{loc[-1]}'" if loc else "unknown key"
            allowed = allowed_keys(data, loc[:-1])
            if allowed:
                msg += f" (allowed: {', '.join(allowed)})"
        elif err["type"] == "literal_error":
            msg = msg.replace("Input should be", "must be")
        lines.append(f"{source}: {format_loc(loc)}: {msg}")
    return lines


def _unwrap(ann: Any, node: Any) -> Any:
    """Strip Annotated/Optional; for a union of models pick the one whose `type` matches, for
    a backend config the model registered for its `type`."""
    while get_origin(ann) is Annotated:
        ann = get_args(ann)[0]
    if ann is BackendConfigBase:
        tag = node.get("type") if isinstance(node, Mapping) else None
        return config_model_for(tag) or ann
    if get_origin(ann) in (Union, types.UnionType):
        members = [a for a in get_args(ann) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        tag = node.get("type") if isinstance(node, Mapping) else None
        for m in models:
            field = m.model_fields.get("type")
            if field is not None and field.default == tag:
                return m
        if models:
            return models[0]
        return members[0] if members else ann
    return ann


def allowed_keys(data: Any, path: Sequence[int | str]) -> list[str]:
    """The keys the schema accepts at `path` inside the policy (for error messages)."""
    cur: Any = Policy
    node: Any = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return []
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            field = cur.model_fields.get(str(part))
            if field is None:
                return []
            cur = _unwrap(field.annotation, node)
        elif get_origin(cur) is dict:
            cur = _unwrap(get_args(cur)[1], node)
        elif get_origin(cur) is list:
            cur = _unwrap(get_args(cur)[0], node)
        else:
            return []
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return sorted(cur.model_fields)
    return []


def parse_policy(data: Any, source: str = "<policy>") -> Policy:
    if not isinstance(data, Mapping):
        raise PolicyError([f"{source}: (top level): must be a mapping"])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_pydantic_lines(source, exc, data)) from None
    problems = cross_check(policy)
    if problems:
        raise PolicyError([f"{source}: {p}" for p in problems])
    return policy


def cross_check(policy: Policy) -> list[str]:
    """Checks that span sections: names must resolve; private routes stay on premises."""
    return _check_backends(policy) + _check_routes(policy) + _check_names(policy)


def _check_backends(policy: Policy) -> list[str]:
    problems: list[str] = []
    known_models = sorted(policy.models)
    for name, backend in policy.backends.items():
        for logical in backend.models:
            if logical not in policy.models:
                problems.append(
                    f"backends.{name}.models.{logical}: unknown model '{logical}' "
                    f"(known: {', '.join(known_models)})"
                )
    return problems


def _check_routes(policy: Policy) -> list[str]:
    problems: list[str] = []
    known_backends = sorted(policy.backends)
    known_models = sorted(policy.models)
    for r, route in enumerate(policy.routes):
        for t, target in enumerate(route.targets):
            if target not in policy.backends:
                problems.append(
                    f"routes[{r}].targets[{t}]: unknown backend '{target}' "
                    f"(known: {', '.join(known_backends)})"
                )
            elif route.match.privacy == "private" and not policy.backends[target].local:
                problems.append(
                    f"routes[{r}].targets[{t}]: route '{route.name}' matches private requests "
                    f"but backend '{target}' is not local (private requests never leave the "
                    f"premises)"
                )
        models = route.match.model
        for m in [models] if isinstance(models, str) else models or []:
            if m not in policy.models and m.lower() not in policy.alias_table():
                problems.append(
                    f"routes[{r}].match.model: unknown model '{m}' "
                    f"(known: {', '.join(known_models)})"
                )
    return problems


def _check_names(policy: Policy) -> list[str]:
    problems: list[str] = []
    known_models = sorted(policy.models)
    names = [route.name for route in policy.routes]
    for r, name in enumerate(names):
        if names.index(name) != r:
            problems.append(f"routes[{r}].name: duplicate route name '{name}'")
    for alias, logical in policy.privacy.private_aliases.items():
        if logical not in policy.models:
            problems.append(
                f"privacy.private_aliases.{alias}: unknown model '{logical}' "
                f"(known: {', '.join(known_models)})"
            )
    key_names = [k.name for k in policy.keys]
    for i, key in enumerate(policy.keys):
        if key_names.index(key.name) != i:
            problems.append(f"keys[{i}].name: duplicate key name '{key.name}'")
    return problems


def policy_warnings(policy: Policy) -> list[str]:
    """`PATH: warning` lines for a valid policy: models a local backend forwards off the
    premises (Ollama cloud models on `ollama` backends), a route hedge delay a stream's
    first-token timeout would always beat."""
    lines: list[str] = []
    for name, cfg in policy.backends.items():
        for logical, model_id in cfg.models.items():
            why = cfg.remote_model_reason(model_id, None)
            if why is None:
                continue
            lines.append(f"backends.{name}.models.{logical}: {why}; it is not local, so private "
                         f"requests for '{logical}' are never sent to it")
            for r, route in enumerate(policy.routes):
                if route.match.privacy == "private" and name in route.targets:
                    t = route.targets.index(name)
                    lines.append(f"routes[{r}].targets[{t}]: route '{route.name}' matches "
                                 f"private requests: backend '{name}' will not serve "
                                 f"'{logical}' to them ({model_id} is an Ollama cloud model)")
    ttft = policy.stream.first_token_timeout_s
    for r, route in enumerate(policy.routes):
        if policy.hedge.enabled and route.hedge_after_s is not None \
                and route.hedge_after_s >= ttft:
            lines.append(f"routes[{r}].hedge_after_s: {route.hedge_after_s:g}s is not under "
                         f"stream.first_token_timeout_s ({ttft:g}s): a stream's first token "
                         "times out (and fails over) before it would be hedged")
    return lines


def load_policy(path: str | Path) -> Policy:
    p = Path(path)
    source = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{source}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(parse)"
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([f"{source}: {where}: invalid YAML: {problem}"]) from None
    policy = parse_policy(data, source)
    if policy.keys_file:
        keys_path = Path(policy.keys_file)
        if not keys_path.is_absolute():
            keys_path = p.parent / keys_path
        policy = policy.model_copy(update={"keys": [*policy.keys, *load_keys_file(keys_path)]})
    return policy


def load_keys_file(path: Path) -> list[ApiKey]:
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError([f"{source}: cannot load keys file: {exc}"]) from None
    if isinstance(data, Mapping):
        data = data.get("keys", [])
    try:
        return [ApiKey.model_validate(k) for k in data]
    except ValidationError as exc:
        raise PolicyError(_pydantic_lines(source, exc, data)) from None


def default_policy(ollama_host: str | None = None, aws_region: str | None = None) -> Policy:
    """Built-in policy: both gpt-oss models on local Ollama, Bedrock as the cloud fallback."""
    base_url = ollama_host or "http://127.0.0.1:11434"
    if "://" not in base_url:
        base_url = "http://" + base_url
    data: dict[str, Any] = {
        "models": {
            "gpt-oss-20b": {"vram_gb": 14, "kv_bytes_per_token": 24576},
            "gpt-oss-120b": {"vram_gb": 65, "kv_bytes_per_token": 36864},
        },
        "backends": {
            "local": {
                "type": "ollama",
                "base_url": base_url.rstrip("/"),
                "models": {"gpt-oss-20b": "gpt-oss:20b", "gpt-oss-120b": "gpt-oss:120b"},
                "parallel": 1,
                "use_nvml": True,  # the seed setup runs the router on the GPU host
            },
            "bedrock": {
                "type": "bedrock",
                "region": aws_region or "us-west-2",
                "context_window": 128000,
                "models": {
                    "gpt-oss-20b": "openai.gpt-oss-20b-1:0",
                    "gpt-oss-120b": "openai.gpt-oss-120b-1:0",
                },
                "price": {"input_per_mtok": 0.07, "output_per_mtok": 0.3},
            },
        },
        "routes": [
            {"name": "private", "match": {"privacy": "private"}, "targets": ["local"],
             "max_queue_wait_s": 30},
            {"name": "default", "targets": ["local", "bedrock"], "max_queue_wait_s": 1.0},
        ],
    }
    return parse_policy(data, "<built-in default policy>")
