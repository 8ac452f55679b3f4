"""``ouro bench engine``: time ``Engine.process()`` under the worst realistic load.

All cells hold stereo loops and play, one cell records over and over, the click is on, and
declicking and smoothing are at their defaults. Loops are recorded through the engine's own
commands first, then the I/O side consolidates them, as on the pedal.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from rtcore.commands import parse_args
from rtcore.config import EngineConfig
from rtcore.engine import Engine
from rtcore.ioside import IOSide

COLUMN_BEATS = (4, 8, 2, 16, 4, 8, 4, 2)


def _noise(frames: int, channels: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((frames, channels)) * 0.1).astype(np.float32)


def loaded_engine(block_size: int, sample_rate: int = 48000,
                  tempo_bpm: float = 120.0) -> tuple[Engine, IOSide]:
    """An engine whose every cell plays a loop, one cell re-recording, click on."""
    cfg = EngineConfig(sample_rate=sample_rate, block_size=block_size, tempo_bpm=tempo_bpm,
                       click=True)
    eng = Engine(cfg)
    io = IOSide(eng)
    spb = cfg.frames_per_beat
    cols, rows = cfg.columns, cfg.rows
    bufs = _buffers(block_size, cfg.channels)

    def cmd(name: str, *args: Any) -> None:
        eng.submit(parse_args(name, list(args), columns=cols, rows=rows))

    def run_until(frame: int) -> None:
        src = _noise(block_size, cfg.channels, frame)
        while eng.frame < frame:
            eng.process(src, bufs[1], bufs[2])
            io.service()

    # the first loop of every column, with different lengths
    for c in range(cols):
        cmd("record", c, 0)
    longest = max(COLUMN_BEATS[c % len(COLUMN_BEATS)] for c in range(cols))
    for beat in range(1, longest + 1):
        run_until(round(beat * spb) - block_size)
        for c in range(cols):
            if COLUMN_BEATS[c % len(COLUMN_BEATS)] == beat:
                cmd("record", c, 0)
    run_until(round((longest + 1) * spb))
    # every other row at once: fixed-length recordings
    for c in range(cols):
        for r in range(1, rows):
            cmd("record", c, r)
    run_until(round((2 * longest + 3) * spb))
    for _ in range(5):
        io.service()
        run_until(eng.frame + block_size)
    return eng, io


def _buffers(block_size: int, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.zeros((block_size, channels), np.float32),
            np.zeros((block_size, channels), np.float32),
            np.zeros(block_size, np.float32))


def bench_block_size(block_size: int, seconds: float, sample_rate: int = 48000) -> dict[str, float]:
    eng, io = loaded_engine(block_size, sample_rate)
    src = _noise(block_size, eng.channels, 7)
    _, out, click = _buffers(block_size, eng.channels)
    blocks = max(1, int(seconds * sample_rate / block_size))
    times = np.zeros(blocks, np.int64)
    rec_col, rec_row = 0, 1
    perf = time.perf_counter_ns
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        for i in range(blocks):
            cell = eng.cells[rec_col][rec_row]
            if cell.state != 2 and cell.pending == 0:  # keep one cell recording
                eng.submit(parse_args("record", [rec_col, rec_row], columns=eng.ncols,
                                      rows=eng.nrows))
            t0 = perf()
            eng.process(src, out, click)
            times[i] = perf() - t0
            if i % 16 == 0:
                io.service()
    finally:
        gc.enable()
        gc.unfreeze()
    us = times / 1000.0
    period_us = block_size / sample_rate * 1e6
    p50, p99 = np.percentile(us, [50, 99])
    return {"p50_us": round(float(p50), 2), "p99_us": round(float(p99), 2),
            "max_us": round(float(us.max()), 2), "p99_fraction": round(float(p99) / period_us, 4),
            "period_us": round(period_us, 2), "blocks": blocks}


def bench_engine(block_sizes: tuple[int, ...] = (64, 128, 256), seconds: float = 20.0
                 ) -> dict[str, Any]:
    return {"sample_rate": 48000, "seconds": seconds,
            "load": "25 stereo cells playing, 1 recording, click on",
            "block_sizes": {str(bs): bench_block_size(bs, seconds) for bs in block_sizes}}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"ouro bench engine: {report['load']}, {report['sample_rate']} Hz, "
             f"{report['seconds']:g} s per block size",
             f"{'block':>6} {'period':>9} {'p50':>9} {'p99':>9} {'max':>9} {'p99/period':>11}"]
    for bs, r in report["block_sizes"].items():
        lines.append(f"{bs:>6} {r['period_us']:>7.0f}us {r['p50_us']:>7.1f}us "
                     f"{r['p99_us']:>7.1f}us {r['max_us']:>7.1f}us {r['p99_fraction']:>10.1%}")
    return "\n".join(lines)
