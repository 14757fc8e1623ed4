"""The REST API against a real gateway (uvicorn) and Redis: auth, tenant isolation, admin, rate limit, size
limit, keys hashed at rest, job routes, events, metrics, health."""

from __future__ import annotations

import httpx
import pytest

from gateway.server import GatewayServer
from services.jobs import StepEvent, publish_event
from tests.gateway.conftest import ADMIN_KEY, PEPPER, SPEC_YAML, client, submit


def test_requests_without_a_valid_key_get_401(gateway_server):
    with client(gateway_server.url, None) as anon, client(gateway_server.url, "pyf_not-a-key") as bad:
        for c in (anon, bad):
            r = c.get("/v1/jobs")
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
            assert c.post("/v1/jobs", content=SPEC_YAML).status_code == 401
    # the X-API-Key header works as well as the bearer token
    r = httpx.get(f"{gateway_server.url}/v1/whoami", headers={"X-API-Key": ADMIN_KEY})
    assert r.json()["tenant"] == "admin" and r.json()["admin"] is True
    assert httpx.get(f"{gateway_server.url}/healthz").json() == {"ok": True}  # health needs no key


def test_tenants_never_see_each_others_jobs(tenant_clients, admin_client):
    acme, globex = tenant_clients
    job = submit(acme)
    jid = job["id"]
    assert job["tenant"] == "acme" and job["state"] == "queued"
    missing = globex.get("/v1/jobs/no-such-job")
    # another tenant's job is indistinguishable from a job that does not exist
    for method, path in [
        ("GET", f"/v1/jobs/{jid}"),
        ("POST", f"/v1/jobs/{jid}/cancel"),
        ("GET", f"/v1/jobs/{jid}/events"),
        ("GET", f"/v1/jobs/{jid}/metrics"),
        ("POST", f"/v1/jobs/{jid}/serve"),
        ("DELETE", f"/v1/jobs/{jid}/serve"),
    ]:
        r = globex.request(method, path)
        assert r.status_code == 404 and r.json()["detail"] == f"job {jid!r} not found", (method, path, r.text)
    assert missing.json()["detail"] == "job 'no-such-job' not found"
    chat = {"model": jid, "messages": [{"role": "user", "content": "hi"}]}
    r = globex.post("/v1/chat/completions", json=chat)
    assert r.status_code == 404
    assert globex.post("/v1/steer", json={"model": jid, "question": "q"}).status_code == 404
    assert globex.get("/v1/jobs").json() == {"jobs": [], "total": 0}
    assert globex.get("/v1/jobs", params={"tenant": "acme"}).status_code == 403
    assert [j["id"] for j in acme.get("/v1/jobs").json()["jobs"]] == [jid]
    # the admin key sees and lists every tenant
    other = submit(globex)
    assert admin_client.get(f"/v1/jobs/{jid}").status_code == 200
    listed = admin_client.get("/v1/jobs").json()
    assert listed["total"] == 2 and {j["tenant"] for j in listed["jobs"]} == {"acme", "globex"}
    only_globex = admin_client.get("/v1/jobs", params={"tenant": "globex"}).json()["jobs"]
    assert [j["id"] for j in only_globex] == [other["id"]]
    assert globex.get("/v1/admin/keys").status_code == 403
    # the owner cancels; a second cancel is a conflict
    assert acme.post(f"/v1/jobs/{jid}/cancel").json()["state"] == "cancelled"
    assert acme.post(f"/v1/jobs/{jid}/cancel").status_code == 409
    filtered = acme.get("/v1/jobs", params={"state": ["cancelled"]}).json()
    assert filtered["total"] == 1


def test_keys_are_hashed_at_rest_and_revocable(tenant_clients, admin_client, gw_redis):
    made = admin_client.post("/v1/admin/keys", json={"tenant": "initech", "name": "ci"}).json()
    key = made["key"]
    dump = b"".join(k + b"".join(gw_redis.hgetall(k).values()) for k in gw_redis.scan_iter("payoff:apikeys*"))
    assert key.encode() not in dump and ADMIN_KEY.encode() not in dump and PEPPER.encode() not in dump
    with client(admin_client.base_url, key) as c:
        assert c.get("/v1/whoami").json() == {"key_id": made["key_id"], "tenant": "initech", "admin": False}
        listed = admin_client.get("/v1/admin/keys").json()
        assert {"initech", "acme", "globex", "admin"} <= {k["tenant"] for k in listed}
        assert all("key" not in k for k in listed)
        assert admin_client.delete(f"/v1/admin/keys/{made['key_id']}").status_code == 204
        assert c.get("/v1/whoami").status_code == 401
    assert admin_client.post("/v1/admin/keys", json={"tenant": "Bad Tenant"}).status_code == 422


def test_rate_limit_per_key(make_settings):
    with (
        GatewayServer(make_settings(rate_per_s=1.0, rate_burst=3)) as server,
        client(server.url, ADMIN_KEY) as c,
    ):
        codes = [c.get("/v1/whoami").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        r = c.get("/v1/whoami")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "rate limit" in r.json()["detail"]
        other = c.post("/v1/admin/keys", json={"tenant": "x"})  # admin is limited too
        assert other.status_code == 429


def test_request_size_limit(make_settings):
    with GatewayServer(make_settings(max_body_bytes=2048)) as server, client(server.url, ADMIN_KEY) as c:
        big = "name: x\n" + "#" * 5000 + "\n"
        r = c.post("/v1/jobs", content=big, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit still holds while the body streams in
            for _ in range(10):
                yield b"#" * 512

        r = c.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/yaml"})
        assert r.status_code == 413
        ok = c.post("/v1/jobs", content=SPEC_YAML, headers={"Content-Type": "application/yaml"})
        assert ok.status_code == 201


def test_events_stream_and_reward_curve(tenant_clients, gw_redis):
    acme, _ = tenant_clients
    jid = submit(acme)["id"]
    for step, reward in enumerate([0.1, 0.3, 0.2]):
        metrics = {"reward_mean": reward, "loss": 1.0 - step}
        publish_event(gw_redis, StepEvent(job_id=jid, step=step, metrics=metrics))
    curve = acme.get(f"/v1/jobs/{jid}/metrics").json()
    assert curve["steps"] == [0, 1, 2] and curve["reward"] == [0.1, 0.3, 0.2]
    assert curve["metrics"]["loss"] == [1.0, 0.0, -1.0]
    assert acme.get(f"/v1/jobs/{jid}").json()["summary"]["step"] == 2

    def events(**params):
        out, headers = [], params.pop("headers", {})
        with acme.stream("GET", f"/v1/jobs/{jid}/events", params=params, headers=headers) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            block = {}
            for line in r.iter_lines():
                if not line:
                    if block:
                        out.append(block)
                    block = {}
                elif not line.startswith(":"):
                    k, _, v = line.partition(": ")
                    block[k] = v
        return out

    got = events(follow="false")
    assert [e["event"] for e in got] == ["status", "step", "step", "step", "end"]
    resumed = events(follow="false", headers={"Last-Event-ID": got[1]["id"]})
    assert [e["event"] for e in resumed] == ["step", "step", "end"]
    # follow=true ends by itself once the job is over and every event was sent
    acme.post(f"/v1/jobs/{jid}/cancel")
    followed = events()
    assert [e["event"] for e in followed][-2:] == ["status", "end"] and '"cancelled"' in followed[-1]["data"]
    assert acme.get(f"/v1/jobs/{jid}/events", params={"after": "garbage"}).status_code == 422


def test_health_readiness_metrics_openapi(gateway_server, admin_client):
    ready = httpx.get(f"{gateway_server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok"}
    admin_client.get("/v1/jobs/nope")
    text = admin_client.get("/metrics").text  # the scrape needs the admin key (or PAYOFF_METRICS_TOKEN)
    assert 'payoff_gateway_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}' in text
    assert "payoff_queue_put_total" in text  # the shared services registry
    doc = httpx.get(f"{gateway_server.url}/openapi.json").json()
    paths = set(doc["paths"])
    for p in (
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/metrics",
        "/v1/chat/completions",
        "/v1/steer",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert p in paths, p
    assert "JobSpec" in doc["components"]["schemas"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(doc["components"]["securitySchemes"])


@pytest.mark.parametrize("body", ["{not yaml: [", "- a list\n- not a mapping\n"])
def test_unparseable_specs(tenant_clients, body):
    acme, _ = tenant_clients
    r = acme.post("/v1/jobs", content=body, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ""
