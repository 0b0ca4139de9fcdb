"""Rules CRUD. Bodies are validated with the rule model (HTTP 422 names the field and the
allowed values); every change bumps the generation, so workers use it from their next cycle."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, HTTPException, Request, Response

from procs.api.cluster import cluster_matches
from procs.api.deps import ReadAuth, StateDep, WriteAuth
from procs.rules_admin import store_for
from scanner.rules.model import Rule, rule_json_schema

router = APIRouter(prefix="/api/rules", tags=["rules"])


def _store(state):  # type: ignore[no-untyped-def]
    return store_for(state.settings, state.shared.control)


SKIPPED = {"X-Rules-Skipped": {"description": "Stored items skipped as invalid (logged by the gateway).",
                                "schema": {"type": "integer"}}}


@router.get("", dependencies=[ReadAuth], responses={200: {"headers": SKIPPED}})
def list_rules(state: StateDep, response: Response) -> list[dict[str, Any]]:
    """Every valid stored rule, in store order (the order alert records refer to). A stored item
    the rule model refuses is skipped, logged, and counted in `X-Rules-Skipped`."""
    store = _store(state)
    rules, problems = store.read()
    if problems:
        response.headers["X-Rules-Skipped"] = str(len(problems))
        store.report(problems)
    return [r.dump() for r in rules]


@router.get("/schema", dependencies=[ReadAuth])
def schema() -> dict[str, Any]:
    """JSON Schema of a rule."""
    return rule_json_schema()


@router.post("/validate", dependencies=[ReadAuth])
def validate(rule: Rule) -> dict[str, Any]:
    """Validate without storing (422 on error, like a create)."""
    return {"valid": True, "rule": rule.dump()}


@router.get("/{rule_id}", dependencies=[ReadAuth])
def get_rule(rule_id: str, state: StateDep) -> dict[str, Any]:
    rule = _store(state).get(rule_id)
    if rule is None:
        raise HTTPException(404, detail=f"no rule with id {rule_id!r}")
    return rule.dump()


@router.post("", status_code=201, dependencies=[WriteAuth],
             responses={200: {"description": "Replaced the rule with the same id."}})
def create_rule(rule: Rule, state: StateDep, response: Response) -> dict[str, Any]:
    """Create a rule, or replace the rule with the same id (200 then)."""
    store = _store(state)
    existed = store.get(rule.id) is not None
    stored = store.add(rule)
    if existed:
        response.status_code = 200
    return {**stored.dump(), "generation": state.shared.control.rules_generation}


@router.put("/{rule_id}", dependencies=[WriteAuth])
def put_rule(rule_id: str, state: StateDep, rule: Rule = Body(...)) -> dict[str, Any]:
    if rule.id != rule_id:
        raise HTTPException(422, detail=[{"loc": ["body", "id"], "msg": f"id {rule.id!r} does not match the "
                                          f"path {rule_id!r}", "type": "value_error"}])
    stored = _store(state).add(rule)
    return {**stored.dump(), "generation": state.shared.control.rules_generation}


@router.delete("/{rule_id}", status_code=204, dependencies=[WriteAuth])
def delete_rule(rule_id: str, state: StateDep) -> Response:
    if not _store(state).remove(rule_id):
        raise HTTPException(404, detail=f"no rule with id {rule_id!r}")
    return Response(status_code=204)


@router.get("/{rule_id}/matches", dependencies=[ReadAuth])
def rule_matches(rule_id: str, state: StateDep, request: Request) -> dict[str, Any]:
    """Symbols matching the rule at the scanners' last cycle (not only the new ones that alerted),
    over every host of the cluster (`stale_hosts`: hosts that could not answer)."""
    rules = _store(state).list()
    index = next((i for i, r in enumerate(rules) if r.id == rule_id), None)
    if index is None:
        raise HTTPException(404, detail=f"no rule with id {rule_id!r}")
    symbols, stale = state.matches(index)
    return cluster_matches(state, request, {
        "rule": rule_id, "count": len(symbols), "symbols": sorted(symbols), "workers_pending": stale,
        "generation": state.shared.control.rules_generation})
