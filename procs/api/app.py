"""The FastAPI application of the gateway process."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from procs.api import alerts, bars, health, limits, openapi, prom, symbols
from procs.api.deps import ReadAuth
from procs.api.state import GatewayState

STATIC = Path(__file__).resolve().parent.parent / "static"
# No inline script or style anywhere: a stored rule name that slips into markup cannot run.
# 'self' in connect-src also covers the same-origin ws:/wss: feed (CSP3). The one hash is the
# <style> lightweight-charts 4.2.3 inserts for its attribution logo (Makefile LWC_VERSION).
LWC_LOGO_STYLE = "'sha256-3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY='"
CSP = (f"default-src 'none'; script-src 'self'; style-src 'self' {LWC_LOGO_STYLE}; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


class ConfigError(ValueError):
    """The gateway's settings are unsafe or inconsistent."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(state: GatewayState) -> FastAPI:
    s = state.settings
    if not s.api_keys and not is_loopback(s.http_host):
        raise ConfigError(f"refusing to serve {s.http_host} without API keys: set api_keys or bind 127.0.0.1")
    app = FastAPI(title="scanner gateway", version="0.1.0",
                  description="REST + WebSocket API of the real-time scanner.")
    app.state.gateway = state
    if s.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=s.cors_origins, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length is None and request.method in ("POST", "PUT", "PATCH"):
            return JSONResponse({"detail": "Content-Length required"}, status_code=411)
        if length is not None and (not length.isdigit() or int(length) > s.max_request_bytes):
            return JSONResponse({"detail": f"request body over {s.max_request_bytes} bytes"}, status_code=413)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    limits.install(app, s)  # outermost: a throttled client costs no body read
    openapi.install(app)
    app.include_router(health.router)
    app.include_router(prom.router)
    app.include_router(symbols.router, dependencies=[ReadAuth])
    app.include_router(alerts.router)
    app.include_router(bars.router)
    from procs.api import rules

    app.include_router(rules.router)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    return app
