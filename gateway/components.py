"""The job components the gateway owns: the job's rollout app and its judge app on Ray Serve.

Both deploy without waiting (`serve.run_many(..., wait_for_applications_running=False)`), so one slow model
load never stalls the runner; `poll` reads the app's status from the Serve controller by name, which any
gateway process can do, and reports Serve's own message (a replica's constructor error, a resource shortage)
as the cause when deploying fails. Importing this module registers both components.
"""
from __future__ import annotations

from services.jobs import (
    ComponentStatus,
    JobRecord,
    RunContext,
    judge_app_name,
    judge_cpus,
    register_component,
    rollout_app_name,
    served_app_name,
)


def app_status(app_name: str) -> ComponentStatus:
    """Serve's view of one application as a component status."""
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return ComponentStatus(state="absent", message=f"no Serve application {app_name!r}")
    status = str(getattr(app.status, "value", app.status))
    notes = [app.message] if app.message else []
    for name, dep in app.deployments.items():
        if dep.message:
            notes.append(f"{name}: {dep.message}")
    message = "; ".join(notes)
    if status == "RUNNING":
        return ComponentStatus(state="running", message=message)
    if status == "UNHEALTHY":  # Serve is replacing replicas; the app still serves
        return ComponentStatus(state="running", message=f"unhealthy: {message}")
    if status == "DEPLOY_FAILED":
        return ComponentStatus(state="failed", message=message or "deployment failed")
    if status == "DELETING":
        return ComponentStatus(state="absent", message="being deleted")
    return ComponentStatus(state="starting", message=message or status.lower())


def deploy(app, app_name: str, route_prefix: str) -> None:
    from ray import serve

    serve.run_many([serve.RunTarget(target=app, name=app_name, route_prefix=route_prefix)],
                   wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)


def delete(app_name: str) -> None:
    from ray import serve

    if app_name in serve.status().applications:
        serve.delete(app_name)


def rollout_config(job: JobRecord, redis_url: str | None, checkpoint: str | None = None):
    """The rollout app's config for a job; with `checkpoint`, one replica serving it outside the job (no
    weight pushes, no trajectory queue)."""
    from rollout.serve import RolloutConfig

    spec, r = job.spec, job.spec.rollout
    options: dict = {"dtype": spec.model.dtype}
    if r.engine == "vllm":
        options["max_model_len"] = spec.model.max_model_len
    in_job = checkpoint is None
    return RolloutConfig(model=checkpoint or spec.model.path, engine=r.engine, engine_options=options,
                         replicas=r.replicas if in_job else 1, cpus_per_replica=r.cpus_per_replica,
                         gpus_per_replica=r.gpus_per_replica, job_id=job.id if in_job else None,
                         redis_url=redis_url if in_job else None,
                         judge_app=judge_app_name(job.id) if in_job else None)


class _ServeApp:
    name = "app"

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def app_name(self, job: JobRecord) -> str:
        raise NotImplementedError

    def build(self, job: JobRecord):
        raise NotImplementedError

    def start(self, job: JobRecord) -> None:
        deploy(self.build(job), self.app_name(job), f"/jobs/{job.id}/{self.name}")

    def poll(self, job: JobRecord) -> ComponentStatus:
        return app_status(self.app_name(job))

    def stop(self, job: JobRecord) -> None:
        delete(self.app_name(job))


class RolloutComponent(_ServeApp):
    """The job's rollout replicas (OpenAI chat, native generate, episodes, weight receiver)."""
    name = "rollout"

    def app_name(self, job: JobRecord) -> str:
        return rollout_app_name(job.id)

    def build(self, job: JobRecord):
        from rollout.serve import build_app

        return build_app(rollout_config(job, self.ctx.redis_url))


class JudgeComponent(_ServeApp):
    """The job's judge replicas (GTAlign welfare, preference, safety, GPO)."""
    name = "judge"

    def app_name(self, job: JobRecord) -> str:
        return judge_app_name(job.id)

    def build(self, job: JobRecord):
        from judge.config import JudgeConfig
        from judge.serve import build_app

        cfg = JudgeConfig.from_spec(job.spec.judge, job=job.id)
        serve_cfg = cfg.serve.model_copy(update={"num_cpus": judge_cpus(job.spec)})
        cfg = cfg.model_copy(update={"serve": serve_cfg})
        return build_app(cfg)


def deploy_checkpoint(job: JobRecord, path: str) -> str:
    """Serve a checkpoint of a job (one replica, the job's engine and resources); returns the app name."""
    from rollout.serve import build_app

    name = served_app_name(job.id)
    deploy(build_app(rollout_config(job, None, checkpoint=path)), name, f"/jobs/{job.id}/served")
    return name


register_component("rollout", RolloutComponent, order=10)
register_component("judge", JudgeComponent, order=20)
