#!/usr/bin/env python3
"""Deploy gpt-oss-20b from SageMaker JumpStart to a real-time endpoint the router can use.

    python deploy/aws/deploy_sagemaker.py --role-arn arn:aws:iam::123456789012:role/SageMaker \
        --region us-west-2 --endpoint-name gpt-oss-20b-endpoint --accept-eula

`--dry-run` prints the plan as JSON and imports nothing from the SageMaker SDK. A real deploy
needs the SDK v3 (`pip install 'hybrid-router[deploy]'`), AWS credentials allowed to create
models, endpoint configs and endpoints, and an execution role for SageMaker (`--role-arn`).
It uses `ModelBuilder.from_jumpstart_config(...)`, then `.build()` and `.deploy(...)`
(docs/protocols.md, SageMaker). The endpoint bills per instance-hour until you delete it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any

MODEL_ID = "openai-reasoning-gpt-oss-20b"
# One NVIDIA L40S (48 GB): the MXFP4 weights (~13 GB) plus room for a long KV cache, and the
# cheapest single-GPU size that does so; override if JumpStart lists another for your region.
DEFAULT_INSTANCE_TYPE = "ml.g6e.xlarge"
DEFAULT_ENDPOINT_NAME = "gpt-oss-20b-endpoint"
DEFAULT_REGION = "us-west-2"
INSTALL_HINT = "pip install 'hybrid-router[deploy]'"
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")


def _endpoint_name(value: str) -> str:
    if not _ENDPOINT_NAME.match(value):
        raise argparse.ArgumentTypeError(
            "endpoint names are 1-63 letters, digits and single hyphens, not starting with '-'"
        )
    return value


def _instance_type(value: str) -> str:
    if not value.startswith("ml."):
        raise argparse.ArgumentTypeError("SageMaker instance types start with 'ml.'")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deploy_sagemaker.py",
        description="Deploy gpt-oss-20b (SageMaker JumpStart) for hybrid-router.",
    )
    p.add_argument("--endpoint-name", type=_endpoint_name, default=DEFAULT_ENDPOINT_NAME)
    p.add_argument("--instance-type", type=_instance_type, default=DEFAULT_INSTANCE_TYPE,
                   help=f"GPU instance (default {DEFAULT_INSTANCE_TYPE}: 1x L40S 48 GB)")
    p.add_argument("--role-arn", help="IAM execution role SageMaker assumes (needed to deploy)")
    p.add_argument("--region", default=DEFAULT_REGION)
    p.add_argument("--model-id", default=MODEL_ID, help=f"JumpStart model id (default {MODEL_ID})")
    p.add_argument("--accept-eula", action="store_true",
                   help="accept the model's end-user license agreement (JumpStart asks for it)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan as JSON and exit; imports nothing from the SageMaker SDK")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.role_arn is not None and not _ROLE_ARN.match(args.role_arn):
        parser.error("--role-arn must look like arn:aws:iam::<12-digit account>:role/<name>")
    if not args.dry_run and args.role_arn is None:
        parser.error("--role-arn is required to deploy (or use --dry-run)")
    return args


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """What a deploy would do, plus the router policy entry that uses the endpoint."""
    return {
        "action": "deploy",
        "sdk": "sagemaker>=3: ModelBuilder.from_jumpstart_config(...).build().deploy(...)",
        "jumpstart_model_id": args.model_id,
        "accept_eula": args.accept_eula,
        "endpoint_name": args.endpoint_name,
        "instance_type": args.instance_type,
        "initial_instance_count": 1,
        "region": args.region,
        "role_arn": args.role_arn,
        "router_backend": {
            "type": "sagemaker",
            "region": args.region,
            "endpoint_name": args.endpoint_name,
            "models": {"gpt-oss-20b": "openai/gpt-oss-20b"},
        },
    }


def deploy(args: argparse.Namespace) -> int:
    os.environ["AWS_DEFAULT_REGION"] = args.region  # the SDK's default session follows it
    try:
        from sagemaker.core.jumpstart.configs import (  # type: ignore[import-not-found]
            JumpStartConfig,
        )
        from sagemaker.core.training.configs import Compute  # type: ignore[import-not-found]
        from sagemaker.serve import ModelBuilder  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"The SageMaker Python SDK v3 is not installed ({exc}).\n"
              f"Install it with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    builder = ModelBuilder.from_jumpstart_config(
        jumpstart_config=JumpStartConfig(model_id=args.model_id, accept_eula=args.accept_eula),
        compute=Compute(instance_type=args.instance_type),
        role_arn=args.role_arn,
    )
    builder.build(model_name=f"{args.endpoint_name}-model")
    endpoint = builder.deploy(endpoint_name=args.endpoint_name)
    name = getattr(endpoint, "endpoint_name", args.endpoint_name)
    print(json.dumps({"deployed": name, "region": args.region,
                      "router_backend": plan(args)["router_backend"]}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print(json.dumps(plan(args), indent=2))
        return 0
    return deploy(args)


if __name__ == "__main__":
    sys.exit(main())
