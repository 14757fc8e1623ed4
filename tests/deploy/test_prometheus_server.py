"""A real Prometheus server (Debian's package) scrapes a real payoff /metrics endpoint with the shipped
prometheus-local.yml job (its bearer credential read from a file, as the gateway's /metrics requires), loads the
alert rules, and answers PromQL over its HTTP API. Bounded in time; the server is killed at the end."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus not installed (make prometheus: Debian's prometheus package, needs root)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TOKEN = "pyf_admin_promtest-0123456789abcdef"


class _Metrics(BaseHTTPRequestHandler):
    """The same exposition every payoff service returns from GET /metrics (services.metrics.render), behind the
    gateway's check: 401 without `Authorization: Bearer <TOKEN>`."""

    def do_GET(self):  # noqa: N802
        from services.metrics import render

        if self.path != "/metrics":
            self.send_error(404)
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_error(401)
            return
        body = render()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def _get(url: str, timeout: float = 2.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.fixture
def metrics_endpoint():
    srv = ThreadingHTTPServer(("127.0.0.1", _free_port()), _Metrics)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_prometheus_scrapes_payoff_metrics_and_loads_alerts(tmp_path, metrics_endpoint):
    import gateway.metrics  # noqa: F401  (registers payoff_gateway_*, e.g. the label-less rejected counter)
    from learner import metrics as lm
    from services.metrics import QUEUE_DEPTH

    job = f"promtest-{int(time.time())}"
    lm.observe_step(
        job,
        {
            "samples": 4,
            "step_s": 0.1,
            "version": 5,
            "loss": 0.75,
            "push_s": 0.01,
            "push_bytes": 100.0,
            "push_failed": 0.0,
        },
    )
    QUEUE_DEPTH.labels(job).set(42)

    # the shipped scrape config of the gateway's /metrics, pointed at our endpoint, with a fast interval
    cfg = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus-local.yml").read_text())
    cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = "1s"
    cfg["rule_files"] = [str(ROOT / "deploy" / "prometheus" / "alerts.yml")]
    cfg["scrape_configs"] = [c for c in cfg["scrape_configs"] if c["job_name"] == "payoff-gateway"]
    cfg["scrape_configs"][0]["static_configs"] = [
        {"targets": [metrics_endpoint], "labels": {"component": "test"}}
    ]
    # the shipped job reads the admin key `payoff serve` keeps in the data dir (path relative to the config);
    # here the same kind of file (with a trailing newline, which Prometheus strips) next to the copied config
    auth = cfg["scrape_configs"][0]["authorization"]
    assert auth["type"] == "Bearer" and auth["credentials_file"].endswith("gateway/admin_key")
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "admin_key").write_text(TOKEN + "\n")
    auth["credentials_file"] = "gateway/admin_key"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = _free_port()
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 30
        result = []
        # honor_labels: payoff's `job` label (the payoff job id) wins over the scrape job's name
        q = urllib.parse.quote(f'payoff_learner_steps_total{{job="{job}"}}')
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                result = _get(f"{api}/query?query={q}")["data"]["result"]
            except OSError:
                result = []
            if result:
                break
            time.sleep(0.5)
        assert result, "no scraped series after 30 s: " + (tmp_path / "prometheus.log").read_text()[-2000:]
        assert float(result[0]["value"][1]) == 1.0
        assert result[0]["metric"]["component"] == "test" and "exported_job" not in result[0]["metric"]
        # series without a payoff job label keep the scrape job's name
        q = urllib.parse.quote("payoff_gateway_jobs_rejected_total")
        assert _get(f"{api}/query?query={q}")["data"]["result"][0]["metric"]["job"] == "payoff-gateway"
        # the dashboards' `job` variable lists payoff job ids
        values = _get(f"{api}/label/job/values?match[]=payoff_queue_depth")["data"]
        assert job in values and "payoff-gateway" not in values

        q = urllib.parse.quote(
            f'payoff_queue_depth{{job="{job}"}} + on() group_left '
            f'payoff_learner_loss{{job="{job}",term="loss"}}'
        )
        val = _get(f"{api}/query?query={q}")["data"]["result"]
        assert val and float(val[0]["value"][1]) == pytest.approx(42.75)

        targets = _get(f"{api}/targets")["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]

        rules = _get(f"{api}/rules")["data"]["groups"]
        names = {r["name"] for g in rules for r in g["rules"]}
        assert {
            "PayoffQueueBackingUp",
            "PayoffWeightSyncFailures",
            "PayoffJudgeFailureRate",
            "PayoffJobFailed",
        } <= names
        assert all(r["health"] in ("ok", "unknown") for g in rules for r in g["rules"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
