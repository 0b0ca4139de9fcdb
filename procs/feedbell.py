"""The feed bell: the publisher wakes the gateways when it has put alerts in the feed ring.

A gateway sleeps in its event loop until the publisher rings instead of polling the ring on a
timer (most of an idle gateway's CPU was those wake-ups: ~300 a second at a 100 ms cadence).
Only the wake-up goes over a socket; the alerts stay in shared memory. The bell is a Unix
datagram socket in Linux's abstract namespace, one per gateway, named after the instance and
the gateway's feed consumer slot (like the segments, `scanner.<instance>.…`): no file to clean
up, gone when its process dies.

Contract:

* The publisher rings after `RingProducer.publish` has stored `head` (the `sendto` system call
  orders the stores before it). A gateway drains its bell, then polls the ring: a record
  published before a ring is returned by the poll that ring causes, or by an earlier one.
* Ringing never waits and never fails the publisher: the socket is non-blocking and every
  error is ignored. No gateway bound (not started yet, restarting, reading Redis instead)
  means nobody to wake; a full queue (EAGAIN) means the gateway has unread rings already.
* A gateway still polls on a slow timer (`procs.gateway.BELL_POLL_S`) for what no ring
  announced: alerts published before it bound its bell. A gateway that cannot bind (the name
  is held by another process) polls on the old fast schedule instead.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

log = logging.getLogger("scanner.feedbell")


def bell_address(instance: str, consumer: int, kind: str = "feedbell") -> bytes:
    """The abstract socket name (a leading NUL: abstract) of bell `consumer` of `kind`: the
    gateways' feed consumers here, the event-time hand-offs' control-block slots in
    `procs.eventtime` ("handoff")."""
    return f"\0scanner.{instance}.{kind}.{consumer}".encode()


def ring_all(sock: socket.socket, addresses: Iterable[bytes]) -> None:
    """One datagram to each address from a non-blocking socket; errors ignored (nobody bound,
    or rung already and not yet read: module contract)."""
    for addr in addresses:
        try:
            sock.sendto(b"\1", addr)
        except OSError:
            pass


def drain(sock: socket.socket, most: int) -> int:
    """Read up to `most` pending rings from a non-blocking socket; returns how many."""
    for n in range(most):
        try:
            sock.recv(16)
        except (BlockingIOError, InterruptedError):
            return n
    return most


class BellRinger:
    """The publisher's side: one datagram to each gateway per pass that published alerts. The
    gateways are the feed ring's attached consumers (a gateway attaches its slot at start-up;
    how many there are is the supervisor's to decide, not the publisher's)."""

    def __init__(self, instance: str, consumers: int) -> None:
        self.addresses = [bell_address(instance, i) for i in range(consumers)]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def ring(self, attached: Iterable[int]) -> None:
        """Wake the consumers whose slots are attached (indices into the ring's consumers)."""
        ring_all(self.sock, (self.addresses[i] for i in attached))

    def close(self) -> None:
        self.sock.close()


class Bell:
    """A gateway's side: a non-blocking socket to register with the event loop (`fileno`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    def bind(cls, instance: str, consumer: int) -> Bell | None:
        """The bell of feed consumer `consumer`, or None when its name is held elsewhere."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(bell_address(instance, consumer))
        except OSError as exc:
            sock.close()
            log.warning("feed bell %d of instance %s not available (%s): polling the feed ring on a timer",
                        consumer, instance, exc)
            return None
        sock.setblocking(False)
        return cls(sock)

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self, most: int = 64) -> int:
        """Read the pending rings, up to `most` (a flood leaves the socket readable: the event
        loop calls again after other work); returns how many were read."""
        return drain(self.sock, most)

    def close(self) -> None:
        self.sock.close()
