"""Serve application builders for a declarative deployment (KubeRay RayService `serveConfigV2`, `serve deploy`).

Ray Serve calls an `import_path` builder with exactly one argument, the app's `args` dict, and converts it to a
pydantic model only when the parameter's annotation is a class at runtime. The project's builders
(`rollout.serve:build_app`, `judge.serve:build_app`, `gateway.serve_app:build_serve_app`) annotate with strings
(`from __future__ import annotations`) and the gateway's takes extra parameters, so Serve would hand them a raw
dict. These wrappers validate the args into each component's config model and call the real builders.
The image puts the repository root on PYTHONPATH, so `deploy.serve_apps:<name>` imports there.
"""

from __future__ import annotations

from typing import Any


def rollout(args: dict[str, Any]):
    """`args`: a RolloutConfig."""
    from rollout.serve import RolloutConfig, build_app

    return build_app(RolloutConfig.model_validate(args or {}))


def judge(args: dict[str, Any]):
    """`args`: a JudgeConfig."""
    from judge.config import JudgeConfig
    from judge.serve import build_app

    return build_app(JudgeConfig.model_validate(args or {}))


def gateway(args: dict[str, Any]):
    """`args`: non-secret GatewaySettings, plus `replicas` and `num_cpus` of the ingress deployment.

    Secrets (PAYOFF_ADMIN_KEY, PAYOFF_API_KEY_PEPPER) are read by each replica from its environment.
    """
    from gateway.serve_app import build_serve_app
    from gateway.settings import GatewaySettings

    args = dict(args or {})
    replicas = int(args.pop("replicas", 1))
    num_cpus = float(args.pop("num_cpus", 0.25))
    # from_env fills what args leave out (REDIS_URL, PAYOFF_DATA_DIR); the builder drops the secret fields
    return build_serve_app(GatewaySettings.from_env(**args), replicas=replicas, num_cpus=num_cpus)
