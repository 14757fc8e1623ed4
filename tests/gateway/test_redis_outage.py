"""Redis killed under a running gateway: every /v1 route answers 503 with a JSON body that says what is
wrong and that nothing changed, /readyz says not ready, and once the same redis-server (same AOF dir) is
back, the gateway serves again with every job it had — nothing lost, no restart of the gateway."""

from __future__ import annotations

import time

from gateway.server import GatewayServer
from services.redis_server import RedisServer
from tests.gateway.conftest import ADMIN_KEY, SPEC_YAML, client


def test_gateway_answers_503_json_while_redis_is_down_and_recovers(make_settings, tmp_path):
    redis_server = RedisServer(tmp_path / "outage-redis").start()
    try:
        settings = make_settings(redis_url=redis_server.url)
        with GatewayServer(settings) as gw, client(gw.url, ADMIN_KEY) as c:
            job = c.post("/v1/jobs", content=SPEC_YAML, headers={"Content-Type": "application/yaml"})
            assert job.status_code == 201, job.text
            jid = job.json()["id"]
            redis_server.kill()
            for method, path in [("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{jid}"), ("POST", "/v1/jobs")]:
                r = c.request(method, path, content=SPEC_YAML, headers={"Content-Type": "application/yaml"})
                assert r.status_code == 503, (method, path, r.status_code, r.text)
                assert r.headers["content-type"].startswith("application/json")
                assert "Redis" in r.json()["detail"] and r.headers["retry-after"]
            assert c.get("/readyz").status_code == 503
            assert c.get("/healthz").status_code == 200  # alive, just not ready
            redis_server.restart()
            deadline = time.monotonic() + 30
            while (r := c.get("/v1/jobs")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert r.status_code == 200 and [j["id"] for j in r.json()["jobs"]] == [jid]
            assert c.get("/readyz").status_code == 200
    finally:
        redis_server.stop()
