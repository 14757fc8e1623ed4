"""The Helm chart: lint, offline render (default; GPU with the learner RayJob and the PodMonitor; external Redis +
ingress + ServiceMonitor), strict Kubernetes schema validation of every rendered core object and of every Ray pod
template, KubeRay CRD validation of the RayService and the RayJob, the monitors' selectors checked against the
pods they must (and must not) select, the RayJob's job spec validated by the gateway's own validation against
the RayJob cluster's capacity, its entrypoint script run against a stand-in `payoff`, and the Serve
applications the RayService declares built for real through Ray Serve's own builder entry point."""
from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk not installed (pip install helm-python-sdk)")
kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "payoff"
KUBERAY = ROOT.parent / "shared" / "schemas" / "kuberay"
KUBE_VERSION = "1.30"

GPU_VALUES = {"image": {"tag": "0.1.0-cuda"},
              "ray": {"gpuWorkers": {"enabled": True, "gpus": 4, "replicas": 2}},
              "serve": {"rollout": {"config": {"gpus_per_replica": 1, "engine": "vllm"}}},
              "learnerJob": {"enabled": True, "activeDeadlineSeconds": 7200,
                             "gpuWorkers": {"replicas": 2, "gpus": 2,
                                            "nodeSelector": {"cloud.example/accelerator": "h100"},
                                            "tolerations": [{"key": "dedicated", "operator": "Equal",
                                                             "value": "training", "effect": "NoSchedule"}]}},
              "metrics": {"podMonitor": {"enabled": True, "labels": {"release": "kps"}}}}
EXTERNAL_VALUES = {"redis": {"enabled": False, "externalUrl": "redis://redis.example:6379/0"},
                   "gateway": {"ingress": {"enabled": True, "className": "nginx", "tlsSecret": "payoff-tls"}},
                   "metrics": {"exportToRay": False, "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
                               "podMonitor": {"enabled": True}},
                   "learnerJob": {"enabled": True, "redisUrl": "redis://redis.example:6379/3"},
                   "apiKeys": {"existingSecret": "my-keys"}}


def render(values: dict | None = None) -> list[dict]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values or {}, name="rel", namespace="payoff", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def _strict(schema):
    """Reject unknown fields where the CRD lists its properties (the API server's strict field validation)."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for v in schema.values():
            _strict(v)
    elif isinstance(schema, list):
        for v in schema:
            _strict(v)
    return schema


def crd_validator(kind: str):
    """The v1 openAPIV3Schema of a KubeRay CRD (RayService, RayJob, RayCluster), strict."""
    path = KUBERAY / f"ray.io_{kind.lower()}s.yaml"
    if not path.exists():
        pytest.skip(f"KubeRay CRD schemas not found at {KUBERAY}")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_strict(copy.deepcopy(version["schema"]["openAPIV3Schema"])))


@pytest.mark.parametrize("values", [{}, GPU_VALUES, EXTERNAL_VALUES], ids=["default", "gpu", "external"])
def test_lint_clean(values):
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == [] and report["messages"] == [], report


def ray_cluster(d: dict) -> dict:
    """The RayCluster spec inside a RayService (rayClusterConfig) or a RayJob (rayClusterSpec)."""
    return d["spec"]["rayClusterConfig"] if d["kind"] == "RayService" else d["spec"]["rayClusterSpec"]


def ray_pod_templates(d: dict) -> list[dict]:
    cluster = ray_cluster(d)
    return [g["template"] for g in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]]


def selects(match_labels: dict, pod_labels: dict) -> bool:
    return match_labels.items() <= pod_labels.items()


def kuberay_labels(d: dict, template: dict, node_type: str) -> dict:
    """A pod's labels once KubeRay has created it from `template` (KubeRay adds its ray.io/* labels)."""
    return {**template["metadata"]["labels"], "ray.io/is-ray-node": "yes", "ray.io/node-type": node_type,
            "ray.io/cluster": d["metadata"]["name"]}


@pytest.mark.parametrize("values", [{}, GPU_VALUES, EXTERNAL_VALUES], ids=["default", "gpu", "external"])
def test_rendered_objects_validate(values):
    docs = render(values)
    validators = {}
    for d in docs:
        if d["apiVersion"] == "ray.io/v1":
            assert d["kind"] in ("RayService", "RayJob"), d["kind"]
            if d["kind"] not in validators:
                validators[d["kind"]] = crd_validator(d["kind"])
            errors = sorted(validators[d["kind"]].iter_errors(d), key=str)
            assert not errors, f"{d['kind']}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
            # pod templates inside the CRD are core PodTemplateSpecs: validate them strictly too
            for template in ray_pod_templates(d):
                kv.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                             "template": template}, KUBE_VERSION, strict=True)
        elif d["apiVersion"] == "monitoring.coreos.com/v1":
            # no CRD schema of the Prometheus Operator is kept: check the fields the chart relies on
            assert d["kind"] in ("ServiceMonitor", "PodMonitor")
            eps = d["spec"]["endpoints" if d["kind"] == "ServiceMonitor" else "podMetricsEndpoints"]
            assert eps and all(e["port"] and e["path"].startswith("/") and e["honorLabels"] is True for e in eps)
            assert d["spec"]["selector"]["matchLabels"]
        else:
            kv.validate(d, KUBE_VERSION, strict=True)


def test_default_render_contents():
    kinds = by_kind(render())
    assert set(kinds) == {"RayService", "Service", "StatefulSet", "Secret", "ConfigMap"}
    sts = kinds["StatefulSet"][0]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    secret = kinds["Secret"][0]
    for key in ("PAYOFF_ADMIN_KEY", "PAYOFF_API_KEY_PEPPER"):
        assert len(base64.b64decode(secret["data"][key])) >= 24  # generated, long enough for GatewaySettings
    rs = kinds["RayService"][0]["spec"]["rayClusterConfig"]
    assert [g["groupName"] for g in rs["workerGroupSpecs"]] == ["cpu"]
    head_env = {e["name"]: e for e in rs["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert head_env["REDIS_URL"]["value"] == "redis://rel-payoff-redis:6379/0"
    assert head_env["PAYOFF_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    # every Ray pod mirrors payoff_* to Ray's metrics agent, which listens on the `metrics` port
    from services.metrics import RAY_EXPORT_ENV
    for g in [rs["headGroupSpec"], *rs["workerGroupSpecs"]]:
        c = g["template"]["spec"]["containers"][0]
        assert {"name": RAY_EXPORT_ENV, "value": "1"} in c["env"]
        assert g["rayStartParams"]["metrics-export-port"] == "8080"
        assert {"containerPort": 8080, "name": "metrics"} in c["ports"]
    # every dashboard of deploy/grafana ships in the sidecar ConfigMap, byte for byte
    cm = kinds["ConfigMap"][0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = {p.name: p.read_text() for p in (ROOT / "deploy" / "grafana").glob("*.json")}
    assert shipped and {k: v + "\n" for k, v in cm["data"].items()} == shipped


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
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "training",
                                   "effect": "NoSchedule"}]
    assert pod["containers"][0]["image"].endswith(":0.1.0-cuda")
    head = cluster["headGroupSpec"]["template"]["spec"]
    [mount] = [m for m in head["containers"][0]["volumeMounts"] if m["name"] == "learner-job"]
    [volume] = [v for v in head["volumes"] if v["name"] == "learner-job"]
    cm = next(c for c in kinds["ConfigMap"] if c["metadata"]["name"] == volume["configMap"]["name"])
    assert mount["mountPath"] == "/etc/payoff/learner-job" and spec["entrypoint"].endswith(mount["mountPath"] + "/run.sh")
    assert cm["data"]["run.sh"] == (CHART / "files" / "learner-job.sh").read_text()
    for p in (head, pod):
        env = {e["name"]: e.get("value") for e in p["containers"][0]["env"]}
        assert env["REDIS_URL"] == "redis://rel-payoff-redis:6379/1"  # not the RayService's database 0
    # the job fits the RayJob's cluster as the gateway sees it (Ray counts the container's CPU limit)
    cpus = float(cluster["headGroupSpec"]["rayStartParams"]["num-cpus"]) + gpu["replicas"] * float(
        pod["containers"][0]["resources"]["limits"]["cpu"])
    gpus = gpu["replicas"] * int(gpu["rayStartParams"]["num-gpus"])
    job_spec = validate_job(cm["data"]["job.yaml"].encode(), "application/yaml", ClusterInfo(cpus=cpus, gpus=gpus))
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
    rename = eps["metrics"]["metricRelabelings"][0]
    assert rename == {"sourceLabels": ["__name__"], "regex": "ray_(payoff_.+)", "targetLabel": "__name__",
                      "replacement": "$1", "action": "replace"}
    gateway_svc = next(s for s in kinds["Service"] if s["metadata"]["name"] == "rel-payoff-gateway")
    ray_pods = []
    for d in kinds["RayService"] + kinds["RayJob"]:
        cluster = ray_cluster(d)
        ray_pods.append((d["kind"], "head", kuberay_labels(d, cluster["headGroupSpec"]["template"], "head"),
                         cluster["headGroupSpec"]["template"]))
        for g in cluster["workerGroupSpecs"]:
            ray_pods.append((d["kind"], g["groupName"], kuberay_labels(d, g["template"], "worker"), g["template"]))
    assert [(k, g) for k, g, _, _ in ray_pods] == [("RayService", "head"), ("RayService", "cpu"),
                                                   ("RayService", "gpu"), ("RayJob", "head"), ("RayJob", "gpu")]
    for kind, group, labels, template in ray_pods:
        assert selects(pm["spec"]["selector"]["matchLabels"], labels), (kind, group)
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == 8080, (kind, group)
        is_gateway_head = kind == "RayService" and group == "head"
        assert selects(gateway_svc["spec"]["selector"], labels) == is_gateway_head, (kind, group)
        assert ("payoff-http" in ports) == (kind == "RayJob" and group == "head")
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
    helps = {cmd: subprocess.run([str(ROOT / ".venv" / "bin" / "payoff") if (ROOT / ".venv" / "bin" / "payoff").exists()
                                  else "payoff", cmd, "--help"], capture_output=True, text=True, timeout=120).stdout
             for cmd, _ in calls}
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
        res = subprocess.run(["sh", str(job_dir / "run.sh")], env={**env, **extra}, capture_output=True, text=True,
                             timeout=60)
        return res, log.read_text().splitlines()

    res, lines = run()
    assert res.returncode == 0, res.stderr
    [serve] = [ln for ln in lines if ln.startswith("serve ")]  # started in the background: any position
    assert serve.startswith("serve --host 0.0.0.0 --port 8088 --max-jobs 1 url=http://127.0.0.1:8088 key=kkk")
    rest = [ln for ln in lines if ln != serve]
    assert [ln.split()[0] for ln in rest] == ["jobs", "jobs", "submit", "stopped"]  # polls until the gateway answers
    assert rest[2].startswith(f"submit {job_dir}/job.yaml --watch url=http://127.0.0.1:8088")
    res, lines = run(SUBMIT_RC="1")  # the job failed: so does the RayJob
    assert res.returncode == 1 and lines[-1] == "stopped"
    res, lines = run(SERVE_DIES="1")
    assert res.returncode == 1 and "payoff serve exited" in res.stderr and "submit" not in " ".join(lines)


def test_external_redis_ingress_servicemonitor():
    kinds = by_kind(render(EXTERNAL_VALUES))
    assert "StatefulSet" not in kinds and "Secret" not in kinds  # external Redis, existing Secret
    assert kinds["Ingress"][0]["spec"]["tls"][0]["secretName"] == "payoff-tls"
    sm = kinds["ServiceMonitor"][0]
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert {(e["port"], e["path"]) for e in sm["spec"]["endpoints"]} == {
        ("http", "/metrics"), ("http", "/rollout/metrics"), ("http", "/judge/metrics")}
    svc = next(s for s in kinds["Service"] if s["metadata"]["name"] == "rel-payoff-gateway")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    # Ray's agent is still scraped on every Ray pod (ray_*, ray_serve_*), but payoff_* is not mirrored into it
    assert "metrics" in {e["port"] for e in kinds["PodMonitor"][0]["spec"]["podMetricsEndpoints"]}
    for d in kinds["RayService"] + kinds["RayJob"]:
        for template in ray_pod_templates(d):
            env = template["spec"]["containers"][0]["env"]
            assert "PAYOFF_METRICS_TO_RAY" not in {e["name"] for e in env}
            assert all(e["valueFrom"]["secretKeyRef"]["name"] == "my-keys" for e in env if "valueFrom" in e)
            want = "redis://redis.example:6379/" + ("0" if d["kind"] == "RayService" else "3")
            assert {"name": "REDIS_URL", "value": want} in env
    # an external Redis without a database for the RayJob's gateway is refused when rendering
    chart = helm.Chart.load(str(CHART))
    bad = copy.deepcopy(EXTERNAL_VALUES)
    bad["learnerJob"]["redisUrl"] = ""
    with pytest.raises(Exception, match="learnerJob.redisUrl is required"):
        chart.render(bad, name="rel", namespace="payoff")


@pytest.mark.parametrize("bad,where", [
    ({"redis": {"enabled": False}}, "/redis/externalUrl"),            # no Redis at all
    ({"ray": {"gpuWorkers": {"gpus": 0}}}, "/ray/gpuWorkers/gpus"),   # a GPU group without GPUs
    ({"serve": {"rollout": {"importPath": "not a path"}}}, "/serve/rollout/importPath"),
    ({"apiKeys": {"adminKey": "short"}}, "/apiKeys/adminKey"),        # GatewaySettings wants >= 24 chars
    ({"unknownKey": 1}, "unknownKey"),
    ({"metrics": {"serviceMonitor": {"enabled": True}}}, "/metrics/exportToRay"),  # would scrape payoff_* twice
    ({"learnerJob": {"enabled": True, "gpuWorkers": {"gpus": 0}}}, "/learnerJob/gpuWorkers/gpus"),
    ({"learnerJob": {"enabled": True, "jobSpec": ""}}, "/learnerJob/jobSpec"),
], ids=["no-redis", "zero-gpus", "bad-import-path", "short-admin-key", "unknown-key", "servicemonitor-and-export",
        "learner-job-zero-gpus", "learner-job-no-spec"])
def test_values_schema_rejects(bad, where):
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.render(bad, name="rel", namespace="payoff")
    chart.render({}, name="rel", namespace="payoff")  # and the defaults pass


@pytest.mark.parametrize("values", [{}, GPU_VALUES], ids=["default", "gpu"])
def test_serve_apps_build_through_serve(values):
    """Every serveConfigV2 application's import_path imports, and Serve's own builder call accepts its args.

    (The components' own builders fail this call: string annotations reach Serve, and the gateway's builder
    takes four parameters; deploy/serve_apps.py wraps them.)"""
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve._private.utils import import_attr

    rs = by_kind(render(values))["RayService"][0]
    cfg = yaml.safe_load(rs["spec"]["serveConfigV2"])
    apps = {a["name"]: a for a in cfg["applications"]}
    assert set(apps) == {"gateway", "rollout", "judge"}
    assert len({a["route_prefix"] for a in apps.values()}) == 3
    for name, a in apps.items():
        builder = import_attr(a["import_path"])
        app = call_user_app_builder_with_args_if_necessary(builder, a.get("args", {}))
        assert isinstance(app, Application), name
        dep = app._bound_deployment
        for d in a.get("deployments", []):
            assert d["name"] == dep.name
    rollout = apps["rollout"]["args"]
    if values:
        assert rollout["gpus_per_replica"] == 1
        dep = call_user_app_builder_with_args_if_necessary(import_attr(apps["rollout"]["import_path"]),
                                                           rollout)._bound_deployment
        assert dep.ray_actor_options["num_gpus"] == 1
