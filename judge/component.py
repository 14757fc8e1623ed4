"""The judge service as a job component: the job's judge replicas (GTAlign welfare, preference, safety,
GPO) as a Ray Serve app. Importing this module registers it; the job spec → judge config mapping is
`JudgeConfig.from_spec`.
"""

from __future__ import annotations

from services.jobs import JobRecord, judge_app_name, judge_cpus, register_component
from services.serve_apps import ServeAppComponent


class JudgeComponent(ServeAppComponent):
    name = "judge"

    def app_name(self, job: JobRecord) -> str:
        return judge_app_name(job.id)

    def build(self, job: JobRecord):
        from judge.config import JudgeConfig
        from judge.serve import build_app

        cfg = JudgeConfig.from_spec(job.spec.judge, job=job.id)
        serve_cfg = cfg.serve.model_copy(update={"num_cpus": judge_cpus(job.spec)})
        return build_app(cfg.model_copy(update={"serve": serve_cfg}))


register_component("judge", JudgeComponent, order=20)
