"""The compiled kernels against plain numpy: same float32 results, nothing allocated."""

from __future__ import annotations

import numpy as np
import pytest

from rtcore import jackio
from rtcore.engine import _Ramp
from rtcore.host import HIST_US, percentiles
from rtcore.kernels import (
    FROM_ROWS,
    FROM_STACK,
    RAMP_FIELDS,
    SILENT,
    begin_block,
    end_block,
    mix_rows,
)

COLS, ROWS, CH, BS = 3, 4, 2, 64


def _random(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def test_mix_rows_sums_in_column_then_row_order_with_wrap() -> None:
    rng = np.random.default_rng(3)
    lengths = (100, 37, 64)
    stacks = tuple(_random(rng, ROWS, n, CH) for n in lengths)
    mode = rng.choice([SILENT, FROM_STACK, FROM_ROWS], size=(COLS, ROWS)).astype(np.int8)
    gains = rng.uniform(0, 1.5, (COLS, ROWS)).astype(np.float32)
    rpos = np.array([90, 30, 0], np.int64)  # the first two wrap inside the segment
    rows = _random(rng, COLS, ROWS, BS, CH)
    mix = np.full((BS, CH), 99.0, np.float32)
    off, m = 10, 40
    mix_rows(stacks, mode, gains, rpos, rows, m, mix, off)

    want = np.zeros((m, CH), np.float32)
    for c in range(COLS):
        idx = (rpos[c] + np.arange(m)) % lengths[c]
        for r in range(ROWS):
            if mode[c, r] == FROM_STACK:
                want += stacks[c][r, idx] * gains[c, r]  # float32 product, then the sum
            elif mode[c, r] == FROM_ROWS:
                want += rows[c, r, :m]
    assert np.array_equal(mix[off:off + m], want)
    assert (mix[:off] == 99.0).all() and (mix[off + m:] == 99.0).all()


def test_begin_block_writes_the_ring_around_its_end_and_clears_the_click() -> None:
    ring = np.zeros((128, CH), np.float32)
    x = np.arange(BS * CH, dtype=np.float32).reshape(BS, CH)
    click = np.ones(BS, np.float32)
    peaks = np.zeros(CH, np.float64)
    # frame 740: ring index 100, wraps at 128
    begin_block(x, BS, ring, 128 * 5 + 100, click, peaks, 0.0)
    assert np.array_equal(ring[100:], x[:28])
    assert np.array_equal(ring[:36], x[28:])
    assert not click.any()
    assert np.array_equal(peaks, np.abs(x).max(axis=0))


def test_the_input_meter_holds_the_peak_and_falls_at_its_rate() -> None:
    ring = np.zeros((128, 1), np.float32)
    click = np.zeros(64, np.float32)
    peaks = np.zeros(1, np.float64)
    fall = -20.0 / 20.0 * np.log(10.0) / 48000  # 20 dB a second
    x = np.zeros((64, 1), np.float32)
    x[10, 0] = -0.5
    begin_block(x, 64, ring, 0, click, peaks, fall)
    assert peaks[0] == 0.5  # the magnitude, at once
    quiet = np.zeros((64, 1), np.float32)
    for _ in range(750):  # 48000 frames: one second of silence
        begin_block(quiet, 64, ring, 0, click, peaks, fall)
    assert np.isclose(20 * np.log10(peaks[0] / 0.5), -20.0)


@pytest.mark.parametrize("monitor", [False, True])
def test_end_block_matches_the_ramps_of_the_engine(monitor: bool) -> None:
    rng = np.random.default_rng(5)
    ramps = np.zeros((3, RAMP_FIELDS), np.float64)
    master = _Ramp(1.0, ramps[0])
    mon = _Ramp(0.0, ramps[1])
    _Ramp(0.5, ramps[2])  # steady: the kernel sees its target only
    master.set(0.25, 1000, 100)  # ramps over frames 1000..1100
    mon.set(0.8, 1030, 20)
    mix, x = _random(rng, BS, CH), _random(rng, BS, CH)
    click = _random(rng, BS)
    click0 = click.copy()
    out = np.zeros((BS, CH), np.float32)
    frame = 1050  # master still ramping in the block, monitor ends inside it
    end_block(mix, x, out, click, frame, BS, ramps, monitor)

    idx = np.repeat(np.arange(1, BS + 1, dtype=np.float32)[:, None], CH, 1)
    g = np.zeros((BS, CH), np.float32)
    master.fill(frame, g, idx)
    want = mix * g
    if monitor:
        mon.fill(frame, g, idx)
        want = want + x * g
    assert np.array_equal(out, want)
    assert np.array_equal(click, click0 * np.float32(0.5))


def test_summarize_gives_the_histogram_percentiles_and_its_bins() -> None:
    rng = np.random.default_rng(7)
    qs = np.array([0.5, 0.99, 0.999])
    out = np.zeros(3, np.int64)
    nonzero = np.zeros((HIST_US + 1, 2), np.int64)
    for _ in range(50):
        hist = np.zeros(HIST_US + 1, np.int64)
        bins = rng.integers(0, HIST_US + 1, rng.integers(0, 40))
        np.add.at(hist, bins, rng.integers(1, 1000, bins.size))
        k = jackio.summarize(hist, qs, out, nonzero)
        assert list(out) == percentiles(hist, qs)
        assert k == np.count_nonzero(hist)
        assert np.array_equal(nonzero[:k, 0], np.flatnonzero(hist))
        assert np.array_equal(nonzero[:k, 1], hist[hist > 0])


def test_record_clips_into_the_last_bin_and_keeps_maxima() -> None:
    hist = np.zeros(11, np.int64)
    delays = np.zeros(11, np.int64)
    scalars = np.zeros(3, np.int64)
    for d, late in ((3, 0), (50, 2), (3, 7)):
        jackio.record(hist, delays, scalars, d, late)
    assert hist[3] == 2 and hist[10] == 1
    assert delays[0] == 1 and delays[2] == 1 and delays[7] == 1
    assert list(scalars) == [3, 50, 7]
