"""Ticks on Kafka: partition map and the packed wire format, without a broker."""

from __future__ import annotations

import numpy as np
import pytest

from scanner.feeds.kafka_wire import decode, encode, partition_of, partitions_for_range
from scanner.records import TICK_DTYPE


def test_partitions_cut_the_universe_into_contiguous_ranges() -> None:
    parts = partition_of(np.arange(1000), 1000, 16)
    assert parts[0] == 0 and parts[-1] == 15
    assert (np.diff(parts) >= 0).all() and set(parts.tolist()) == set(range(16))
    assert partitions_for_range(0, 1000, 1000, 16) == list(range(16))
    assert partitions_for_range(500, 563, 1000, 16) == [8]
    assert partitions_for_range(499, 501, 1000, 16) == [7, 8]
    with pytest.raises(ValueError, match="outside the universe"):
        partitions_for_range(10, 1001, 1000, 16)


def test_encode_one_message_per_symbol_and_decode_round_trip() -> None:
    rng = np.random.default_rng(1)
    t = np.zeros(500, TICK_DTYPE)
    t["sym"] = rng.integers(0, 50, 500)
    t["ts_ns"] = np.arange(500)
    t["price"] = rng.uniform(1, 100, 500)
    t["size"] = 100
    names = [f"S{i}" for i in range(50)]
    msgs = list(encode(t, names, 50, 4))
    keys = [k.decode() for _, k, _ in msgs]
    assert len(keys) == len(set(keys)) == len(np.unique(t["sym"]))
    for part, key, value in msgs:
        got, bad = decode([value])
        assert bad == 0 and (got["sym"] == names.index(key.decode())).all()
        assert part == partition_of(int(got["sym"][0]), 50, 4)
        assert (np.diff(got["ts_ns"]) > 0).all()  # a symbol's ticks keep feed order
    back, bad = decode([v for _, _, v in msgs])
    assert bad == 0 and len(back) == 500
    order = np.lexsort((t["ts_ns"], t["sym"]))
    assert back.tobytes() == t[order].tobytes()


def test_a_malformed_value_is_counted_not_decoded() -> None:
    t = np.zeros(3, TICK_DTYPE)
    good = t.tobytes()
    got, bad = decode([good, good[:-5], b"", good])
    assert len(got) == 6 and bad == 1
    assert list(encode(np.empty(0, TICK_DTYPE), [], 1, 1)) == []
