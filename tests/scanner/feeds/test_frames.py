"""The shared frame interface: reason codes packed into int64, exact RFC-3339 times."""

from __future__ import annotations

import numpy as np
import pytest

from scanner.feeds.frames import BAD_TS, pack_code, rfc3339_ns, unpack_code


@pytest.mark.parametrize("code", ["", "T1", "LUDP", "H10", "MWC1", "ABCDEFGH"])
def test_pack_code_round_trips(code: str) -> None:
    assert unpack_code(pack_code(code)) == code
    assert np.array([pack_code(code)], np.int64)[0] == pack_code(code)


def test_pack_code_truncates_and_replaces() -> None:
    assert unpack_code(pack_code("ABCDEFGHIJ")) == "ABCDEFGH"
    assert unpack_code(pack_code("é")) == "?"


def test_rfc3339_is_exact_to_the_ns_against_numpy() -> None:
    rng = np.random.default_rng(7)
    ns = rng.integers(0, 4_000_000_000 * 10**9, 5000)
    texts = [str(np.datetime64(int(v), "ns")) + "Z" for v in ns]
    np.testing.assert_array_equal(rfc3339_ns(texts), ns)
    # shorter fractions, none at all, offsets
    assert rfc3339_ns(["2021-02-22T15:51:44.208Z", "2021-02-22T15:51:44Z", "2021-02-22T10:51:44.5-05:00",
                       "2021-02-22T16:51:44+01:00", "2024-02-29T00:00:00z"]).tolist() == [
        1614009104208000000, 1614009104000000000, 1614009104500000000, 1614009104000000000,
        1709164800000000000]


@pytest.mark.parametrize("bad", ["", "2021-02-22", "2021-02-22T15:51:44", "2021-13-01T00:00:00Z",
                                 "2021-02-29T00:00:00Z", "2021-02-22T24:00:00Z", "2021-02-22T15:51:44.Z",
                                 "2021-02-22T15:51:44.1234567891Z", "2021-02-22T15:51:44Zjunk",
                                 "2021-02-22T15:51:44+0100", "x" * 100, "2021-02-22T15:51:44.208Z" + " " * 30,
                                 "２０２１-02-22T15:51:44Z"])
def test_rfc3339_rejects_malformed_times(bad: str) -> None:
    assert rfc3339_ns([bad, "2021-02-22T15:51:44Z"]).tolist() == [BAD_TS, 1614009104000000000]
