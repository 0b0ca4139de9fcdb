"""Make the OpenAPI document say what the API really does, and the errors match it.

Found by schemathesis against a live gateway: bodies that cannot be parsed (400), missing or
oversized bodies (411, 413), rate limits (429), auth (401/403), unknown ids (404) and an
unreadable store or database (503) were undocumented; a 405 named only the methods of one route
of its path in `Allow`; a 422 for a non-finite or deeply nested input failed to serialise (500).
`complete()` adds the responses from what each route is (its auth dependency, body, path
parameters), so a new route is documented the same way without a list to keep up to date.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, routing
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from scanner.rules.store import RuleStoreError

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_ERROR_SCHEMA = {"title": "Error", "type": "object", "required": ["detail"],
                 "properties": {"detail": {"title": "Detail", "description": "What went wrong (text or a list)."}}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before the next request.",
                                "schema": {"type": "integer", "minimum": 1}}}
_WWW_AUTH = {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}}


def api_routes(app: FastAPI) -> list[Any]:
    """Every API route of `app` as FastAPI resolves it (included routers flattened, with the
    dependencies of the routers they came through)."""
    return [c for c in routing.iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def route_scope(route: Any) -> str | None:
    """'read' / 'write' when an API-key dependency guards the route, else None."""
    stack = list(route.dependant.dependencies)
    scope = None
    while stack:
        d = stack.pop()
        s = getattr(d.call, "scope", None)
        if s == "write" or (s == "read" and scope is None):
            scope = s
        stack.extend(d.dependencies)
    return scope


def _add(responses: dict[str, Any], code: int, description: str, headers: dict[str, Any] | None = None) -> None:
    entry: dict[str, Any] = {"description": description, "content": _ERROR}
    if headers:
        entry["headers"] = headers
    responses.setdefault(str(code), entry)


def complete(app: FastAPI, doc: dict[str, Any]) -> dict[str, Any]:
    """Add the responses every route can give to `doc` (FastAPI's document of `app`), in place."""
    doc.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                       "description": "An API key from `api_keys`."}}
    for route in api_routes(app):
        if not route.include_in_schema:
            continue
        for method in route.methods:
            op = doc["paths"][route.path_format][method.lower()]
            r = op["responses"]
            scope = route_scope(route)
            if scope is not None:
                op["security"] = [{"bearer": []}]
                _add(r, 401, "Missing or unknown API key.", _WWW_AUTH)
                if scope == "write":
                    _add(r, 403, "The API key has read scope only.")
            if "requestBody" in op:
                _add(r, 400, "The body is not JSON, or nested too deeply to parse.")
                _add(r, 411, "Content-Length required.")
                _add(r, 413, "The body is larger than `max_request_bytes`.")
            if route.dependant.path_params:
                _add(r, 404, "No such resource.")
            if route.path_format.startswith(("/api/rules", "/api/bars")):
                _add(r, 503, "The rule store or the bar database cannot be read.")
            if route.path_format != "/health":
                _add(r, 429, "Rate limit of the API key (or client address) exceeded.", _RETRY_AFTER)
    return doc


def allowed_methods(app: FastAPI, scope: dict[str, Any]) -> list[str]:
    """The methods of the path this request resolves to: every route declared with the path
    template of the first route that matches it (Starlette's 405 names one route's methods
    only, e.g. GET of GET/POST /api/rules). `/api/rules/schema` resolves to its own path, not
    to `/api/rules/{rule_id}` (the rule model reserves those ids)."""
    template: str | None = None
    methods: set[str] = set()
    for route in routing.iter_route_contexts(app.routes):
        match, _ = route.matches(scope)
        if match == Match.NONE:
            continue
        path = getattr(route, "path_format", None)
        template = path if template is None else template
        if path == template:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def install(app: FastAPI) -> None:
    """Error handlers that match the document, and the completed document itself."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(app, base())
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # loc, msg and type only: the offending input is left out, since it may be NaN (not
        # JSON), hundreds of levels deep or as large as the body limit
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed_methods(app, request.scope))}
        return await http_exception_handler(request, exc)  # type: ignore[return-value]

    @app.exception_handler(RuleStoreError)
    async def store_error(request: Request, exc: RuleStoreError) -> JSONResponse:
        return JSONResponse({"detail": f"rule store unreadable: {exc}"}, status_code=503)
