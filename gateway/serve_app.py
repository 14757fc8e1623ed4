"""The gateway as a Ray Serve ingress deployment (the same ASGI app uvicorn serves).

    serve.run(build_serve_app(settings), name="gateway", route_prefix="/")

Secrets (the admin key, the key pepper) are not passed as deployment arguments, which Serve records; each
replica reads them from its environment (PAYOFF_ADMIN_KEY, PAYOFF_API_KEY_PEPPER): set them in the container
env from a secret on a cluster, or pass `secrets` here to put them in the replica's runtime_env. Every
replica runs the job runner loop; the Redis lease lets exactly one of them act.
"""

from __future__ import annotations

from ray import serve

from gateway.settings import GatewaySettings

SECRET_FIELDS = {"admin_key", "pepper", "metrics_token"}


@serve.deployment(
    name="gateway", health_check_period_s=5, graceful_shutdown_timeout_s=10, max_ongoing_requests=256
)
@serve.ingress()
class GatewayIngress:
    def __init__(self, settings: dict) -> None:
        # env (secrets, PAYOFF_* knobs) first, then the explicit, non-secret settings
        self.settings = GatewaySettings.from_env(**settings)

    def __serve_build_asgi_app__(self):
        from gateway.app import build_asgi

        return build_asgi(self.settings)


def build_serve_app(
    settings: GatewaySettings,
    replicas: int = 1,
    num_cpus: float = 0.25,
    secrets: dict[str, str] | None = None,
):
    """The gateway Serve application. `secrets` (env var → value) go to the replicas' runtime_env."""
    public = settings.model_dump(mode="json", exclude=SECRET_FIELDS)
    actor: dict = {"num_cpus": num_cpus}
    if secrets:
        actor["runtime_env"] = {"env_vars": dict(secrets)}
    return GatewayIngress.options(num_replicas=replicas, ray_actor_options=actor).bind(public)
