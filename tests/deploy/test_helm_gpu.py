"""The Helm chart on GPU pools: GPU worker groups scheduled on GPU nodes, the optional learner RayJob (its
worker group, entrypoint script and job spec, validated by the gateway's own validation), and the monitors'
selectors against the Ray pods (helpers in tests/deploy/test_helm.py)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.deploy.test_helm import (
    CHART,
    GPU_VALUES,
    ROOT,
    by_kind,
    kuberay_labels,
    ray_cluster,
    render,
    selects,
)


def test_gpu_render_schedules_on_gpu_nodes():
    rs = by_kind(render(GPU_VALUES))["RayService"][0]["spec"]["rayClusterConfig"]
    gpu = next(g for g in rs["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["replicas"] == 2 and gpu["rayStartParams"]["num-gpus"] == "4"
    pod = gpu["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 4 and res["requests"]["nvidia.com/gpu"] == 4
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["containers"][0]["image"].endswith(":0.1.0-cuda")
    cpu = next(g for g in rs["workerGroupSpecs"] if g["groupName"] == "cpu")
    assert "nvidia.com/gpu" not in json.dumps(cpu["template"]["spec"]["containers"][0]["resources"])


def test_gpu_render_learner_rayjob():
    """The optional RayJob: GPU worker group as configured, the entrypoint script and the job spec from its
    ConfigMap mounted on the head, a Redis database of its own, and a job spec that the gateway's own
    validation accepts on exactly the cluster the RayJob creates."""
    from gateway.validation import ClusterInfo, validate_job

    kinds = by_kind(render(GPU_VALUES))
    job = kinds["RayJob"][0]
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["activeDeadlineSeconds"] == 7200
    assert spec["entrypoint"] == "sh /etc/payoff/learner-job/run.sh"
    cluster = spec["rayClusterSpec"]
    [gpu] = cluster["workerGroupSpecs"]
    assert gpu["replicas"] == gpu["minReplicas"] == gpu["maxReplicas"] == 2
    assert gpu["rayStartParams"]["num-gpus"] == "2" and gpu["rayStartParams"]["metrics-export-port"] == "8080"
    pod = gpu["template"]["spec"]
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 2 and res["requests"]["nvidia.com/gpu"] == 2
    # maps merge with the chart's default (Helm); lists replace it
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true", "cloud.example/accelerator": "h100"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"}
    ]
    assert pod["containers"][0]["image"].endswith(":0.1.0-cuda")
    head = cluster["headGroupSpec"]["template"]["spec"]
    [mount] = [m for m in head["containers"][0]["volumeMounts"] if m["name"] == "learner-job"]
    [volume] = [v for v in head["volumes"] if v["name"] == "learner-job"]
    cm = next(c for c in kinds["ConfigMap"] if c["metadata"]["name"] == volume["configMap"]["name"])
    assert mount["mountPath"] == "/etc/payoff/learner-job" and spec["entrypoint"].endswith(
        mount["mountPath"] + "/run.sh"
    )
    assert cm["data"]["run.sh"] == (CHART / "files" / "learner-job.sh").read_text()
    for p in (head, pod):
        env = {e["name"]: e.get("value") for e in p["containers"][0]["env"]}
        assert env["REDIS_URL"] == "redis://rel-payoff-redis:6379/1"  # not the RayService's database 0
    # the job fits the RayJob's cluster as the gateway sees it (Ray counts the container's CPU limit)
    cpus = float(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"]) + gpu["replicas"] * float(
        pod["containers"][0]["resources"]["limits"]["cpu"]
    )
    gpus = gpu["replicas"] * int(gpu["rayStartParams"]["num-gpus"])
    job_spec = validate_job(
        cm["data"]["job.yaml"].encode(), "application/yaml", ClusterInfo(cpus=cpus, gpus=gpus)
    )
    assert job_spec.learner.gpus_per_worker >= 1  # the learner trains on the GPU group
    with pytest.raises(Exception, match="GPU"):  # and the same spec on a cluster without GPUs is refused
        validate_job(cm["data"]["job.yaml"].encode(), "application/yaml", ClusterInfo(cpus=cpus, gpus=0))


def test_monitors_select_every_ray_pod_and_only_the_rayservice_head_serves_the_gateway():
    docs = render(GPU_VALUES)
    kinds = by_kind(docs)
    assert "ServiceMonitor" not in kinds  # exportToRay (default): everything comes through Ray's agent
    [pm] = kinds["PodMonitor"]
    assert pm["metadata"]["labels"]["release"] == "kps"
    eps = {e["port"]: e for e in pm["spec"]["podMetricsEndpoints"]}
    assert set(eps) == {"metrics", "payoff-http"}
    # the learner RayJob's private gateway answers /metrics only with the scrape token; Ray's agent has none
    assert eps["payoff-http"]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "rel-payoff-api-keys", "key": "PAYOFF_METRICS_TOKEN"},
    }
    assert "authorization" not in eps["metrics"]
    rename = eps["metrics"]["metricRelabelings"][0]
    assert rename == {
        "sourceLabels": ["__name__"],
        "regex": "ray_(payoff_.+)",
        "targetLabel": "__name__",
        "replacement": "$1",
        "action": "replace",
    }
    gateway_svc = next(s for s in kinds["Service"] if s["metadata"]["name"] == "rel-payoff-gateway")
    ray_pods = []
    for d in kinds["RayService"] + kinds["RayJob"]:
        cluster = ray_cluster(d)
        ray_pods.append(
            (
                d["kind"],
                "head",
                kuberay_labels(d, cluster["headGroupSpec"]["template"], "head"),
                cluster["headGroupSpec"]["template"],
            )
        )
        for g in cluster["workerGroupSpecs"]:
            ray_pods.append(
                (d["kind"], g["groupName"], kuberay_labels(d, g["template"], "worker"), g["template"])
            )
    assert [(k, g) for k, g, _, _ in ray_pods] == [
        ("RayService", "head"),
        ("RayService", "cpu"),
        ("RayService", "gpu"),
        ("RayJob", "head"),
        ("RayJob", "gpu"),
    ]
    for kind, group, labels, template in ray_pods:
        assert selects(pm["spec"]["selector"]["matchLabels"], labels), (kind, group)
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == 8080, (kind, group)
        is_gateway_head = kind == "RayService" and group == "head"
        assert selects(gateway_svc["spec"]["selector"], labels) == is_gateway_head, (kind, group)
        assert ("payoff-http" in ports) == (kind == "RayJob" and group == "head")
        # every Ray pod may run a gateway (a Serve replica, the RayJob's `payoff serve`): each has the token
        env = {e["name"]: e for e in template["spec"]["containers"][0]["env"]}
        ref = env["PAYOFF_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "rel-payoff-api-keys" and ref["key"] == "PAYOFF_METRICS_TOKEN", (kind, group)
    redis = kinds["StatefulSet"][0]["spec"]["template"]["metadata"]["labels"]
    assert not selects(pm["spec"]["selector"]["matchLabels"], redis)


def test_learner_job_script(tmp_path):
    """files/learner-job.sh against a stand-in `payoff` that records its calls: it waits for the gateway,
    submits the spec beside it, exits with the job's status and stops the gateway; and it gives up when the
    gateway process dies. Every `payoff` subcommand and flag it uses exists in the real CLI."""
    import re

    from payoff.cli import COMMANDS

    script = (CHART / "files" / "learner-job.sh").read_text()
    calls = re.findall(r"^\s*(?:until\s+)?payoff (\w+)((?: --?[\w-]+)*)", script, re.M)
    assert [c for c, _ in calls] == ["serve", "jobs", "submit"]
    for cmd, _ in calls:
        assert cmd in COMMANDS
    helps = {
        cmd: subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "payoff")
                if (ROOT / ".venv" / "bin" / "payoff").exists()
                else "payoff",
                cmd,
                "--help",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        for cmd, _ in calls
    }
    for flag in ("--host", "--port", "--max-jobs"):
        assert flag in helps["serve"] and flag in script
    assert "--limit" in helps["jobs"] and "--watch" in helps["submit"]

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "run.sh").write_text(script)
    (job_dir / "job.yaml").write_text("name: x\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "payoff").write_text(f"""#!/bin/sh
echo "$* url=$PAYOFF_URL key=$PAYOFF_API_KEY" >> {log}
case "$1" in
  serve) [ -n "${{SERVE_DIES:-}}" ] && exit 3; trap 'echo stopped >> {log}; exit 0' TERM; while :; do sleep 0.1; done ;;
  jobs) n=$(grep -c '^jobs' {log}); [ -z "${{SERVE_DIES:-}}" ] && [ "$n" -ge 2 ] ;;
  submit) exit "${{SUBMIT_RC:-0}}" ;;
esac
""")
    (bin_dir / "payoff").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PAYOFF_ADMIN_KEY": "k" * 30}

    def run(**extra):
        log.write_text("")
        res = subprocess.run(
            ["sh", str(job_dir / "run.sh")], env={**env, **extra}, capture_output=True, text=True, timeout=60
        )
        return res, log.read_text().splitlines()

    res, lines = run()
    assert res.returncode == 0, res.stderr
    [serve] = [ln for ln in lines if ln.startswith("serve ")]  # started in the background: any position
    assert serve.startswith("serve --host 0.0.0.0 --port 8088 --max-jobs 1 url=http://127.0.0.1:8088 key=kkk")
    rest = [ln for ln in lines if ln != serve]
    assert [ln.split()[0] for ln in rest] == [
        "jobs",
        "jobs",
        "submit",
        "stopped",
    ]  # polls until the gateway answers
    assert rest[2].startswith(f"submit {job_dir}/job.yaml --watch url=http://127.0.0.1:8088")
    res, lines = run(SUBMIT_RC="1")  # the job failed: so does the RayJob
    assert res.returncode == 1 and lines[-1] == "stopped"
    res, lines = run(SERVE_DIES="1")
    assert res.returncode == 1 and "payoff serve exited" in res.stderr and "submit" not in " ".join(lines)
