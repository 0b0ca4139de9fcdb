"""The FastAPI application of the gateway process."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

from procs.api import alerts, health, symbols
from procs.api.state import GatewayState

STATIC = Path(__file__).resolve().parent.parent / "static"


def create_app(state: GatewayState) -> FastAPI:
    app = FastAPI(title="scanner gateway", version="0.1.0",
                  description="REST + WebSocket API of the real-time scanner.")
    app.state.gateway = state
    app.include_router(health.router)
    app.include_router(symbols.router)
    app.include_router(alerts.router)
    try:
        from procs.api import rules

        app.include_router(rules.router)
    except ImportError:
        pass

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html")

    return app
