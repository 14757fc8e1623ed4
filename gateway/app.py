"""The gateway's FastAPI application: `create_app(settings)` for uvicorn, `build_asgi(settings)` with the size
limit and request metrics around it (what uvicorn and the Ray Serve ingress both serve).

The lifespan joins Ray, imports the component modules, registers the configured admin key and starts the
job runner; shutdown stops the runner and gives its lease back.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import redis
from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from gateway import metrics
from gateway.api_models import ErrorResponse, Health, Readiness, printable
from gateway.auth import ADMIN_TENANT, ApiKey, KeyStore
from gateway.middleware import BodyLimit, RequestMetrics
from gateway.ratelimit import RateLimiter
from gateway.runner import JobRunner, load_component_modules
from gateway.settings import GatewaySettings, load_pepper
from gateway.store import JobStore, JobUnreadable
from gateway.validation import ClusterProbe
from services.config import redis_client
from services.jobs import COMPONENTS, ComponentRegistry, JobRecord, RunContext

ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 422, 429, 503)}
# an error of a text/plain route (/metrics): `model` would document it under the route's media type
_JSON_ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
REDIS_DOWN = (
    "the job store (Redis) is unreachable, so the gateway cannot check keys or read jobs; nothing was "
    "changed. Retry shortly; if it persists, check the redis-server `payoff serve` started (or REDIS_URL)"
)
log = logging.getLogger(__name__)


@dataclass
class Gateway:
    """Everything a request handler needs, built once per process."""

    settings: GatewaySettings
    registry: ComponentRegistry = COMPONENTS
    r: redis.Redis = field(init=False)
    store: JobStore = field(init=False)
    keys: KeyStore = field(init=False)
    limiter: RateLimiter = field(init=False)
    cluster: ClusterProbe = field(init=False)
    runner: JobRunner | None = field(init=False, default=None)
    handles: dict = field(init=False, default_factory=dict)
    handles_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        s = self.settings
        self.r = redis_client(s.redis_url)
        self.store = JobStore(self.r)
        self.keys = KeyStore(self.r, load_pepper(s))
        self.limiter = RateLimiter(self.r, s.rate_per_s, s.rate_burst)
        self.cluster = ClusterProbe()

    def start(self) -> None:
        s = self.settings
        if s.connect_ray:
            from services.ray_utils import init_ray

            init_ray()
        load_component_modules(s.component_modules)
        if s.admin_key:
            self.keys.register(s.admin_key, ADMIN_TENANT, name="configured admin key", admin=True)
        if s.run_jobs:
            self.runner = JobRunner(
                self.store,
                RunContext(redis_url=s.redis_url, data_dir=s.data_dir),
                registry=self.registry,
                max_concurrent=s.max_concurrent_jobs,
                poll_s=s.poll_s,
                lease_ttl_s=s.lease_ttl_s,
                start_timeout_s=s.start_timeout_s,
            ).start()

    def stop(self, release: bool = True) -> None:
        if self.runner is not None:
            self.runner.stop(release=release)
        self.r.close()

    def app_handle(self, app_name: str):
        """A cached DeploymentHandle to a Serve application's ingress."""
        from ray import serve

        with self.handles_lock:
            if app_name not in self.handles:
                self.handles[app_name] = serve.get_app_handle(app_name)
            return self.handles[app_name]


# ---------------------------------------------------------------- dependencies
_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key in a header")


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def principal(
    gw: Gateway = Depends(gateway),
    bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
    header: str | None = Security(_header),
) -> ApiKey:
    """The caller's key record; 401 without a valid key, 429 over the key's rate."""
    presented = bearer.credentials if bearer is not None else header
    who = gw.keys.lookup(presented) if presented else None
    if who is None:
        metrics.AUTH_FAILURES.inc()
        raise HTTPException(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    decision = gw.limiter.take(who.key_id)
    if not decision.allowed:
        metrics.RATE_LIMITED.inc()
        raise HTTPException(
            429,
            f"rate limit of {gw.settings.rate_per_s:g} requests/s for this key exceeded",
            headers={"Retry-After": str(max(1, math.ceil(decision.retry_after_s)))},
        )
    return who


def _same(presented: str, secret: str | None) -> bool:
    return bool(secret) and hmac.compare_digest(presented.encode(), secret.encode())


def scraper(
    gw: Gateway = Depends(gateway), bearer: HTTPAuthorizationCredentials | None = Security(_bearer)
) -> None:
    """GET /metrics: `Authorization: Bearer` with the scrape token (PAYOFF_METRICS_TOKEN) or an admin key,
    never a tenant's key (the series carry job ids). The configured secrets are checked without Redis, so
    Prometheus still scrapes while Redis is down; no rate limit (one scrape per interval)."""
    presented = bearer.credentials if bearer is not None else ""
    s = gw.settings
    if presented and (_same(presented, s.metrics_token) or _same(presented, s.admin_key)):
        return
    who = gw.keys.lookup(presented) if presented else None
    if who is None or not who.admin:
        metrics.AUTH_FAILURES.inc()
        raise HTTPException(
            401,
            "/metrics needs the scrape token (PAYOFF_METRICS_TOKEN) or an admin key: send "
            "'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def admin(who: ApiKey = Depends(principal)) -> ApiKey:
    if not who.admin:
        raise HTTPException(403, "this needs an admin key")
    return who


def visible_job(gw: Gateway, who: ApiKey, job_id: str) -> JobRecord:
    """The job if the caller may see it. Another tenant's job is 'not found', exactly like a missing one,
    so a key cannot probe which job ids exist. A record that does not load is re-raised (`JobUnreadable`,
    answered as a JSON 500 naming the job) only to its owner or an admin."""
    try:
        job = gw.store.get(job_id)
    except JobUnreadable:
        if not who.admin and not gw.store.owned_by(job_id, who.tenant):
            raise HTTPException(404, f"job {job_id!r} not found") from None
        raise
    if job is None or (job.tenant != who.tenant and not who.admin):
        raise HTTPException(404, f"job {job_id!r} not found")
    return job


# ---------------------------------------------------------------- application
def create_app(settings: GatewaySettings | None = None, registry: ComponentRegistry = COMPONENTS) -> FastAPI:
    from gateway.routes_admin import router as admin_router
    from gateway.routes_evals import router as evals_router
    from gateway.routes_inference import router as inference_router
    from gateway.routes_jobs import router as jobs_router

    gw = Gateway(settings or GatewaySettings.from_env(), registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(gw.start)
        try:
            yield
        finally:
            await run_in_threadpool(gw.stop)

    app = FastAPI(
        title="payoff gateway",
        version="0.1.0",
        lifespan=lifespan,
        description="Submit and watch game-theoretic RL post-training jobs; chat with and steer "
        "their models. Authenticate with an API key (Authorization: Bearer <key>).",
    )
    app.state.gateway = gw
    app.include_router(jobs_router)
    app.include_router(inference_router)
    app.include_router(admin_router)
    app.include_router(evals_router)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            loc = [str(p) for p in e.get("loc", ())]
            if loc and loc[0] in ("body", "query", "path", "header"):
                loc = loc[1:] if loc[0] == "body" else loc
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            errors.append({"loc": printable(".".join(loc)), "msg": printable(msg)})
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    @app.exception_handler(redis.RedisError)
    async def _redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        metrics.REDIS_ERRORS.inc()
        log.warning("%s %s: Redis error: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": REDIS_DOWN, "error": f"{type(exc).__name__}: {printable(str(exc))[:300]}"},
            status_code=503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(JobUnreadable)
    async def _unreadable(request: Request, exc: JobUnreadable) -> JSONResponse:
        errors = [{"loc": "", "msg": printable(exc.reason)}]
        return JSONResponse({"detail": printable(str(exc)), "errors": errors}, status_code=500)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); it was logged by the gateway"},
            status_code=500,
        )

    @app.get("/healthz", response_model=Health, tags=["health"], operation_id="healthz")
    def healthz() -> Health:
        """Liveness: the process serves requests."""
        return Health(ok=True)

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["health"],
        responses={503: {"model": Readiness}},
        operation_id="readyz",
    )
    def readyz() -> JSONResponse:
        """Readiness: Redis answers, Ray is joined, the job runner is alive."""
        checks: dict[str, str] = {}
        try:
            gw.r.ping()
            checks["redis"] = "ok"
        except redis.RedisError as e:
            checks["redis"] = f"unreachable: {e}"
        if gw.settings.connect_ray:
            import ray

            checks["ray"] = "ok" if ray.is_initialized() else "not connected"
        runner: dict = {"enabled": gw.settings.run_jobs}
        if gw.runner is not None:
            alive = gw.runner._thread is not None and gw.runner._thread.is_alive()
            checks["runner"] = "ok" if alive else "stopped"
            r = gw.runner
            runner.update(leader=r.leader, last_tick=r.last_tick, last_error=r.last_error)
        ready = all(v == "ok" for v in checks.values())
        body = Readiness(ready=ready, checks=checks, runner=runner)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["health"],
        dependencies=[Depends(scraper)],
        responses={401: _JSON_ERROR, 503: _JSON_ERROR},
        operation_id="metrics",
    )
    def prometheus() -> PlainTextResponse:
        """Prometheus text exposition of every payoff metric in this process (job ids, no tenant names).
        Needs `Authorization: Bearer` with the scrape token (PAYOFF_METRICS_TOKEN) or an admin key."""
        from prometheus_client import CONTENT_TYPE_LATEST

        from services.metrics import render

        return PlainTextResponse(render(), media_type=CONTENT_TYPE_LATEST)

    return app


def wrap(app: FastAPI, settings: GatewaySettings):
    """The ASGI app to serve: request metrics outside, the body size limit inside them."""
    return RequestMetrics(BodyLimit(app, settings.max_body_bytes))


def build_asgi(settings: GatewaySettings | None = None, registry: ComponentRegistry = COMPONENTS):
    settings = settings or GatewaySettings.from_env()
    return wrap(create_app(settings, registry), settings)
