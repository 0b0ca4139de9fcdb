"""Recent alerts (REST). The live alert WebSocket `/ws` is served by `procs.api.wsfeed`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from procs.api.deps import ReadAuth, StateDep

router = APIRouter(tags=["alerts"])


@router.get("/api/alerts/recent", dependencies=[ReadAuth])
def recent(state: StateDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
           rule: str | None = None, symbol: str | None = None) -> list[dict]:
    """The newest alerts seen by this gateway, newest first."""
    out = []
    for a in reversed(state.recent):
        if (rule is None or a["rule"] == rule) and (symbol is None or a["symbol"] == symbol.upper()):
            out.append(a)
            if len(out) >= limit:
                break
    return out
