"""The internal credential of the data plane's HTTP endpoints.

Invariant: tenants reach rollout replicas and judges only through the gateway, which checks their API key
and tenant and then calls the apps over Ray Serve DeploymentHandles (no HTTP, no credential needed). The
apps' own HTTP routes on the Serve proxy (`/jobs/<id>/rollout/...`, `/jobs/<id>/judge/...`) answer only
requests that carry the internal token of the deployment — `X-Payoff-Internal: <token>` or
`Authorization: Bearer <token>` (what a Prometheus scrape sends) — and 403 everything else. The token is
`PAYOFF_INTERNAL_TOKEN` in the processes' environment: `payoff serve` generates one per data dir before it
starts Ray (so every Ray worker inherits it), the Helm chart sets it from a Secret. Without a token set,
every HTTP call to those routes is refused: closed by default.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import HTTPException, Request

ENV = "PAYOFF_INTERNAL_TOKEN"
HEADER = "X-Payoff-Internal"


def token() -> str | None:
    return os.environ.get(ENV) or None


def headers() -> dict[str, str]:
    """What an internal HTTP caller (a benchmark, a test, an operator's probe) sends."""
    t = token()
    return {HEADER: t} if t else {}


def ensure_token(data_dir: str | Path) -> str:
    """The deployment's token: the environment's, else one kept in `<data_dir>/internal_token` (0600,
    created once); exported to this process's environment so Ray workers started from it inherit it."""
    if token():
        return token()  # type: ignore[return-value]
    path = Path(data_dir) / "internal_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    os.environ[ENV] = path.read_text().strip()
    return os.environ[ENV]


def require_internal(request: Request) -> None:
    """FastAPI dependency for the data plane's HTTP routes."""
    expected = token()
    presented = request.headers.get(HEADER)
    auth = request.headers.get("authorization", "")
    if presented is None and auth.lower().startswith("bearer "):
        presented = auth[7:].strip()
    if not expected or not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise HTTPException(
            403,
            "internal endpoint: use the gateway (/v1/...), or send the deployment's internal token "
            f"({HEADER})",
        )
