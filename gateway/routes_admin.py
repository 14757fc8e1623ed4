"""Key management (admin keys only) and `whoami` (any key); a created key's response links to revoking it
and to its tenant's jobs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException

from gateway.api_models import ErrorResponse, KeyCreate, KeyCreated, WhoAmI, link, links
from gateway.app import ERRORS, Gateway, admin, gateway, principal
from gateway.auth import ApiKey

router = APIRouter(tags=["keys"])
ADMIN_ERRORS = {**ERRORS, 403: {"model": ErrorResponse}}
TENANT_JOBS = link("list_jobs", "The tenant's jobs.", {"tenant": "$response.body#/tenant"})


@router.get(
    "/v1/whoami",
    response_model=WhoAmI,
    operation_id="whoami",
    responses={**ERRORS, 200: links("The key's tenant and role.", ListTenantJobs=TENANT_JOBS)},
)
def whoami(who: ApiKey = Depends(principal)) -> WhoAmI:
    """The tenant and role of the key you sent."""
    return WhoAmI(key_id=who.key_id, tenant=who.tenant, admin=who.admin)


@router.post(
    "/v1/admin/keys",
    status_code=201,
    response_model=KeyCreated,
    operation_id="create_key",
    responses={
        **ADMIN_ERRORS,
        201: links(
            "The new key (shown only here) and its id.",
            RevokeKey=link("revoke_key", "Revoke the new key.", {"key_id": "$response.body#/key_id"}),
            ListTenantJobs=TENANT_JOBS,
        ),
    },
)
def create_key(req: KeyCreate, gw: Gateway = Depends(gateway), _: ApiKey = Depends(admin)) -> KeyCreated:
    """Create an API key for a tenant (the tenant exists once it has a key). The key is shown only here."""
    key, rec = gw.keys.create(req.tenant, req.name, req.admin)
    return KeyCreated(key=key, key_id=rec.key_id, tenant=rec.tenant, admin=rec.admin)


@router.get(
    "/v1/admin/keys",
    response_model=list[ApiKey],
    operation_id="list_keys",
    responses={
        **ADMIN_ERRORS,
        200: links(
            "Every key's record.",
            RevokeKey=link(
                "revoke_key", "Revoke the first key listed.", {"key_id": "$response.body#/0/key_id"}
            ),
        ),
    },
)
def list_keys(gw: Gateway = Depends(gateway), _: ApiKey = Depends(admin)) -> list[ApiKey]:
    """Every key's record (id, tenant, name, role), never the keys themselves."""
    return gw.keys.list()


@router.delete(
    "/v1/admin/keys/{key_id}",
    status_code=204,
    operation_id="revoke_key",
    responses={**ADMIN_ERRORS, 409: {"model": ErrorResponse}},
)
def revoke_key(key_id: str, gw: Gateway = Depends(gateway), who: ApiKey = Depends(admin)) -> None:
    """Revoke a key; requests with it get 401 from now on."""
    if key_id == who.key_id:
        raise HTTPException(409, "refusing to revoke the key making this request")
    if not gw.keys.revoke(key_id):
        raise HTTPException(404, f"key {key_id!r} not found")
