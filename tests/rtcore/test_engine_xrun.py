"""Xruns (shared/spec/engine.md, "Xruns"): ``Engine.skip(N)`` advances time through the gap;
after it, the output is identical, sample for sample, to a run without the xrun, except for
audio recorded during the gap (silence).

Method: run the performance twice on the same engine timeline, once with the xrun and once
without it but with the input of the missed frames set to silence (that is what the gap
records). Then the two outputs must be equal everywhere except inside the gap, where the run
with the xrun produced nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.rtcore.conftest import (
    Rig,
    assert_same,
    beat_frame,
    beats_length,
    ev,
    ramp,
    run_script,
    script,
)

SR, BPM = 48000, 130
FB = [beat_frame(k, SR, BPM) for k in range(80)]
MID = [(FB[k] + FB[k + 1]) // 2 for k in range(79)]
L2 = beats_length(2, SR, BPM)
L3 = beats_length(3, SR, BPM)
BS = 128


def aligned(frame: int, block: int = BS) -> int:
    """The first block boundary at or after ``frame`` (where an xrun there happens)."""
    return -(-frame // block) * block


def beat_of(frame: int) -> int:
    return max(k for k in range(80) if FB[k] <= frame)


# the base performance: col 0 two beats from beat 1, an overdub at beat 5 (nonzero offset);
# col 1 three beats from beat 2 at volume 0.5; the click on
BASE = [
    (0, "volume", 1, 0, 0.5),
    (MID[0], "record", 0, 0), (MID[2], "record", 0, 0),
    (MID[1], "record", 1, 0), (MID[4], "record", 1, 0),
    (MID[4], "record", 0, 1),
]


def compare(events: list[tuple], gap_at: int, n: int, total: int, block: int = BS,
            **cfg: Any) -> tuple[Rig, Rig]:
    """Run with an xrun of ``n`` frames at ``gap_at`` (a block boundary) and without; assert
    the spec's equality; return (with_xrun, reference)."""
    assert gap_at % block == 0
    cfg = {"sample_rate": SR, "tempo_bpm": BPM, "block_size": block, "click": True, **cfg}
    x = ramp(total)
    x_ref = x.copy()
    x_ref[gap_at : gap_at + n] = 0.0
    ref = Rig(total, x_ref, **cfg)
    ref.run(total, events)
    xr = Rig(total, x, **cfg)
    xr.run(total, [*events, (gap_at, "xrun", n)])
    end = gap_at + n
    assert xr.missed[gap_at:end].all() and not xr.missed[:gap_at].any()
    assert_same(xr.main[:gap_at], ref.main[:gap_at], "main before the gap")
    assert not xr.main[gap_at:end].any(), "no output for missed frames"
    assert not xr.click[gap_at:end].any(), "no click for missed frames"
    assert_same(xr.main[end:], ref.main[end:], "main after the gap")
    assert_same(xr.click[end:], ref.click[end:], "click after the gap")
    sx, sr_ = xr.status(), ref.status()
    assert sx["cells"] == sr_["cells"]
    assert sx["columns"] == sr_["columns"]
    assert (sx["beat"], sx["next_beat_frame"]) == (sr_["beat"], sr_["next_beat_frame"])
    assert (sx["xruns"], sx["missed_frames"]) == (1, n)
    return xr, ref


# ---------------------------------------------------------------------------- playing loops


@pytest.mark.parametrize("n", [1, 127, 128, 5000, 22154, 30001, 100000, 250001])
def test_xrun_while_loops_play_with_commands_pending(n: int) -> None:
    """Commands delivered before the gap take effect at boundaries inside it, in order."""
    gap_at = aligned(MID[10])
    end = gap_at + n
    k = beat_of(end)
    total = FB[k + 8]
    events = [
        *BASE,
        (gap_at - 50, "stop", 0, 0), (gap_at - 50, "solo", 1, 0),
        (MID[k + 1], "play", 0, 0), (MID[k + 3], "play", 1, 0),
    ]
    _, ref = compare(events, gap_at, n, total)
    assert ref.main[end:].any()


@pytest.mark.parametrize("n", [1000, 50000])
def test_xrun_with_declick_and_smoothing_in_the_gap(n: int) -> None:
    """Fades and volume ramps that run through the gap end where they would have ended."""
    gap_at = aligned(MID[10])
    end = gap_at + n
    k = beat_of(end)
    total = FB[k + 6]
    events = [
        *BASE,
        (gap_at - 300, "volume", 0, 1, 0.25),  # a 10 ms ramp, cut by the gap
        (gap_at - 300, "master_volume", 0.75),
        (gap_at - 50, "stop", 1, 0),  # a 5 ms fade at the first boundary in the gap
        (MID[k + 1], "play", 1, 0),
    ]
    compare(events, gap_at, n, total, declick_ms=5.0, smoothing_ms=10.0)


def test_xrun_when_nothing_plays() -> None:
    total = FB[6]
    compare([], aligned(MID[1]), 30000, total)


def test_two_xruns() -> None:
    total = FB[20]
    x = ramp(total)
    events = [*BASE, (MID[15], "stop", 0, 1)]
    gaps = [(aligned(MID[8]), 7777), (aligned(MID[11]), 40000)]
    x_ref = x.copy()
    for g, n in gaps:
        x_ref[g : g + n] = 0
    cfg = {"sample_rate": SR, "tempo_bpm": BPM, "click": True}
    ref = Rig(total, x_ref, **cfg)
    ref.run(total, events)
    xr = Rig(total, x, **cfg)
    xr.run(total, [*events, *((g, "xrun", n) for g, n in gaps)])
    keep = ~xr.missed
    assert xr.missed.sum() == 7777 + 40000
    assert_same(xr.main[keep], ref.main[keep])
    assert_same(xr.click[keep], ref.click[keep], "click")
    assert not xr.main[~keep].any()
    assert xr.status()["xruns"] == 2


# ---------------------------------------------------------------------------- first recordings


@pytest.mark.parametrize("after", [0, 1, 500, 30000, 3 * L3])
def test_xrun_across_a_first_recordings_end(after: int) -> None:
    """The record that ends a first recording was given before the gap; its boundary falls
    in the gap (or right at its end); the loop has its exact length, the gap's part of it is
    silence, and everything after the gap is where it would have been."""
    gap_at = aligned(MID[6])
    stop_at = FB[7]
    n = stop_at - gap_at + after
    end = gap_at + n
    k = beat_of(end)
    total = FB[k + 10]
    events = [(MID[3], "record", 2, 0), (gap_at - 50, "record", 2, 0)]
    xr, _ = compare(events, gap_at, n, total)
    cell = xr.cell(2, 0)
    assert (cell["state"], cell["beats"], cell["length_frames"]) \
        == ("playing", 3, L3)
    # what the loop plays: input frame (value - 1), or silence where the gap was
    loop = xr.main[FB[7] + 3 * L3 : FB[7] + 4 * L3, 0] if FB[7] + 4 * L3 <= total else None
    if loop is not None:
        src = np.arange(FB[4], FB[4] + L3)
        in_gap = (src >= gap_at) & (src < end)
        assert not loop[in_gap].any()
        assert_same(loop[~in_gap], (src[~in_gap] + 1).astype(np.float32), "loop")


@pytest.mark.parametrize("extra", [1, 20000])
def test_xrun_across_a_first_recordings_start(extra: int) -> None:
    gap_at = aligned(MID[2])
    n = FB[3] - gap_at + extra
    total = FB[12]
    events = [(gap_at - 50, "record", 0, 0), (MID[5], "record", 0, 0)]
    xr, _ = compare(events, gap_at, n, total)
    assert xr.cell(0, 0)["beats"] == 3


# ---------------------------------------------------------------------------- fixed length


def _overdub_events(extra: list[tuple] = ()) -> list[tuple]:
    # col 0: two beats from beat 1 (column from beat 3); overdub (0,1) from beat 6 (offset
    # one beat), L2 frames long: it ends at FB[6] + L2
    return [(MID[0], "record", 0, 0), (MID[2], "record", 0, 0), (MID[5], "record", 0, 1),
            *extra]


OVERDUB_END = FB[6] + L2


@pytest.mark.parametrize(
    ("gap_at", "n"),
    [
        (aligned(FB[6] + 5000), 10000),  # inside the overdub
        (aligned(OVERDUB_END - 3000), 3000 - (aligned(OVERDUB_END - 3000)
                                              - (OVERDUB_END - 3000))),  # ends on its end
        (aligned(OVERDUB_END - 3000), 2000 + 3000),  # across its end
        (aligned(OVERDUB_END - 40000), 40000 + 3 * L2 + 17),  # across its end and wraps
        (aligned(MID[5]), FB[6] - aligned(MID[5]) + 999),  # across its start
    ],
    ids=["inside", "up-to-end", "across-end", "across-end-long", "across-start"],
)
@pytest.mark.parametrize("latency", [0, 700])
def test_xrun_in_a_fixed_length_recording(gap_at: int, n: int, latency: int) -> None:
    end = gap_at + n
    k = beat_of(end)
    total = FB[k + 8]
    xr, _ = compare(_overdub_events(), gap_at, n, total, latency_frames=latency)
    cell = xr.cell(0, 1)
    assert (cell["state"], cell["beats"], cell["length_frames"]) == ("playing", 2, L2)
    assert cell["sync_offset_frames"] == (FB[6] - FB[3]) % L2


def test_fixed_length_recording_ending_in_the_gap_ends_at_exactly_its_length() -> None:
    gap_at = aligned(OVERDUB_END - 3000)
    n = 8000
    total = FB[20]
    x = ramp(total)
    rig = Rig(total, x, sample_rate=SR, tempo_bpm=BPM)
    rig.run(gap_at, _overdub_events())
    assert rig.cell(0, 1)["state"] == "recording"
    rig.skip(n)
    cell = rig.cell(0, 1)
    assert (cell["state"], cell["length_frames"]) == ("playing", L2)
    rig.block()  # the I/O side has consolidated it; swapped in at this block's start
    assert rig.cell(0, 1)["consolidated"] is True
    rig.run(total)
    # the overdub: recorded from FB[6]; its last 3000 - (gap_at - (OVERDUB_END - 3000))
    # frames are silence; it plays B[(position - o) mod L]
    o = (FB[6] - FB[3]) % L2
    b1 = x[FB[6] : FB[6] + L2].copy()
    b1[gap_at - FB[6] :] = 0
    b0 = x[FB[1] : FB[1] + L2]
    t = np.arange(gap_at + n, total)
    pos = (t - FB[3]) % L2
    want = b0[pos] + b1[(pos - o) % L2]
    assert_same(rig.main[gap_at + n :], want)


# ---------------------------------------------------------------------------- offline script


def test_script_xrun_event_keeps_the_timeline() -> None:
    """``{"frame": F, "xrun": N}`` in a script: main.wav keeps the engine's timeline (the
    missed frames are zeros) and the rest equals a run without the xrun."""
    total = FB[16]
    events = [ev(MID[0], "record", 0, 0), ev(MID[2], "record", 0, 0),
              ev(MID[4], "record", 0, 1), ev(MID[11], "stop", 0, 0)]
    gap_at, n = aligned(MID[8]), 33333
    x = ramp(total)
    x_ref = x.copy()
    x_ref[gap_at : gap_at + n] = 0
    cfg = {"sample_rate": SR, "tempo_bpm": BPM, "click": True}
    ref = run_script(script(total, events, **cfg), x_ref)
    doc = script(total, [*events[:3], {"frame": MID[8], "xrun": n}, events[3]], **cfg)
    res = run_script(doc, x)
    keep = np.ones(total, bool)
    keep[gap_at : gap_at + n] = False
    assert not res.main[~keep].any()
    assert_same(res.main[keep], ref.main[keep])
    assert_same(res.click[keep], ref.click[keep], "click")
    assert res.status["missed_frames"] == n


@pytest.mark.parametrize("latency", [500, 5000])
def test_xrun_across_a_first_recordings_end_with_latency(latency: int) -> None:
    """The latency tail of the first recording runs into (or through) the gap."""
    gap_at = aligned(FB[7] - 1000)
    n = 3000
    total = FB[20]
    events = [(MID[3], "record", 2, 0), (MID[6], "record", 2, 0), (MID[9], "record", 2, 1)]
    xr, _ = compare(events, gap_at, n, total, latency_frames=latency)
    assert xr.cell(2, 0)["length_frames"] == L3
