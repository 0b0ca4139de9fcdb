"""Gateway state: attached shared memory, recent alerts, WebSocket clients."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from procs.api.cluster import ClusterView, Forwarder
from procs.api.wire import AlertHead, heads_of, to_dict
from procs.api.wsfeed import FeedProtocol, Hub
from procs.rules_admin import rules_source
from procs.shared import Shared
from scanner.alert_json import AlertEncoder
from scanner.config import Settings
from scanner.metrics import CATALOGUE
from scanner.records import ALERT_DTYPE
from scanner.toplists import top_rows
from shm.partitioned import PartitionedMatrix
from shm.records import concat
from shm.seqlock import SeqlockTimeout

RECENT_ALERTS = 1000  # alerts `/api/alerts` can answer with (newest last)


class GatewayState:
    def __init__(self, settings: Settings, shared: Shared, feed_consumer: int = 0) -> None:
        self.settings = settings
        self.shared = shared
        self.keys = shared.table.key_list()
        self.row_of = {k: i for i, k in enumerate(self.keys)}
        self.encoder = AlertEncoder(self.keys, rules_source(settings))
        self.feed_consumer = feed_consumer  # this gateway's slot in the feed ring (and its feed bell)
        self.feed = shared.feed.consumer(feed_consumer)
        self.feed_wakes = {"bell": 0, "timer": 0}  # alerts taken from the feed ring, by what woke the poll
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_ALERTS)
        # alerts not yet turned into dicts for `recent`, decoded only when it is read (a replay
        # raises ~150 alerts a boundary, a dict each cost the gateway ~11 µs on a core the
        # pipeline needs): the JSON bytes of what was sent to the clients (`_raw`), and newer
        # than all of them, the feed ring's records taken while no client was connected
        # (`_undecoded`, decoded as soon as a client comes); the newest RECENT_ALERTS of each,
        # oldest first
        self._raw: deque[bytes] = deque(maxlen=RECENT_ALERTS)
        self._undecoded = np.empty(0, ALERT_DTYPE)
        self.hub = Hub(settings, self.top, self.stale_hosts)
        self.all_f8 = np.arange(CATALOGUE.n_f8)
        self.all_i8 = np.arange(CATALOGUE.n_i8)
        from procs.scan import partition

        n_workers = len(shared.alerts)
        self.partitions = [partition(len(self.keys), n_workers, i, settings.block_rows) for i in range(n_workers)]
        self.started = time.time()
        self.cluster: ClusterView | None = None  # with Redis: the other hosts (procs.gateway._watch_cluster)
        self.forwarder: Forwarder | None = None  # REST requests for other hosts' symbols (made on first use)

    @property
    def clients(self) -> set[FeedProtocol]:
        """The open WebSocket feed connections of this process."""
        return self.hub.conns

    def poll_feed(self, most: int = 8192) -> int:
        """Move up to `most` new alerts from the shared-memory feed to `recent` and to the
        WebSocket clients: one frame per subscription group per poll, the same bytes to each
        member. Returns how many alerts were taken."""
        self.encoder.watch(self.shared.control.rules_generation)
        recs = self.feed.poll(most)
        n = len(recs)
        if not n:
            return 0
        if not self.hub.conns:  # no client: keep the records `recent` may be asked for, decode later
            self._undecoded = concat([self._undecoded, recs[-RECENT_ALERTS:]])[-RECENT_ALERTS:]
            return n
        parts = [payload for _rule, payload in self.encoder.encode(recs)]
        heads, parts = heads_of(parts)
        self.dispatch(heads, parts)
        return n

    def _decode_pending(self) -> None:
        """Decode the kept alerts into `recent`, in arrival order (before anything newer)."""
        if self._raw:
            self._recent.extend(map(to_dict, self._raw))
            self._raw.clear()
        if len(self._undecoded):
            self._recent.extend(self.encoder.to_dicts(self._undecoded))
            self._undecoded = self._undecoded[:0]

    @property
    def recent(self) -> deque[dict[str, Any]]:
        """The newest RECENT_ALERTS alerts seen by this gateway, oldest first, as dicts."""
        self._decode_pending()
        return self._recent

    def dispatch(self, heads: list[AlertHead], parts: list[bytes]) -> int:
        """Hand alerts (`procs.api.wire`: heads and JSON bytes, from the feed ring or Redis) to
        `recent` and the clients."""
        if len(self._undecoded):  # records kept before a client came are older than these
            self._decode_pending()
        self._raw.extend(parts[-RECENT_ALERTS:])
        self.hub.send(heads, parts)
        return len(heads)

    def symbol_snapshot(self, row: int) -> dict[str, Any]:
        t = self.shared.table
        f8 = np.empty((CATALOGUE.n_f8, 1))
        i8 = np.empty((CATALOGUE.n_i8, 1), np.int64)
        t.snapshot(row, row + 1, self.all_f8, f8, self.all_i8, i8)
        out: dict[str, Any] = {"symbol": self.keys[row]}
        for m in CATALOGUE.metrics:
            v = f8[m.index, 0] if m.dtype == "f8" else i8[m.index, 0]
            out[m.name] = None if m.dtype == "f8" and not np.isfinite(v) else v.item()
        return out

    def top(self, metric: str, order: str, limit: int, columns: list[str], *, min_price: float | None = None,
            max_price: float | None = None, min_volume: float | None = None) -> list[dict[str, Any]]:
        """Top `limit` rows by a float metric (NaN excluded), filtered, with extra columns: over the
        whole cluster when this host is part of one and the hosts publish the metric (their lists,
        filtered after the merge), else over this host's table."""
        merged = self.cluster.top(metric, order, self.settings.cluster_top_n) if self.cluster is not None \
            and self.cluster.active() else None
        if merged is not None:
            keep = [it for it in merged[0]
                    if (min_price is None or (it.get("price") is not None and it["price"] >= min_price))
                    and (max_price is None or (it.get("price") is not None and it["price"] <= max_price))
                    and (min_volume is None or (it.get("day_volume") is not None and it["day_volume"] >= min_volume))]
            return [{"symbol": it["symbol"], "host": it.get("host"),
                     **{c: it.get(c) for c in dict.fromkeys([metric, *columns])}} for it in keep[:limit]]
        key = self.column(metric)
        ok = None
        if min_price is not None or max_price is not None:
            price = self.column("price")
            ok = np.ones(len(key), bool)
            if min_price is not None:
                ok &= price >= min_price
            if max_price is not None:
                ok &= price <= max_price
        if min_volume is not None:
            vol_ok = self.column("day_volume") >= min_volume
            ok = vol_ok if ok is None else ok & vol_ok
        rows = top_rows(key, ok, order, limit)
        data = {c: self.column(c)[rows] for c in dict.fromkeys([metric, *columns])}
        out = []
        for j, r in enumerate(rows.tolist()):
            item: dict[str, Any] = {"symbol": self.keys[r]}
            for c, v in data.items():
                x = float(v[j])
                item[c] = x if np.isfinite(x) else None
            out.append(item)
        return out

    def stale_hosts(self) -> list[str]:
        """Hosts of the cluster whose data is stale or missing (empty outside a cluster)."""
        return self.cluster.stale_hosts() if self.cluster is not None else []

    def matches(self, rule_index: int) -> tuple[list[str], list[int]]:
        """Symbols matching rule `rule_index` at each worker's last cycle, and the workers whose
        last cycle ran an older rule generation (their rows are left out)."""
        arrays = self.shared.state.get("matches")
        if arrays is None:
            return [], []
        m = PartitionedMatrix(arrays.arrays)
        gen = self.shared.control.rules_generation
        syms: list[str] = []
        stale: list[int] = []
        for w, (lo, hi) in enumerate(self.partitions):
            try:
                row, wgen = m.read(w, rule_index, lo, hi)
            except SeqlockTimeout:
                stale.append(w)
                continue
            if wgen != gen or row is None:
                stale.append(w)
                continue
            syms.extend(self.keys[lo + i] for i in np.flatnonzero(row).tolist())
        return syms, stale

    def column(self, name: str) -> np.ndarray:
        """A consistent copy of one float column over all rows."""
        t = self.shared.table
        out = np.empty((1, t.n_rows))
        t.snapshot(0, t.n_rows, np.array([CATALOGUE.f8(name)]), out)
        return out[0]
