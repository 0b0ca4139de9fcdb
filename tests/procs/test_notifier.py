"""The notifier against real Redis, a real SMTP server (aiosmtpd) and a real HTTP receiver."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import redis
from aiosmtpd.controller import Controller

from procs.instance import process_names
from procs.notifier.delivery import Notifier, PassStats
from scanner.config import Settings
from scanner.notify import signing
from scanner.notify.destinations import parse_destinations
from scanner.notify.limits import RetrySchedule
from tests.procs.instance import Instance, child
from tests.support import REPO, RedisServer, eventually, free_port

SECRET = "whsec-0123456789abcdef"


def alert(symbol: str = "AAPL", **over: Any) -> dict[str, Any]:
    a = {"rule": "gap", "rule_name": "Gap up", "severity": "high", "tags": ["gap"], "symbol": symbol,
         "kind": "enter", "values": {"gap_pct": 3.5}, "event_ts": 1714570265.0, "scan_ts": 1714570265.2,
         "host": "h", "worker": 0, "seq": 1, "generation": 1}
    return {**a, **over}


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """HTTP server on a free loopback port: records every POST; per path, a plan of statuses to answer
    (then `default`), and an optional hold (the handler waits on an event, like a hung endpoint)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.plan: dict[str, deque[int]] = {}
        self.default: dict[str, int] = {}
        self.hold: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    plan = outer.plan.get(self.path)
                    status = plan.popleft() if plan else outer.default.get(self.path, 200)
                    outer.requests.append(Request(self.path, dict(self.headers), body, status))
                    hold = outer.hold.get(self.path)
                if hold is not None:
                    hold.wait(10)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"{}")
                except OSError:
                    pass  # the client is gone (killed notifier)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def got(self, path: str, ok_only: bool = True) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path == path and (r.status < 300 or not ok_only)]

    def close(self) -> None:
        for ev in self.hold.values():
            ev.set()
        self.server.shutdown()
        self.server.server_close()


class Inbox:
    """aiosmtpd handler keeping every message."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    yield inbox, port
    ctl.stop()


class Harness:
    """A private stream per test, a Redis client on it, and notifiers driven pass by pass."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stream = f"alerts-{uuid.uuid4().hex[:8]}"
        self.dead = f"{self.stream}:dead"
        self.r = redis.Redis.from_url(url)
        self.r.xgroup_create(self.stream, "notifier", id="$", mkstream=True)
        self.notifiers: list[Notifier] = []

    def notifier(self, dests: list[dict[str, Any]], consumer: str = "n1", **kw: Any) -> Notifier:
        kw.setdefault("retry", RetrySchedule(base_s=0.02, cap_s=0.1, max_attempts=3))
        n = Notifier(self.url, parse_destinations(dests), consumer=consumer, stream=self.stream,
                     dead_stream=self.dead, block_ms=50, **kw)
        self.notifiers.append(n)
        return n

    def add(self, *alerts: dict[str, Any]) -> list[str]:
        return [self.r.xadd(self.stream, {"alert": json.dumps(a).encode()}).decode() for a in alerts]

    def pending(self) -> int:
        return int(self.r.xpending(self.stream, "notifier")["pending"])

    def dead_letters(self) -> list[dict[str, str]]:
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in self.r.xrange(self.dead)]

    def drive(self, until: Callable[[], object], timeout: float = 10.0, *notifiers: Notifier) -> PassStats:
        """Run passes of the notifiers until `until()` holds; returns the summed counts."""
        total = PassStats()
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s")
            for n in notifiers or self.notifiers:
                st = n.run_once()
                for k in vars(total):
                    setattr(total, k, getattr(total, k) + getattr(st, k))
        return total


@pytest.fixture
def h(redis_server: Any) -> Iterator[Harness]:
    harness = Harness(redis_server.url)
    yield harness
    for n in harness.notifiers:
        n.close(timeout=0)


def hook(receiver: Receiver, name: str, **over: Any) -> dict[str, Any]:
    return {"name": name, "kind": "webhook", "url": f"{receiver.url}/{name}", "secret": SECRET, **over}


def test_email_arrives_with_the_alert(h: Harness, smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    h.notifier([{"name": "mail", "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": port,
                 "from_addr": "scanner@test.local", "to": ["a@test.local", "b@test.local"]}])
    (entry_id,) = h.add(alert("NVDA"))
    h.drive(lambda: inbox.messages and h.pending() == 0)
    env = inbox.messages[0]
    assert env.mail_from == "scanner@test.local" and env.rcpt_tos == ["a@test.local", "b@test.local"]
    msg = email.message_from_bytes(env.content, policy=email.policy.default)
    assert msg["Subject"] == "[scanner] NVDA: Gap up [high]" and msg["X-Scanner-Alert"] == entry_id
    assert "gap_pct = 3.5" in msg.get_body(("plain",)).get_content()
    (att,) = list(msg.iter_attachments())
    assert json.loads(att.get_content()) == alert("NVDA")


def test_webhook_is_signed_and_filters_apply(h: Harness, receiver: Receiver) -> None:
    h.notifier([hook(receiver, "all"), hook(receiver, "spy", symbols=["SPY"], min_severity="critical")])
    ids = h.add(alert("AAPL"), alert("SPY", severity="critical"), alert("SPY", severity="low"))
    h.drive(lambda: len(receiver.got("/all")) == 3 and h.pending() == 0)
    assert [json.loads(r.body)["symbol"] for r in receiver.got("/spy")] == ["SPY"]
    for req, entry_id in zip(sorted(receiver.got("/all"), key=lambda r: r.headers["X-Scanner-Delivery"]), ids,
                             strict=True):
        assert req.headers["X-Scanner-Delivery"] == entry_id
        assert req.headers["Content-Type"] == "application/json"
        assert signing.verify(SECRET, req.headers["X-Scanner-Timestamp"], req.headers["X-Scanner-Signature"],
                              req.body)
        assert not signing.verify("wrong-secret-0123456", req.headers["X-Scanner-Timestamp"],
                                  req.headers["X-Scanner-Signature"], req.body)
    assert h.r.xrange(h.stream, ids[0], ids[0])[0][1][b"alert"] in [r.body for r in receiver.got("/all")]


def test_sms_twilio_style_form_with_basic_auth(h: Harness, receiver: Receiver) -> None:
    receiver.default["/2010-04-01/Accounts/AC42/Messages.json"] = 201
    h.notifier([{"name": "sms", "kind": "sms", "base_url": receiver.url, "account_sid": "AC42",
                 "auth_token": "tok-secret", "from_number": "+15550001", "to": ["+15550002", "+15550003"]}])
    h.add(alert("TSLA"))
    path = "/2010-04-01/Accounts/AC42/Messages.json"
    h.drive(lambda: len(receiver.got(path)) == 2 and h.pending() == 0)
    reqs = receiver.got(path)
    assert reqs[0].headers["Authorization"] == "Basic " + base64.b64encode(b"AC42:tok-secret").decode()
    forms = [parse_qs(r.body.decode()) for r in reqs]
    assert sorted(f["To"][0] for f in forms) == ["+15550002", "+15550003"]
    assert all(f["From"] == ["+15550001"] and f["Body"][0].startswith("TSLA: Gap up [high]") for f in forms)


def test_retries_then_success_acks_only_after_delivery(h: Harness, receiver: Receiver) -> None:
    receiver.plan["/flaky"] = deque([500, 503])
    h.notifier([hook(receiver, "flaky")])
    h.add(alert())
    h.drive(lambda: receiver.got("/flaky", ok_only=False))
    assert h.pending() == 1  # first attempt failed: not acked
    st = h.drive(lambda: receiver.got("/flaky") and h.pending() == 0)
    assert [r.status for r in receiver.got("/flaky", ok_only=False)] == [500, 503, 200]
    assert len(receiver.got("/flaky")) == 1 and h.dead_letters() == []
    assert st.delivered == 1 and st.failed >= 1


def test_failing_destination_is_dead_lettered_and_acked(h: Harness, receiver: Receiver) -> None:
    receiver.default["/down"] = 503
    receiver.default["/gone"] = 404  # permanent: no retry
    h.notifier([hook(receiver, "down"), hook(receiver, "gone"), hook(receiver, "fine")])
    (entry_id,) = h.add(alert())
    st = h.drive(lambda: len(h.dead_letters()) == 2 and h.pending() == 0)
    dead = {d["destination"]: d for d in h.dead_letters()}
    assert set(dead) == {"down", "gone"}
    assert dead["down"]["attempts"] == "3" and "HTTP 503" in dead["down"]["error"]
    assert dead["gone"]["attempts"] == "1" and "HTTP 404" in dead["gone"]["error"]
    assert dead["down"]["source_id"] == entry_id and json.loads(dead["down"]["alert"]) == alert()
    assert len(receiver.got("/down", ok_only=False)) == 3 and len(receiver.got("/fine")) == 1
    assert (st.delivered, st.dead, st.failed) == (1, 2, 4)


def test_unreadable_entries_are_dead_lettered(h: Harness, receiver: Receiver) -> None:
    h.notifier([hook(receiver, "x")])
    h.r.xadd(h.stream, {"other": b"1"})
    h.r.xadd(h.stream, {"alert": b"not json"})
    h.r.xadd(h.stream, {"alert": b"[" * 100_000 + b"]" * 100_000})  # too deep to parse: no crash loop
    h.drive(lambda: h.pending() == 0 and len(h.dead_letters()) == 3)
    assert {d["destination"] for d in h.dead_letters()} == {"-"} and receiver.got("/x", ok_only=False) == []


def test_rate_limit_holds(h: Harness, receiver: Receiver) -> None:
    # 6/min = 0.1 token/s: within the ~1 s window only the bucket's burst may pass
    h.notifier([hook(receiver, "held", rate_per_minute=6, burst=3),
                hook(receiver, "dropping", rate_per_minute=6, burst=2, on_rate_limit="drop")])
    h.add(*(alert(f"S{i}") for i in range(8)))
    t0 = time.monotonic()
    h.drive(lambda: len(h.dead_letters()) == 6 and len(receiver.got("/held")) >= 3)
    end = time.monotonic() + 0.5
    h.drive(lambda: time.monotonic() > end)
    window = time.monotonic() - t0
    assert len(receiver.got("/held")) <= 3 + 0.1 * window < 4
    assert len(receiver.got("/dropping")) == 2
    assert {(d["destination"], d["error"]) for d in h.dead_letters()} == {("dropping", "rate limited")}
    assert h.pending() == 5  # the held destination's alerts wait (not lost, not acked)


def test_slow_destination_does_not_stall_the_loop(h: Harness, receiver: Receiver) -> None:
    receiver.hold["/slow"] = threading.Event()
    n = h.notifier([hook(receiver, "slow", timeout_s=5), hook(receiver, "fast")])
    h.add(alert("A"), alert("B"))
    longest = 0.0
    while len(receiver.got("/fast")) < 2:
        t = time.monotonic()
        n.run_once()
        longest = max(longest, time.monotonic() - t)
    assert receiver.got("/slow", ok_only=False) and h.pending() == 2  # slow still in flight: nothing acked
    receiver.hold["/slow"].set()
    h.drive(lambda: h.pending() == 0)
    assert longest < 0.6


def test_partial_progress_survives_a_handover(h: Harness, receiver: Receiver) -> None:
    receiver.default["/bad"] = 503
    first = h.notifier([hook(receiver, "ok"), hook(receiver, "bad")], consumer="first",
                       retry=RetrySchedule(base_s=30, cap_s=30, max_attempts=5))
    h.add(alert())
    h.drive(lambda: receiver.got("/ok") and receiver.got("/bad", ok_only=False), 10, first)
    h.drive(lambda: h.r.exists(f"{h.stream}:notified:" + h.r.xrange(h.stream)[0][0].decode()), 5, first)
    first.close(timeout=0)  # gone with a retry outstanding: the entry stays pending
    assert h.pending() == 1
    receiver.default["/bad"] = 200
    second = h.notifier([hook(receiver, "ok"), hook(receiver, "bad")], consumer="second", claim_idle_s=0.2)
    h.drive(lambda: receiver.got("/bad") and h.pending() == 0, 10, second)
    assert len(receiver.got("/ok")) == 1  # not sent again where it already went


def test_restart_with_same_consumer_takes_back_its_pending(h: Harness, receiver: Receiver) -> None:
    receiver.default["/x"] = 503
    first = h.notifier([hook(receiver, "x")], consumer="same", retry=RetrySchedule(30, 30, 5))
    h.add(alert("A"), alert("B"))
    h.drive(lambda: len(receiver.got("/x", ok_only=False)) == 2, 10, first)
    first.close(timeout=0)
    receiver.default["/x"] = 200
    again = h.notifier([hook(receiver, "x")], consumer="same", claim_idle_s=600)  # no idle wait needed
    h.drive(lambda: h.pending() == 0, 10, again)
    assert sorted(json.loads(r.body)["symbol"] for r in receiver.got("/x")) == ["A", "B"]


def test_redis_outage_never_stalls_and_recovers(tmp_path: Path, receiver: Receiver) -> None:
    srv = RedisServer(tmp_path / "redis")
    try:
        h = Harness(srv.url)
        n = h.notifier([hook(receiver, "x")])
        h.add(alert("A"))
        h.drive(lambda: receiver.got("/x") and h.pending() == 0)
        srv.stop()
        end, longest = time.monotonic() + 0.6, 0.0
        while time.monotonic() < end:
            t = time.monotonic()
            n.run_once()  # no exception, no long wait
            longest = max(longest, time.monotonic() - t)
        assert longest < 1.5
        srv.start()  # empty again (no persistence): the group is created anew
        r = redis.Redis.from_url(srv.url)
        eventually(lambda: (n.run_once(), r.exists(h.stream))[1], 10, 0, "stream and group re-created")
        r.xadd(h.stream, {"alert": json.dumps(alert("B")).encode()})
        h.drive(lambda: len(receiver.got("/x")) == 2)
        assert json.loads(receiver.got("/x")[1].body)["symbol"] == "B"
        n.close(timeout=0)
    finally:
        srv.stop()


KILLABLE = """
import sys, time
from procs.notifier.delivery import Notifier
from scanner.notify.destinations import parse_destinations
import json
url, stream, dests = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
n = Notifier(url, parse_destinations(dests), consumer="doomed", stream=stream, block_ms=50)
while True:
    n.run_once()
"""


def test_killed_notifier_pending_entries_are_reclaimed(h: Harness, receiver: Receiver) -> None:
    receiver.hold["/hang"] = threading.Event()
    dests = [hook(receiver, "hang", concurrency=2, timeout_s=30)]
    h.add(alert("A"), alert("B"))
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, h.url, h.stream, json.dumps(dests)], cwd=REPO)
    try:
        eventually(lambda: len(receiver.got("/hang", ok_only=False)) == 2, 15, what="both sends in flight")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    consumers = {c["name"].decode(): c["pending"] for c in h.r.xinfo_consumers(h.stream, "notifier")}
    assert consumers == {"doomed": 2} and h.pending() == 2
    del receiver.hold["/hang"]
    rescuer = h.notifier(dests, consumer="rescuer", claim_idle_s=0.3)
    st = h.drive(lambda: h.pending() == 0, 10, rescuer)
    assert st.read == 2 and st.delivered == 2
    assert sorted(json.loads(r.body)["symbol"] for r in receiver.got("/hang")[-2:]) == ["A", "B"]


def test_notifier_process_only_with_redis_and_destinations() -> None:
    d = [{"name": "x", "kind": "webhook", "url": "http://127.0.0.1:9/x", "secret": SECRET}]
    assert "notifier" not in process_names(Settings(scan_workers=1))
    assert "notifier" not in process_names(Settings(scan_workers=1, notify_destinations=d))
    assert process_names(Settings(scan_workers=1, redis_url="redis://127.0.0.1:1/0",
                                  notify_destinations=d))[-1] == "notifier"


@pytest.mark.slow
def test_notifier_process_under_the_supervisor(redis_server: Any, receiver: Receiver, tmp_path: Path) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/9"  # a database of its own: the instance's publisher writes too
    r = redis.Redis.from_url(url)
    r.flushdb()
    dests = [hook(receiver, "ops", symbols=["ZZTEST"])]  # real alerts of the synthetic feed are filtered out
    inst = Instance(tmp_path, f"n{time.monotonic_ns() % 10**6}", SCANNER_REDIS_URL=url, SCANNER_SCAN_WORKERS="1",
                    SCANNER_NOTIFY_DESTINATIONS=json.dumps(dests))
    inst.start()
    try:
        eventually(lambda: any(g["name"] == b"notifier" for g in r.xinfo_groups("alerts")), 60, 0.1, "group")
        r.xadd("alerts", {"alert": json.dumps(alert("ZZTEST")).encode()})
        eventually(lambda: receiver.got("/ops"), 20, 0.05, "the webhook delivery")
        st = eventually(lambda: (c := child(inst.status(), "notifier"))["out"] >= 1 and c, 10, 0.2, "counted")
        assert st["alive"] and st["state"] == "running" and st["restarts"] == 0
        assert json.loads(receiver.got("/ops")[0].body)["symbol"] == "ZZTEST"
        assert inst.stop() == 0
    finally:
        inst.close()
