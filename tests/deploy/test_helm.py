"""The Helm chart: lint, offline render (default; GPU with the learner RayJob and the PodMonitor; external Redis +
ingress + ServiceMonitor), strict Kubernetes schema validation of every rendered core object and of every Ray pod
template, KubeRay CRD validation of the RayService and the RayJob, the monitors' selectors checked against the
pods they must (and must not) select, the RayJob's job spec validated by the gateway's own validation against
the RayJob cluster's capacity, its entrypoint script run against a stand-in `payoff`, and the Serve
applications the RayService declares built for real through Ray Serve's own builder entry point."""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk not installed (pip install helm-python-sdk)"
)
kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "payoff"
KUBERAY = ROOT.parent / "shared" / "schemas" / "kuberay"
KUBE_VERSION = "1.30"

GPU_VALUES = {
    "image": {"tag": "0.1.0-cuda"},
    "ray": {"gpuWorkers": {"enabled": True, "gpus": 4, "replicas": 2}},
    "serve": {"rollout": {"config": {"gpus_per_replica": 1, "engine": "vllm"}}},
    "learnerJob": {
        "enabled": True,
        "activeDeadlineSeconds": 7200,
        "gpuWorkers": {
            "replicas": 2,
            "gpus": 2,
            "nodeSelector": {"cloud.example/accelerator": "h100"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoSchedule"}
            ],
        },
    },
    "metrics": {"podMonitor": {"enabled": True, "labels": {"release": "kps"}}},
}
EXTERNAL_VALUES = {
    "redis": {"enabled": False, "externalUrl": "redis://redis.example:6379/0"},
    "gateway": {"ingress": {"enabled": True, "className": "nginx", "tlsSecret": "payoff-tls"}},
    "metrics": {
        "exportToRay": False,
        "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
        "podMonitor": {"enabled": True},
    },
    "learnerJob": {"enabled": True, "redisUrl": "redis://redis.example:6379/3"},
    "apiKeys": {"existingSecret": "my-keys"},
}


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
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
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
    return {
        **template["metadata"]["labels"],
        "ray.io/is-ray-node": "yes",
        "ray.io/node-type": node_type,
        "ray.io/cluster": d["metadata"]["name"],
    }


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
            assert not errors, f"{d['kind']}: " + "; ".join(
                f"{list(e.path)}: {e.message}" for e in errors[:5]
            )
            # pod templates inside the CRD are core PodTemplateSpecs: validate them strictly too
            for template in ray_pod_templates(d):
                kv.validate(
                    {
                        "apiVersion": "v1",
                        "kind": "PodTemplate",
                        "metadata": {"name": "t"},
                        "template": template,
                    },
                    KUBE_VERSION,
                    strict=True,
                )
        elif d["apiVersion"] == "monitoring.coreos.com/v1":
            # no CRD schema of the Prometheus Operator is kept: check the fields the chart relies on
            assert d["kind"] in ("ServiceMonitor", "PodMonitor")
            eps = d["spec"]["endpoints" if d["kind"] == "ServiceMonitor" else "podMetricsEndpoints"]
            assert eps and all(
                e["port"] and e["path"].startswith("/") and e["honorLabels"] is True for e in eps
            )
            assert d["spec"]["selector"]["matchLabels"]
        else:
            kv.validate(d, KUBE_VERSION, strict=True)


def test_default_render_contents():
    kinds = by_kind(render())
    assert set(kinds) == {"RayService", "Service", "StatefulSet", "Secret", "ConfigMap"}
    sts = kinds["StatefulSet"][0]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    secret = kinds["Secret"][0]
    for key in ("PAYOFF_ADMIN_KEY", "PAYOFF_API_KEY_PEPPER", "PAYOFF_INTERNAL_TOKEN", "PAYOFF_METRICS_TOKEN"):
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
        # the data plane's internal token reaches every Ray pod (rollout and judge HTTP routes need it)
        token = next(e for e in c["env"] if e["name"] == "PAYOFF_INTERNAL_TOKEN")
        assert token["valueFrom"]["secretKeyRef"] == {
            "name": secret["metadata"]["name"],
            "key": "PAYOFF_INTERNAL_TOKEN",
        }
        # ... and the gateways' scrape token (optional: an existingSecret without it leaves only the admin key)
        scrape = next(e for e in c["env"] if e["name"] == "PAYOFF_METRICS_TOKEN")
        assert scrape["valueFrom"]["secretKeyRef"] == {
            "name": secret["metadata"]["name"],
            "key": "PAYOFF_METRICS_TOKEN",
            "optional": True,
        }
    # every dashboard of deploy/grafana ships in the sidecar ConfigMap, byte for byte
    cm = kinds["ConfigMap"][0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = {p.name: p.read_text() for p in (ROOT / "deploy" / "grafana").glob("*.json")}
    assert shipped and {k: v + "\n" for k, v in cm["data"].items()} == shipped


def test_given_tokens_go_into_the_secret():
    given = {"metricsToken": "m" * 32, "internalToken": "i" * 32}
    secret = by_kind(render({"apiKeys": given}))["Secret"][0]["data"]
    assert base64.b64decode(secret["PAYOFF_METRICS_TOKEN"]).decode() == given["metricsToken"]
    assert base64.b64decode(secret["PAYOFF_INTERNAL_TOKEN"]).decode() == given["internalToken"]


def test_external_redis_ingress_servicemonitor():
    kinds = by_kind(render(EXTERNAL_VALUES))
    assert "StatefulSet" not in kinds and "Secret" not in kinds  # external Redis, existing Secret
    assert kinds["Ingress"][0]["spec"]["tls"][0]["secretName"] == "payoff-tls"
    sm = kinds["ServiceMonitor"][0]
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert {(e["port"], e["path"]) for e in sm["spec"]["endpoints"]} == {
        ("http", "/metrics"),
        ("http", "/rollout/metrics"),
        ("http", "/judge/metrics"),
    }
    # the gateway's /metrics needs the scrape token, the apps' own routes are internal: every scrape sends its
    # token from the (existing) Secret
    auth = {e["path"]: e.get("authorization") for e in sm["spec"]["endpoints"]}
    token = {"type": "Bearer", "credentials": {"name": "my-keys", "key": "PAYOFF_INTERNAL_TOKEN"}}
    scrape = {"type": "Bearer", "credentials": {"name": "my-keys", "key": "PAYOFF_METRICS_TOKEN"}}
    assert auth == {"/metrics": scrape, "/rollout/metrics": token, "/judge/metrics": token}
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


@pytest.mark.parametrize(
    "bad,where",
    [
        ({"redis": {"enabled": False}}, "/redis/externalUrl"),  # no Redis at all
        ({"ray": {"gpuWorkers": {"gpus": 0}}}, "/ray/gpuWorkers/gpus"),  # a GPU group without GPUs
        ({"serve": {"rollout": {"importPath": "not a path"}}}, "/serve/rollout/importPath"),
        ({"apiKeys": {"adminKey": "short"}}, "/apiKeys/adminKey"),  # GatewaySettings wants >= 24 chars
        ({"apiKeys": {"metricsToken": "short"}}, "/apiKeys/metricsToken"),  # so does metrics_token
        ({"unknownKey": 1}, "unknownKey"),
        (
            {"metrics": {"serviceMonitor": {"enabled": True}}},
            "/metrics/exportToRay",
        ),  # would scrape payoff_* twice
        ({"learnerJob": {"enabled": True, "gpuWorkers": {"gpus": 0}}}, "/learnerJob/gpuWorkers/gpus"),
        ({"learnerJob": {"enabled": True, "jobSpec": ""}}, "/learnerJob/jobSpec"),
    ],
    ids=[
        "no-redis",
        "zero-gpus",
        "bad-import-path",
        "short-admin-key",
        "short-metrics-token",
        "unknown-key",
        "servicemonitor-and-export",
        "learner-job-zero-gpus",
        "learner-job-no-spec",
    ],
)
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
        dep = call_user_app_builder_with_args_if_necessary(
            import_attr(apps["rollout"]["import_path"]), rollout
        )._bound_deployment
        assert dep.ray_actor_options["num_gpus"] == 1
