"""GET /metrics is for the scraper only: the scrape token (PAYOFF_METRICS_TOKEN) or an admin key, never a
tenant's key, and what it shows names no tenant. Health and readiness stay open."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest
from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError

from gateway.app import scraper
from gateway.server import GatewayServer
from gateway.settings import GatewaySettings
from tests.gateway.conftest import ADMIN_KEY, client, submit

TOKEN = "scrape-token-0123456789abcdefghij"
TENANT = "zz-hidden-tenant"


def _metrics(url: str, key: str | None, **headers) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.get(f"{url}/metrics", headers=headers, timeout=30)


def _refused(r: httpx.Response) -> bool:
    return (
        r.status_code == 401
        and r.headers["www-authenticate"] == "Bearer"
        and r.headers["content-type"].startswith("application/json")
        and "PAYOFF_METRICS_TOKEN" in r.json()["detail"]
    )


def _tenant_key(url: str, tenant: str, admin: bool = False) -> str:
    with client(url, ADMIN_KEY) as c:
        r = c.post("/v1/admin/keys", json={"tenant": tenant, "admin": admin})
        assert r.status_code == 201, r.text
        return r.json()["key"]


def test_metrics_needs_the_admin_key_without_a_scrape_token(gateway_server):
    url = gateway_server.url
    tenant = _tenant_key(url, "acme")
    assert _refused(_metrics(url, None))
    assert _refused(_metrics(url, "pyf_not-a-key"))
    assert _refused(_metrics(url, tenant))  # a tenant's own valid key is not enough
    assert _refused(_metrics(url, TOKEN))  # no token configured: no token works
    assert _refused(_metrics(url, None, **{"X-API-Key": ADMIN_KEY}))  # the scrape credential is a bearer
    ok = _metrics(url, ADMIN_KEY)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
    assert "payoff_gateway_auth_failures_total" in ok.text
    # an admin key created through the API works too (looked up like any key)
    other_admin = _tenant_key(url, "ops", admin=True)
    assert _metrics(url, other_admin).status_code == 200
    # health and readiness need no key
    assert httpx.get(f"{url}/healthz").json() == {"ok": True}
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_metrics_documents_its_credential(gateway_server):
    op = httpx.get(f"{gateway_server.url}/openapi.json").json()["paths"]["/metrics"]["get"]
    assert op["security"] == [{"HTTPBearer": []}]
    assert "text/plain" in op["responses"]["200"]["content"]
    assert set(op["responses"]["401"]["content"]) == {"application/json"}


def test_metrics_token_or_admin_key(make_settings):
    with GatewayServer(make_settings(metrics_token=TOKEN)) as server:
        tenant = _tenant_key(server.url, "acme")
        assert _metrics(server.url, TOKEN).status_code == 200
        assert _metrics(server.url, ADMIN_KEY).status_code == 200
        assert _refused(_metrics(server.url, tenant))
        assert _refused(_metrics(server.url, TOKEN[:-1]))
        assert _refused(_metrics(server.url, None))
        # the token is a scrape credential only: the API does not take it
        with client(server.url, TOKEN) as c:
            assert c.get("/v1/whoami").status_code == 401


def test_metrics_name_no_tenant(make_settings):
    """A tenant submits a job and is rate-limited: the counters move, unlabelled, and its name is nowhere."""
    with GatewayServer(make_settings(rate_per_s=0.05, rate_burst=2)) as server:
        key = _tenant_key(server.url, TENANT)
        with client(server.url, key) as c:
            job = submit(c)
            codes = [c.get(f"/v1/jobs/{job['id']}").status_code for _ in range(3)]
        assert codes[0] == 200 and 429 in codes
        text = _metrics(server.url, ADMIN_KEY).text  # the scrape itself is not rate-limited
        assert TENANT not in text and "tenant=" not in text
        lines = text.splitlines()
        assert any(
            ln.startswith("payoff_gateway_rate_limited_total ") and float(ln.split()[1]) >= 1 for ln in lines
        )
        assert any(
            ln.startswith("payoff_gateway_jobs_submitted_total ") and float(ln.split()[1]) >= 1
            for ln in lines
        )


def test_configured_secrets_are_checked_without_redis(make_settings):
    """The admin key and the scrape token are compared in process: a scrape during a Redis outage works."""

    def no_redis(_key):
        raise AssertionError("looked up in Redis")

    gw = SimpleNamespace(settings=make_settings(metrics_token=TOKEN), keys=SimpleNamespace(lookup=no_redis))
    for secret in (TOKEN, ADMIN_KEY):
        assert scraper(gw, HTTPAuthorizationCredentials(scheme="Bearer", credentials=secret)) is None
    with pytest.raises(HTTPException) as e:
        scraper(gw, None)
    assert e.value.status_code == 401 and e.value.headers == {"WWW-Authenticate": "Bearer"}


def test_metrics_token_setting(tmp_path):
    env = {"PAYOFF_DATA_DIR": str(tmp_path), "PAYOFF_METRICS_TOKEN": TOKEN}
    s = GatewaySettings.from_env(env)
    assert s.metrics_token == TOKEN
    assert TOKEN not in repr(s) and "metrics_token" not in s.model_dump()  # never recorded as a Serve arg
    assert GatewaySettings.from_env({"PAYOFF_DATA_DIR": str(tmp_path)}).metrics_token is None
    with pytest.raises(ValidationError, match="metrics_token"):
        GatewaySettings.from_env({**env, "PAYOFF_METRICS_TOKEN": "short"})
