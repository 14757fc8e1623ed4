"""Job components that are Ray Serve applications (a job's rollout app, its judge app), and the registry
of the function that serves a job's checkpoint.

Both deploy without waiting (`serve.run_many(..., wait_for_applications_running=False)`), so one slow model
load never stalls the runner; `poll` reads the app's status from the Serve controller by name, which any
gateway process can do, and reports Serve's own message (a replica's constructor error, a resource
shortage) as the cause when deploying fails. The service that owns an app subclasses `ServeAppComponent`
and registers it (rollout/component.py, judge/component.py).
"""

from __future__ import annotations

from collections.abc import Callable

from services.jobs import ComponentStatus, JobRecord, RunContext


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

    serve.run_many(
        [serve.RunTarget(target=app, name=app_name, route_prefix=route_prefix)],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )


def delete(app_name: str) -> None:
    from ray import serve

    if app_name in serve.status().applications:
        serve.delete(app_name)


class ServeAppComponent:
    """A job component deployed as one Serve app named from the job id (re-attachable by name)."""

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


# ---------------------------------------------------------------- serving a job's checkpoint
CheckpointServer = Callable[[JobRecord, str], str]
_CHECKPOINT_SERVER: list[CheckpointServer] = []


def register_checkpoint_server(fn: CheckpointServer) -> None:
    """The rollout service registers how to serve a checkpoint (one replica); the gateway calls it."""
    _CHECKPOINT_SERVER[:] = [fn]


def serve_checkpoint(job: JobRecord, path: str) -> str:
    """Deploy a Serve app answering chat from `path` for `job`; returns the app name."""
    if not _CHECKPOINT_SERVER:
        raise RuntimeError("no checkpoint server registered (the rollout component module is not loaded)")
    return _CHECKPOINT_SERVER[0](job, path)
