"""The cluster seen from one gateway: every host's registry record, top lists and symbols.

With `redis_url`, the gateway refreshes this view once a second from Redis (`refresh`, in its
own task), and the routes read it without I/O: merged top lists (`top`), which host scans a
symbol (`host_of`, for the REST routes that answer for other hosts' symbols by asking that host),
and which hosts are stale or missing (their symbols are reported stale, never silently absent).
Each host publishes its symbol list once at start (`SYMBOLS_KEY`, `procs.instance`). A host of
a Kafka consumer group lists the whole universe (the group decides which rows it scans, and
that changes at every rebalance), so its symbols are the row ranges its registry record says it
owns now (`owned`, `procs.ingest_kafka`); a symbol no live record owns maps to the host that
owned it last, whose state then says it is stale or missing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from procs.cluster_top import KEY as TOP_KEY
from procs.cluster_top import merge_docs
from procs.registry import INDEX, KEY, host_states, parse_record

SYMBOLS_KEY = "scanner:symbols:"
REFRESH_S = 1.0


class ClusterView:
    def __init__(self, me: str, ttl_s: float) -> None:
        self.me, self.ttl_s = me, ttl_s
        self.hosts: list[dict[str, Any]] = []
        self.docs: dict[str, dict[str, Any]] = {}
        self.owner: dict[str, str] = {}  # symbol -> instance
        self._lists: dict[str, tuple[str, list[str]]] = {}  # instance -> (start_id, symbols)
        self._owned: dict[str, list[tuple[int, int]]] = {}  # live group host -> row ranges it owns now
        self._group: set[str] = set()  # every Kafka group host seen (its symbol list is the universe)
        self.updated = 0.0

    async def refresh(self, client: Any) -> None:
        """One read of the registry, the top lists and any new host's symbol list (async Redis)."""
        index = {n.decode(): s for n, s in await client.zrange(INDEX, 0, -1, withscores=True)}
        names = list(index)
        recs = await client.mget([KEY + n for n in names]) if names else []
        tops = await client.mget([TOP_KEY + n for n in names]) if names else []
        live = {n: r for n, r in zip(names, map(parse_record, recs), strict=True) if r is not None}
        self.hosts = host_states(index, live, time.time(), self.ttl_s)
        self.docs = {n: d for n, d in zip(names, map(parse_record, tops), strict=True) if d is not None}
        changed = False
        for name, rec in live.items():
            start_id = str(rec.get("start_id", ""))
            if self._lists.get(name, ("",))[0] != start_id:
                syms = parse_record_list(await client.get(SYMBOLS_KEY + name))
                self._lists[name] = (start_id, syms)
                changed = True
            if "owned" in rec or rec.get("kafka_group"):  # a group host, before its first refresh too
                self._group.add(name)
                owned = owned_ranges(rec.get("owned"))
                if self._owned.get(name) != owned:
                    self._owned[name] = owned
                    changed = True
        for name in [n for n in self._owned if n not in live]:  # its record expired: it owns nothing now
            del self._owned[name]
            changed = True
        if changed:
            self.owner = self._owners(live)
        self.updated = time.time()

    def _owners(self, live: dict[str, dict[str, Any]]) -> dict[str, str]:
        """symbol -> instance. A fixed-range host's symbols are its list (its record may have
        expired: they stay its, and its state says they are stale). A group host's are the rows its
        live record owns now, the most recently refreshed record winning a row two claim during a
        rebalance; a symbol no live record owns keeps the owner it had, stale or missing now."""
        owner = dict(self.owner)
        for name, (_, syms) in self._lists.items():
            if name not in self._group:
                owner.update(dict.fromkeys(syms, name))
        for name in sorted(self._owned, key=lambda n: _updated(live[n])):
            syms = self._lists.get(name, ("", []))[1]
            for lo, hi in self._owned[name]:
                owner.update(dict.fromkeys(syms[lo:hi], name))
        return owner

    def others(self) -> list[dict[str, Any]]:
        """The other hosts that are not cleanly stopped (ok, stale or missing)."""
        return [h for h in self.hosts if h["instance"] != self.me and h["state"] != "stopped"]

    def active(self) -> bool:
        """True when this gateway is part of a cluster of more than one host."""
        return bool(self.others())

    def stale_hosts(self) -> list[str]:
        return [h["instance"] for h in self.hosts if h["state"] in ("stale", "missing")]

    def top(self, metric: str, order: str, limit: int) -> tuple[list[dict[str, Any]], list[str]] | None:
        """The merged list and the hosts left out; None when the hosts do not publish `metric`."""
        if not any(metric in d.get("tops", {}) for d in self.docs.values()):
            return None
        live = [h for h in self.hosts if h["state"] != "stopped"]
        return merge_docs(self.docs, live, metric, order, limit)

    def host_of(self, symbol: str) -> dict[str, Any] | None:
        """The registry entry (with `state` and `url`) of the host scanning `symbol`."""
        name = self.owner.get(symbol)
        return next((h for h in self.hosts if h["instance"] == name), None) if name else None


def _updated(rec: dict[str, Any]) -> float:
    """A record's refresh time; 0 when it is missing or not a number (a stored item never breaks the view)."""
    try:
        return float(rec.get("updated", 0))
    except (TypeError, ValueError):
        return 0.0


def owned_ranges(value: Any) -> list[tuple[int, int]]:
    """The [lo, hi) row ranges of a registry record's `owned` (items `[lo, hi, first, last]`);
    malformed items are left out."""
    out = []
    for item in value if isinstance(value, list) else []:
        if (isinstance(item, list) and len(item) >= 2 and all(isinstance(x, int) for x in item[:2])
                and 0 <= item[0] < item[1]):
            out.append((item[0], item[1]))
    return out


def parse_record_list(raw: bytes | str | None) -> list[str]:
    try:
        v = json.loads(raw) if raw is not None else []
    except ValueError:
        return []
    return [s for s in v if isinstance(s, str)] if isinstance(v, list) else []


FORWARDED = "X-Scanner-Forwarded"  # a request one gateway asks another: answered locally, never passed on


class Forwarder:
    """The REST routes' way to another host's gateway (sync: the routes run in the threadpool)."""

    def __init__(self, timeout_s: float = 3.0) -> None:
        import httpx

        self.http = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def get(self, host: dict[str, Any], path: str, query: str, auth: str | None) -> tuple[int, Any]:
        """GET `path?query` on `host`: (status, JSON body), or raises `HostUnavailable`."""
        import httpx

        url = str(host.get("url") or "").rstrip("/")
        if not url or host.get("state") == "missing":
            raise HostUnavailable(host)
        headers = {FORWARDED: "1", **({"Authorization": auth} if auth else {})}
        try:
            r = self.http.get(f"{url}{path}" + (f"?{query}" if query else ""), headers=headers)
        except httpx.HTTPError as exc:
            raise HostUnavailable(host, str(exc)) from None
        if r.status_code >= 500:
            raise HostUnavailable(host, f"HTTP {r.status_code}")
        return r.status_code, r.json()

    def close(self) -> None:
        self.http.close()


class HostUnavailable(Exception):
    """The host scanning a symbol cannot answer now: its symbols are stale."""

    def __init__(self, host: dict[str, Any], why: str = "") -> None:
        self.host = host
        super().__init__(f"host {host.get('instance')!r} is {host.get('state', 'unreachable')}"
                         + (f" ({why})" if why else ""))


def ask_owner(state: Any, request: Any, symbol: str) -> dict[str, Any] | None:
    """The answer of the host that scans `symbol` to this same request, marked with its `host`;
    None when this gateway should answer itself (no cluster, the symbol is unknown to every host,
    or the request was already forwarded). An unreachable, stale or missing owner gives a 503 that
    says the symbol is stale, never a silent 404."""
    from fastapi import HTTPException

    view: ClusterView | None = state.cluster
    if view is None or request.headers.get(FORWARDED):
        return None
    host = view.host_of(symbol)
    if host is None or host["instance"] == view.me:
        return None
    try:
        status, body = _forwarder(state).get(host, request.url.path, request.url.query,
                                           request.headers.get("authorization"))
    except HostUnavailable as exc:
        raise HTTPException(503, detail={"msg": f"{symbol} is stale: {exc}", "stale": True,
                                         "host": host["instance"]}) from None
    if status != 200:
        raise HTTPException(status, detail=body.get("detail", body) if isinstance(body, dict) else body)
    return {**body, "host": host["instance"], "stale": host["state"] != "ok"} if isinstance(body, dict) else body


def cluster_matches(state: Any, request: Any, local: dict[str, Any]) -> dict[str, Any]:
    """A rule's current matches over the cluster: this host's, plus every other host's (asked with
    the same request); hosts that cannot answer are listed in `stale_hosts`."""
    view: ClusterView | None = state.cluster
    if view is None or request.headers.get(FORWARDED) or not view.active():
        return local
    symbols, stale = set(local["symbols"]), []
    for host in view.others():
        try:
            status, body = _forwarder(state).get(host, request.url.path, request.url.query,
                                               request.headers.get("authorization"))
        except HostUnavailable:
            stale.append(host["instance"])
            continue
        if status == 200 and isinstance(body, dict) and isinstance(body.get("symbols"), list):
            symbols.update(s for s in body["symbols"] if isinstance(s, str))
        else:
            stale.append(host["instance"])
    return {**local, "count": len(symbols), "symbols": sorted(symbols), "stale_hosts": stale}


def _forwarder(state: Any) -> Forwarder:
    """The gateway's one HTTP client to the other hosts, made on first use."""
    if state.forwarder is None:
        state.forwarder = Forwarder()
    return state.forwarder
