"""Prometheus `/metrics`: counters and gauges read from the control block at scrape time."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from procs.api.deps import ReadAuth, StateDep
from procs.api.state import GatewayState
from procs.feed_stats import feed_summary
from shm.control import BUCKETS_US

router = APIRouter(tags=["health"])


class ControlCollector:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def collect(self):  # type: ignore[no-untyped-def]
        sh = self.state.shared
        ctl = sh.control
        slots = ctl.slots.copy()
        hist = ctl.cycle_hist.copy()
        now = time.monotonic_ns()
        ticks = CounterMetricFamily("scanner_ticks", "Ticks accepted by ingest.")
        rate = GaugeMetricFamily("scanner_ticks_per_second", "Ticks per second into ingest (last second).")
        alerts = CounterMetricFamily("scanner_alerts", "Alerts raised by the scanner workers.")
        drops = CounterMetricFamily("scanner_drops", "Records dropped (malformed, late, lapped, buffer full).",
                                    labels=["process"])
        restarts = CounterMetricFamily("scanner_restarts", "Restarts of a child process.", labels=["process"])
        hb = GaugeMetricFamily("scanner_heartbeat_age_seconds", "Age of the last heartbeat.", labels=["process"])
        cycles = HistogramMetricFamily("scanner_cycle_seconds", "Work-cycle duration (scan cycles, indicator "
                                       "updates).", labels=["process"])
        n_alerts = 0
        for i, s in enumerate(slots):
            name = bytes(s["name"]).decode()
            if not name:
                continue
            drops.add_metric([name], int(s["drops"]))
            restarts.add_metric([name], int(s["restarts"]))
            if int(s["heartbeat_ns"]):
                hb.add_metric([name], (now - int(s["heartbeat_ns"])) / 1e9)
            if name == "ingest":
                ticks.add_metric([], int(s["n_in"]))
                rate.add_metric([], float(s["rate_in"]))
            if name.startswith("scan-"):
                n_alerts += int(s["n_out"])
            counts, sum_us = hist[i, :-1], int(hist[i, -1])
            if counts.any():
                cum, buckets = 0, []
                for bound, c in zip((*BUCKETS_US, float("inf")), counts, strict=True):
                    cum += int(c)
                    buckets.append(("+Inf" if bound == float("inf") else str(bound / 1e6), cum))
                cycles.add_metric([name], buckets, sum_value=sum_us / 1e6)
        alerts.add_metric([], n_alerts)
        lost = CounterMetricFamily("scanner_ring_lost", "Records consumers lost to ring lapping.", labels=["ring"])
        lost.add_metric(["ticks"], int(sh.ticks.consumers["lost"].sum()))
        lost.add_metric(["bars"], int(sh.bars.consumers["lost"].sum()))
        lost.add_metric(["alerts"], sum(int(r.consumers["lost"].sum()) for r in sh.alerts))
        gen = GaugeMetricFamily("scanner_rules_generation", "Rule-set generation.")
        gen.add_metric([], ctl.rules_generation)
        clients = GaugeMetricFamily("scanner_websocket_clients", "WebSocket clients of this gateway.")
        clients.add_metric([], len(self.state.clients))
        hub = self.state.hub
        ws = CounterMetricFamily("scanner_websocket_frames", "WebSocket frames of this gateway, by outcome "
                                 "(dropped: a slow client's buffer was full).", labels=["outcome"])
        ws.add_metric(["sent"], hub.frames)
        ws.add_metric(["dropped"], hub.dropped)
        deliveries = CounterMetricFamily("scanner_websocket_deliveries", "Alerts written to one WebSocket client.")
        deliveries.add_metric([], hub.deliveries)
        woken = CounterMetricFamily("scanner_gateway_feed_alerts", "Alerts this gateway took from the feed ring, by "
                                    "what woke it (bell: the publisher's ring; timer: the fallback poll).",
                                    labels=["wake"])
        for wake, n in self.state.feed_wakes.items():
            woken.add_metric([wake], n)
        yield from (ticks, rate, alerts, drops, restarts, hb, cycles, lost, gen, clients, ws, deliveries, woken)
        yield from feed_metrics(feed_summary(sh))


# live-feed counters (procs.feed_stats) exposed as Prometheus counters; gauges listed apart
_FEED_HELP = {
    "disconnects": "Live feed connections lost.",
    "seconds_lost": "Seconds without a subscribed live feed connection (after the first one).",
    "connects": "Live feed subscriptions made (reconnects included).",
    "messages": "Live feed frames received.",
    "malformed": "Live feed messages that could not be decoded (dropped, counted).",
    "unknown_symbol": "Live feed messages for symbols outside this host's universe.",
    "quotes": "Quotes applied to the bid/ask columns.",
    "statuses": "Trading-status messages applied.",
    "halts": "Trading halts seen.",
    "resumes": "Resumptions after a halt seen.",
    "lulds": "LULD band messages applied.",
    "corrections": "Trade corrections and cancels received.",
    "corrections_applied": "Corrections and cancels applied to a live 1-minute bar.",
    "repaired_bars": "Closed bars inserted from the vendor's REST minute bars after a reconnect.",
    "repair_errors": "Gap repairs that failed (the minutes stay missing).",
}


def feed_metrics(feed: dict | None):  # type: ignore[no-untyped-def]
    """Metric families of the live-feed counters (none without a feed-state segment)."""
    if feed is None:
        return
    up = GaugeMetricFamily("scanner_feed_connected", "1 while the live feed is subscribed.")
    up.add_metric([], int(feed["connected"]))
    yield up
    for key, help_text in _FEED_HELP.items():
        fam = CounterMetricFamily(f"scanner_feed_{key}", help_text)
        fam.add_metric([], feed[key])
        yield fam


@router.get("/metrics", dependencies=[ReadAuth], response_class=Response,
            responses={200: {"description": "Prometheus text format 0.0.4.", "content": {"text/plain": {}}}})
def metrics(state: StateDep) -> Response:
    """Prometheus text exposition."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlCollector(state))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
