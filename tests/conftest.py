"""Shared test fixtures: one real redis-server and (lazily) one Ray instance per test session."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the data plane's HTTP routes need the internal token (services/internal_auth.py); set before Ray starts so
# every Ray worker of the session inherits it
os.environ.setdefault("PAYOFF_INTERNAL_TOKEN", uuid.uuid4().hex)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """REDIS_URL if the caller set one, else a project-started redis-server with AOF in a temp dir."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    from services.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_client(redis_url):
    from services.config import redis_client

    client = redis_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def job_id():
    """A fresh job id per test, so tests never see each other's streams (no FLUSHALL on a shared server)."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from services.ray_utils import init_ray

    init_ray(num_cpus=2, object_store_mb=512)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_path():
    from services.models import build_tiny_qwen3

    return str(build_tiny_qwen3())


@pytest.fixture(scope="session")
def serve_url(ray_session):
    """Ray Serve on the shared Ray instance with its HTTP proxy on a free loopback port."""
    from ray import serve

    from services.redis_server import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
