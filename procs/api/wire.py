"""Alerts as the gateway passes them on: each alert's JSON bytes, as its publisher wrote them,
plus the few fields the gateway itself reads (`AlertHead`: the clients' filters, the frame's
`scan_ts`, the (host, worker, seq) that drops repeats).

The bytes go into the WebSocket frames as they are, and into `/api/alerts/recent` decoded only
when it is read. A gateway decoding every alert into a dict (`json.loads`) and encoding it again
per frame spent ~90 µs of CPU per alert on the Redis path, which under a burst of a few thousand
alerts after a minute close put seconds between the scan and the screens.

Anyone who can PUBLISH on the channel can send anything: a message is an alert only when it is a
JSON object (strict JSON, as the browsers' `JSON.parse` reads it: no NaN, valid UTF-8) with
string `rule` and `symbol`, a list `tags` if any, and the head's other fields of their types if
present. Anything else is counted and dropped, never forwarded.
"""

from __future__ import annotations

from typing import Any

import msgspec


class AlertHead(msgspec.Struct, gc=False):
    rule: str
    symbol: str
    tags: list[Any] = []
    scan_ts: float | None = None
    host: str | None = None
    worker: int | None = None
    seq: int | None = None

    @property
    def key(self) -> tuple[str | None, int | None, int | None]:
        """Unique per alert of a scanner host: what `StreamResume.fresh` drops repeats by."""
        return (self.host, self.worker, self.seq)


_HEAD = msgspec.json.Decoder(AlertHead).decode
_ANY = msgspec.json.Decoder().decode


def heads_of(raws: list[bytes]) -> tuple[list[AlertHead], list[bytes]]:
    """The alerts among `raws` (their heads, and their bytes); the rest is left out (the
    caller counts `len(raws) - len(heads)` as malformed)."""
    heads: list[AlertHead] = []
    parts: list[bytes] = []
    for raw in raws:
        try:
            heads.append(_HEAD(raw))
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            continue
        parts.append(raw)
    return heads, parts


def to_dict(raw: bytes) -> dict[str, Any]:
    """One alert's bytes (already accepted by `heads_of`) as a dict, for REST."""
    return _ANY(raw)
