"""Health and instance status."""

from __future__ import annotations

from fastapi import APIRouter

from procs.api.deps import ReadAuth, StateDep
from procs.status import collect

router = APIRouter(tags=["health"])


@router.get("/health")
def health(state: StateDep) -> dict:
    """Liveness: the gateway runs and sees the shared memory of its instance."""
    return {"status": "ok", "instance": state.settings.instance, "symbols": len(state.keys)}


@router.get("/api/status", dependencies=[ReadAuth])
def status(state: StateDep) -> dict:
    """Same object as `scanner status --json`."""
    return collect(state.settings)
