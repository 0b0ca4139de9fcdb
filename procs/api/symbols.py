"""The metric catalogue, symbol snapshots and top lists, read from shared memory."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from procs.api.cluster import ask_owner
from procs.api.deps import StateDep
from scanner.metrics import CATALOGUE

router = APIRouter(tags=["symbols"])


@router.get("/api/metrics")
def metrics() -> list[dict]:
    """Every column of the symbol table: name, dtype, unit, owning process, description."""
    return [{"name": m.name, "dtype": m.dtype, "unit": m.unit, "owner": str(m.owner),
             "description": m.description} for m in CATALOGUE.metrics]


@router.get("/api/symbols")
def symbols(state: StateDep) -> list[str]:
    return state.keys


@router.get("/api/symbols/{symbol}")
def symbol(symbol: str, state: StateDep, request: Request) -> dict:
    """All metrics of one symbol (a seqlock-consistent read of its row); in a cluster, the host
    that scans it answers (`host`, `stale` in the body; 503 when that host is down)."""
    row = state.row_of.get(symbol.upper())
    if row is None:
        remote = ask_owner(state, request, symbol.upper())
        if remote is not None:
            return remote
        raise HTTPException(404, detail=f"unknown symbol {symbol!r}")
    return state.symbol_snapshot(row)


F8_METRICS = tuple(m.name for m in CATALOGUE.metrics if m.dtype == "f8")
_NAME = "(" + "|".join(F8_METRICS) + ")"
COLUMNS_PATTERN = f"^({_NAME}(,{_NAME})*)?$"  # what the route accepts (it checks the names itself)


@router.get("/api/top")
def top(
    state: StateDep,
    metric: Annotated[str, Query(description="Float metric to sort by.",
                                 json_schema_extra={"enum": list(F8_METRICS)})] = "change_pct",
    order: Literal["desc", "asc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=500)] = 25,
    min_price: float | None = None,
    max_price: float | None = None,
    min_volume: float | None = None,
    columns: Annotated[str, Query(description="Comma-separated extra metrics to return.",
                                  json_schema_extra={"pattern": COLUMNS_PATTERN})] =
        "price,change_pct,day_volume,relative_volume,rsi_14,vwap",
) -> dict:
    """Top list: sort any float metric, filter by price / day volume, limit. A 422 has the
    shape of every other validation error (`detail`: a list of {loc, msg, type}), plus `allowed`."""
    if metric not in F8_METRICS:
        raise HTTPException(422, detail=[{"loc": ["query", "metric"], "msg": f"unknown metric {metric[:64]!r}",
                                          "type": "value_error", "allowed": list(F8_METRICS)}])
    cols = columns.split(",") if columns else []
    bad = [c for c in cols if c not in F8_METRICS]
    if bad:
        raise HTTPException(422, detail=[{"loc": ["query", "columns"], "msg": f"unknown metrics {bad[:10]}",
                                          "type": "value_error", "allowed": list(F8_METRICS)}])
    out = state.top(metric, order, limit, cols, min_price=min_price, max_price=max_price, min_volume=min_volume)
    return {"metric": metric, "order": order, "count": len(out), "rows": out, "stale_hosts": state.stale_hosts()}
