"""The rollout service as a job component: the job's rollout replicas as a Ray Serve app, and the
serving of a finished job's checkpoint. Importing this module registers both (services/jobs.py,
services/serve_apps.py); the job spec → replica config mapping is `RolloutConfig.from_job`.
"""

from __future__ import annotations

from services.jobs import JobRecord, register_component, rollout_app_name, served_app_name
from services.serve_apps import ServeAppComponent, deploy, register_checkpoint_server


class RolloutComponent(ServeAppComponent):
    """The job's rollout replicas (OpenAI chat, native generate, episodes, T-PPO windows, weight receiver)."""

    name = "rollout"

    def app_name(self, job: JobRecord) -> str:
        return rollout_app_name(job.id)

    def build(self, job: JobRecord):
        from rollout.serve import RolloutConfig, build_app

        return build_app(RolloutConfig.from_job(job.id, job.spec, self.ctx.redis_url))


def deploy_checkpoint(job: JobRecord, path: str) -> str:
    """Serve a checkpoint of a job (one replica, the job's engine and resources); returns the app name."""
    from rollout.serve import RolloutConfig, build_app

    name = served_app_name(job.id)
    deploy(build_app(RolloutConfig.for_checkpoint(job.spec, path)), name, f"/jobs/{job.id}/served")
    return name


register_component("rollout", RolloutComponent, order=10)
register_checkpoint_server(deploy_checkpoint)
