"""payoff_* series through Ray's metrics agent, end to end on a real Ray instance.

A Ray actor started with PAYOFF_METRICS_TO_RAY=1 (what the Helm chart sets on every Ray pod) records metrics with
the project's own recorders; the node's metrics agent must then export them (as ray_payoff_*). With a real
Prometheus server (Debian's package) scraping that agent through the shipped `ray` job of prometheus.yml — its
Kubernetes pod discovery replaced by static targets that carry the same __meta_kubernetes_* labels, one Ray pod's
metrics port and two decoys — the series must arrive under their payoff_* names with the payoff job id in `job`,
and every query of the job-detail dashboard must return data for that job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.slow

EXPORT_ENV = {"PAYOFF_METRICS_TO_RAY": "1", "PAYOFF_METRICS_TO_RAY_INTERVAL_S": "0.5"}


def _text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def _agent_series(port: int, job: str, deadline_s: float = 60.0) -> str:
    end, text = time.monotonic() + deadline_s, ""
    while time.monotonic() < end:
        text = _text(f"http://127.0.0.1:{port}/metrics")
        if re.search(rf'^ray_payoff_learner_steps_total\{{[^}}]*job="{job}"', text, re.M):
            return text
        time.sleep(1)
    raise AssertionError(f"no ray_payoff_* series of {job} on the agent after {deadline_s:g} s")


def test_actor_metrics_reach_the_agent_and_prometheus(ray_session, tmp_path):
    ray = ray_session
    from services import metrics as sm

    assert ray.get_runtime_context().get_actor_id() is None  # this process is a driver: it never mirrors
    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    job = f"agent-{uuid.uuid4().hex[:8]}"

    # defined here, not at module level, so Ray ships it by value (the worker need not import this file)
    def _record(job: str) -> bool:
        """Runs in the actor: feed every recorder the job-detail dashboard reads. True if the mirror thread runs."""
        from judge import metrics as jm
        from learner import metrics as lm
        from rollout import metrics as rm
        from rollout.engine import GenOutput
        from services import metrics as sm

        lm.observe_step(
            job,
            {
                "loss": 0.5,
                "policy_loss": 0.4,
                "kl": 0.01,
                "step": 3,
                "version": 7,
                "samples": 8,
                "reward_mean": 0.25,
                "staleness": 1.0,
                "step_s": 0.2,
                "push_s": 0.05,
                "push_bytes": 1024.0,
                "push_failed": 0.0,
                "wait_s": 0.1,
                "idle_ratio": 0.33,
                "push_account_pack_s": 0.01,
            },
            by_source={"math": (0.5, 0.1), "ambig": (0.2, 0.05)},
        )
        outs = [GenOutput(token_ids=[1, 2, 3], logprobs=[-0.1] * 3, versions=[6] * 3, finish_reason="stop")]
        rm.observe_batch(job, "replica-a", outs, prompt_tokens=5, seconds=0.5, version=6)
        rm.observe_call(job, "replica-a", {"generate": 0.4, "put": 0.01})
        sm.QUEUE_DEPTH.labels(job).set(12)
        sm.QUEUE_PENDING.labels(job).set(4)
        sm.QUEUE_LAG.labels(job).set(8)
        for counter in (sm.QUEUE_DEAD, sm.QUEUE_STALE, sm.QUEUE_REDELIVERED):
            counter.labels(job).inc(0)
        sm.QUEUE_STALENESS.labels(job).observe(1)
        jm.REQUESTS.labels(job, "rules", "welfare").inc(4)
        jm.LATENCY.labels(job, "rules").observe(0.02)
        jm.count_failure(job, "rules", "timeout")
        return sm._ray_thread is not None and sm._ray_thread.is_alive()

    @ray.remote(num_cpus=0, runtime_env={"env_vars": EXPORT_ENV})
    class Recorder:
        def record(self, job: str) -> bool:
            return _record(job)

    actor = Recorder.remote()
    try:
        assert ray.get(actor.record.remote(job), timeout=120), "the mirror thread did not start in the actor"
        text = _agent_series(port, job)
        # counters, gauges and histogram parts, with their payoff labels, under Ray's ray_ prefix
        for name, labels in (
            ("learner_loss", 'term="kl"'),
            ("learner_samples_total", ""),
            ("learner_step_seconds_bucket", 'le="+Inf"'),
            ("rollout_policy_version", 'replica="replica-a"'),
            ("judge_failures_total", ""),
        ):
            lines = re.findall(rf'^ray_payoff_{name}\{{[^}}]*\bjob="{job}"[^}}]*\}} \S+$', text, re.M)
            assert any(labels in ln for ln in lines), (name, labels)
        assert not re.search(r"^ray_payoff_\w+_created", text, re.M)
        if "PAYOFF_METRICS_TO_RAY" not in os.environ:
            assert sm._ray_thread is None  # nothing mirrors in this process unless the env asks for it
        if PROMETHEUS is None:
            pytest.skip("prometheus not installed: the agent side was checked, the scrape config was not")
        _scrape_with_shipped_config(tmp_path, port, job)
    finally:
        ray.kill(actor)


def _scrape_with_shipped_config(tmp_path: Path, agent_port: int, job: str) -> None:
    cfg = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    ray_job = next(c for c in cfg["scrape_configs"] if c["job_name"] == "ray")
    meta = {
        "__meta_kubernetes_namespace": "payoff",
        "__meta_kubernetes_pod_label_ray_io_cluster": "rel-payoff",
        "__meta_kubernetes_pod_label_ray_io_node_type": "worker",
    }
    ray_job.pop("kubernetes_sd_configs")
    ray_job["static_configs"] = [
        {
            "targets": [f"127.0.0.1:{agent_port}"],
            "labels": {
                **meta,
                "__meta_kubernetes_pod_name": "ray-worker-gpu-0",
                "__meta_kubernetes_pod_label_ray_io_is_ray_node": "yes",
                "__meta_kubernetes_pod_container_port_name": "metrics",
            },
        },
        # the same pod's Serve port, and a pod that is not a Ray node: both must be dropped
        {
            "targets": ["127.0.0.1:1"],
            "labels": {
                **meta,
                "__meta_kubernetes_pod_name": "ray-worker-gpu-0",
                "__meta_kubernetes_pod_label_ray_io_is_ray_node": "yes",
                "__meta_kubernetes_pod_container_port_name": "serve",
            },
        },
        {
            "targets": ["127.0.0.1:2"],
            "labels": {
                **meta,
                "__meta_kubernetes_pod_name": "redis-0",
                "__meta_kubernetes_pod_container_port_name": "metrics",
            },
        },
    ]
    cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = "1s"
    cfg["rule_files"] = []
    cfg["scrape_configs"] = [ray_job]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    from services.redis_server import free_port

    web = free_port()
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{web}/api/v1"

    def query(q: str) -> list:
        body = json.loads(_text(f"{api}/query?query={urllib.parse.quote(q)}"))
        assert body["status"] == "success", (q, body)
        return body["data"]["result"]

    try:
        deadline, got = time.monotonic() + 60, []
        while time.monotonic() < deadline and not got:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(1)
            try:
                got = query(f'payoff_learner_steps_total{{job="{job}"}}')
            except OSError:
                got = []
        assert got, "nothing scraped: " + (tmp_path / "prometheus.log").read_text()[-2000:]
        labels = got[0]["metric"]
        assert float(got[0]["value"][1]) == 1.0
        assert labels["pod"] == "ray-worker-gpu-0" and labels["namespace"] == "payoff"
        assert labels["ray_cluster"] == "rel-payoff" and not any(k.startswith("otel_scope") for k in labels)
        targets = json.loads(_text(f"{api}/targets"))["data"]["activeTargets"]
        assert [t["labels"]["pod"] for t in targets] == ["ray-worker-gpu-0"]  # decoys dropped by relabelling
        assert not query('count({__name__=~"ray_payoff_.+"})')  # all renamed
        assert query('count({__name__=~"ray_.+"})')  # Ray's own series come along
        values = json.loads(_text(f"{api}/label/job/values?match[]=payoff_queue_depth"))["data"]
        assert job in values  # the dashboards' `job` variable lists the payoff job
        time.sleep(3)  # a few scrapes, so rate() has two points
        dash = json.loads((ROOT / "deploy" / "grafana" / "payoff-job.json").read_text())
        for p in dash["panels"]:
            for t in p["targets"]:
                q = t["expr"].replace("$__rate_interval", "1m").replace("$job", job)
                assert query(q), f"job detail / {p['title']}: no data for {q}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
