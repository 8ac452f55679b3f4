"""Consolidation (shared/spec/engine.md, "Consolidation"): a finished recording plays at once
from its chunks plus sync_offset; the I/O side rewrites it into one buffer with
``C[p] = B[(p - o) mod L]`` and the engine swaps it in at a later block start; the output is
identical, sample for sample, before and after the swap.

Method: the same performance twice, once with the real I/O side (consolidation and per-column
stacks swapped in) and once with the pool only stocked (loops play from their chunks for
ever). The outputs must be bit-identical.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rtcore.loops import Take, consolidate
from tests.rtcore.conftest import Rig, assert_same, beat_frame, beats_length, ramp

SR, BPM = 48000, 130
FB = [beat_frame(k, SR, BPM) for k in range(60)]
MID = [(FB[k] + FB[k + 1]) // 2 for k in range(59)]


def _events() -> list[tuple]:
    """Several cells in several columns, nonzero offsets, volumes != 1, undo/redo, clear,
    solo, re-recording and stops, so that stacks are rebuilt and swapped many times."""
    return [
        (0, "volume", 0, 1, 0.3), (0, "volume", 1, 0, 0.7), (0, "volume", 1, 2, 1.5),
        (0, "volume", 2, 0, 0.9), (0, "master_volume", 0.9),
        (MID[0], "record", 0, 0), (MID[2], "record", 0, 0),  # col 0: 2 beats
        (MID[1], "record", 1, 0), (MID[4], "record", 1, 0),  # col 1: 3 beats
        (MID[3], "record", 0, 1),  # col 0 overdub at column beat 2
        (MID[5], "record", 1, 2),  # col 1 overdub at column beat 2
        (MID[6], "record", 2, 0), (MID[7], "record", 2, 0),  # col 2: 1 beat
        (MID[8], "record", 1, 1),  # col 1 overdub at column beat 2 (again)
        (MID[9], "record", 0, 2),  # col 0 overdub at column beat 1
        (MID[12], "solo", 1, 2), (MID[14], "play", 1, 2),
        (MID[15], "record", 0, 1),  # re-record: a second take
        (MID[18], "undo", 0, 1), (MID[20], "redo", 0, 1), (MID[21], "undo", 0, 1),
        (MID[22], "stop", 1, 0), (MID[24], "play", 1, 0),
        (MID[25], "clear", 2, 0), (MID[27], "undo", 2, 0), (MID[28], "play", 2, 0),
        (MID[29], "stop", 0, 0), (MID[29], "stop", 0, 1), (MID[29], "stop", 0, 2),
        (MID[31], "play", 0, 2), (MID[31], "play", 0, 0),
        (MID[33], "record", 3, 0), (MID[35], "record", 3, 0),
        (MID[36], "volume", 3, 0, 0.6),
    ]


def _run(service: str, **cfg: Any) -> Rig:
    total = FB[40]
    cfg = {"sample_rate": SR, "tempo_bpm": BPM, "click": True, **cfg}
    rig = Rig(total, ramp(total), service=service, **cfg)
    rig.run(total, _events())
    return rig


CONFIGS = {
    "exact": {},
    "declick+smoothing": {"declick_ms": 5.0, "smoothing_ms": 10.0},
    "small-chunks": {"chunk_frames": 256, "block_size": 100},
    "latency": {"latency_frames": 333, "declick_ms": 2.0},
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("service", ["full", "every:37"])
def test_output_is_identical_with_and_without_consolidation(name: str, service: str) -> None:
    cfg = CONFIGS[name]
    plain = _run("stock", **cfg)
    cons = _run(service, **cfg)
    # the comparison means something: one side consolidated and stacked, the other not
    assert cons.io.consolidated >= 8 and cons.io.stacks_built >= 4
    assert plain.io.consolidated == 0 and plain.io.stacks_built == 0
    st_c, st_p = cons.status(), plain.status()
    assert any(c["consolidated"] for col in st_c["cells"] for c in col)
    assert not any(c["consolidated"] for col in st_p["cells"] for c in col)
    assert plain.main.any()
    assert_same(cons.main, plain.main, "main")
    assert_same(cons.click, plain.click, "click")
    for col_c, col_p in zip(st_c["cells"], st_p["cells"], strict=True):
        for c, p in zip(col_c, col_p, strict=True):
            assert {**c, "consolidated": None, "crc32": None} == {**p, "consolidated": None,
                                                             "crc32": None}


def test_consolidated_buffer_is_rotated_to_column_beat_one() -> None:
    """C[p] = B[(p - o) mod L], checked on the engine's own swapped-in buffer."""
    total = FB[16]
    x = ramp(total)
    rig = Rig(total, x, sample_rate=SR, tempo_bpm=BPM, chunk_frames=1024)
    rig.run(total, [(MID[0], "record", 0, 0), (MID[3], "record", 0, 0),  # 3 beats
                    (MID[4], "record", 0, 1)])  # overdub from beat 5: offset 1 beat
    length = beats_length(3, SR, BPM)
    o = (FB[5] - FB[4]) % length
    cell = rig.cell(0, 1)
    assert (cell["sync_offset_frames"], cell["consolidated"]) == (o, True)
    take = rig.eng.cells[0][1].take
    assert take is not None and take.data is not None
    b = x[FB[5] : FB[5] + length]  # recording order
    p = np.arange(length)
    assert_same(take.data, b[(p - o) % length], "C")
    first = rig.eng.cells[0][0].take
    assert first is not None and first.data is not None
    assert_same(first.data, x[FB[1] : FB[1] + length], "first take (offset 0)")


def test_status_consolidated_flips_to_true() -> None:
    total = FB[10]
    rig = Rig(total, ramp(total), sample_rate=SR, tempo_bpm=BPM)
    rig.run(FB[1] + 500, [(MID[0], "record", 0, 0)])
    rig.submit("record", 0, 0)
    rig.run_to(FB[2])
    assert rig.cell(0, 0)["state"] == "recording"
    rig.eng.process(rig.inputs[FB[2] : FB[2] + 128], rig.main[FB[2] : FB[2] + 128],
                    rig.click[FB[2] : FB[2] + 128])
    cell = rig.cell(0, 0)
    assert (cell["state"], cell["consolidated"]) == ("playing", False)
    rig.io.service()  # consolidates; the engine swaps at its next block start
    assert rig.cell(0, 0)["consolidated"] is False
    rig.block()
    assert rig.cell(0, 0)["consolidated"] is True


def test_stock_only_never_consolidates() -> None:
    total = FB[8]
    rig = Rig(total, ramp(total), service="stock", sample_rate=SR, tempo_bpm=BPM)
    rig.run(total, [(MID[0], "record", 0, 0), (MID[2], "record", 0, 0)])
    assert rig.cell(0, 0)["consolidated"] is False


# ---------------------------------------------------------------------------- consolidate()


def _take(data: np.ndarray, offset: int, chunk_frames: int, length: int | None = None) -> Take:
    n, ch = data.shape
    nchunks = -(-n // chunk_frames)
    take = Take(ch, chunk_frames, nchunks + 2, 0)
    take.length = n if length is None else length
    take.sync_offset = offset
    take.captured = n
    for i in range(nchunks):
        chunk = np.zeros((chunk_frames, ch), np.float32)
        part = data[i * chunk_frames : (i + 1) * chunk_frames]
        chunk[: part.shape[0]] = part
        take.chunks[i] = chunk
    take.nchunks = nchunks
    return take


@pytest.mark.parametrize("length", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("offset_frac", [0.0, 0.25, 0.999])
def test_consolidate_formula(length: int, offset_frac: float) -> None:
    o = int(offset_frac * length)
    b = ramp(length)
    take = _take(b, o, 64)
    c = consolidate(take)
    p = np.arange(length)
    assert_same(c, b[(p - o) % length])
    # and the unconsolidated read path gives the same samples at every position
    out = np.zeros((length, 2), np.float32)
    for start in sorted({0, length // 3, length - 1}):
        take.read_scaled(start, 1.0, out)
        assert_same(out, c[(start + p) % length], f"read from chunks at {start}")


def test_consolidate_of_a_take_cut_short_keeps_its_length() -> None:
    b = ramp(100)
    take = _take(b, 10, 64, length=150)
    c = consolidate(take)
    full = np.zeros((150, 2), np.float32)
    full[:100] = b
    p = np.arange(150)
    assert_same(c, full[(p - 10) % 150])


def test_a_chunk_missing_from_a_take_is_silence_in_its_place() -> None:
    # the pool ran dry in a latency tail: the take has a hole, not a shorter buffer
    take = Take(2, 4, 4, 0)
    take.reset(1)
    for i in (0, 2):
        take.chunks[i] = np.full((4, 2), i + 1.0, np.float32)
    take.nchunks = 3
    take.length = take.captured = 10
    take.sync_offset = 3
    got = consolidate(take)
    want = np.concatenate([np.full(4, 1.0), np.zeros(4), np.full(2, 3.0)]).astype(np.float32)
    np.testing.assert_array_equal(got[:, 0], np.roll(want, 3))
