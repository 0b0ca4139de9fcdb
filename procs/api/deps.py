"""`Annotated` dependency aliases for the routers: gateway state and API-key scopes."""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, status
from pydantic import SecretStr

from procs.api.state import GatewayState

Scope = Literal["read", "write"]


def get_state(request: Request) -> GatewayState:
    return request.app.state.gateway


def key_scope(keys: dict[SecretStr, Scope], token: str | None) -> Scope | None:
    """Scope of a bearer token (constant-time compare); None when unknown."""
    if token is None:
        return None
    for key, scope in keys.items():
        if hmac.compare_digest(key.get_secret_value().encode(), token.encode()):
            return scope
    return None


def bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def _require(scope: Scope):  # type: ignore[no-untyped-def]
    def check(request: Request) -> None:
        keys = request.app.state.gateway.settings.api_keys
        if not keys:
            return  # no keys configured: open (the gateway refuses this on a non-loopback bind)
        got = key_scope(keys, bearer(request.headers.get("authorization")))
        if got is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing or unknown API key",
                                headers={"WWW-Authenticate": "Bearer"})
        if scope == "write" and got != "write":
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="this API key has read scope only")

    check.scope = scope  # type: ignore[attr-defined]  # read by procs/api/openapi.py
    return check


StateDep = Annotated[GatewayState, Depends(get_state)]
ReadAuth = Depends(_require("read"))
WriteAuth = Depends(_require("write"))
