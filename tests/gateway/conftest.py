"""Gateway tier fixtures.

The job runner acts on every queued job in its Redis, so this tier owns a project-started redis-server
(flushed before each test) instead of sharing the session one with other tiers' streams.
"""

from __future__ import annotations

import httpx
import pytest

from gateway.settings import GatewaySettings

ADMIN_KEY = "test-admin-key-0123456789abcdef"
PEPPER = "test-pepper"


@pytest.fixture(scope="session")
def gw_redis_server(tmp_path_factory):
    from services.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("gateway-redis")).start()
    yield server
    server.stop()


@pytest.fixture
def gw_redis_url(gw_redis_server):
    from services.config import redis_client

    client = redis_client(gw_redis_server.url)
    client.flushall()
    client.close()
    return gw_redis_server.url


@pytest.fixture
def gw_redis(gw_redis_url):
    from services.config import redis_client

    client = redis_client(gw_redis_url)
    yield client
    client.close()


@pytest.fixture
def make_settings(gw_redis_url, tmp_path):
    """Settings for an in-process gateway: no runner and no Ray unless a test asks for them."""

    def make(**overrides) -> GatewaySettings:
        values = dict(
            redis_url=gw_redis_url,
            data_dir=tmp_path,
            admin_key=ADMIN_KEY,
            pepper=PEPPER,
            run_jobs=False,
            connect_ray=False,
            poll_s=0.2,
            lease_ttl_s=2.0,
            component_modules=(),
        )
        values.update(overrides)
        return GatewaySettings(**values)

    return make


@pytest.fixture
def gateway_server(make_settings):
    """A started gateway (uvicorn in a thread) with default test settings."""
    from gateway.server import GatewayServer

    with GatewayServer(make_settings()) as server:
        yield server


def client(url: str, key: str | None, **kw) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60, **kw)


@pytest.fixture
def admin_client(gateway_server):
    with client(gateway_server.url, ADMIN_KEY) as c:
        yield c


@pytest.fixture
def tenant_clients(gateway_server, admin_client):
    """(acme, globex) clients, each with its own tenant's key."""
    keys = [admin_client.post("/v1/admin/keys", json={"tenant": t}).json()["key"] for t in ("acme", "globex")]
    with client(gateway_server.url, keys[0]) as a, client(gateway_server.url, keys[1]) as b:
        yield a, b


SPEC_YAML = """\
name: small
algorithm: ppo
tasks: [{env: sokoban}]
rollout: {cpus_per_replica: 0.25, max_response_tokens: 64}
asynchrony: {window_tokens: 16}
learner: {steps: 2, cpus_per_worker: 0.1}
"""


def submit(c: httpx.Client, text: str = SPEC_YAML) -> dict:
    r = c.post("/v1/jobs", content=text, headers={"Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    return r.json()
