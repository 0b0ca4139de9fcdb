"""The shared frame interface: reason codes packed into int64, exact RFC-3339 times."""

from __future__ import annotations

import numpy as np
import pytest

from scanner.feeds.frames import BAD_TS, pack_code, rfc3339_ns, ts_quoted_ns, ts_span, unpack_code


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


def test_the_usual_layout_decodes_as_ts_span_does() -> None:
    """`ts_quoted_ns` (straight-line, date cached across calls) agrees with `ts_span` on valid
    times and on every single-byte corruption of them; where it declines, `ts_span` decides."""
    rng = np.random.default_rng(9)
    ns = rng.integers(-2 * 10**18, 4 * 10**18, 300)
    base = [str(t) + "Z" for t in np.datetime_as_string(ns.astype("datetime64[ns]"), unit="ns")]
    base += ["2024-02-29T23:59:60.999999999Z", "2023-02-29T10:00:00.000000000Z", "2021-04-31T10:00:00.000000000Z",
             "2021-04-30T24:00:00.000000000Z", "2021-04-30T23:60:00.000000000Z", "2021-04-30T23:59:61.000000000Z"]
    texts = list(base)
    for t in base[:80]:  # each with one byte replaced by a digit, a separator or a letter
        for pos in rng.choice(30, 6, replace=False):
            texts.append(t[:pos] + str(rng.choice(list("0959-:.TZz t"))) + t[pos + 1:])
    texts += [t for t in base[:40] for _ in range(2)]  # repeats: the cached date
    d_at, d_secs = -1, 0
    buf = np.frombuffer(b"".join(b'"' + t.encode() + b'"' for t in texts), np.uint8)
    for k, t in enumerate(texts):
        s = 32 * k + 1
        want = ts_span(buf, s, s + len(t))
        got, d_at, d_secs = ts_quoted_ns(buf, s, len(buf), d_at, d_secs)
        assert got == BAD_TS or got == want, t
        if want != BAD_TS and t[10] == "T" and t[29] == "Z":
            assert got == want, t  # the usual layout: decided here, not handed back
