"""``ouro bench consolidate``: how long the I/O side takes to consolidate a finished loop
(its chunks rewritten as one buffer rotated to column beat 1, ``rtcore.loops.consolidate``)
and to save it as the session's loop file (written, fsynced, renamed).

The loop is a real take: chunks from the engine's pool filled with noise, recorded from a
column position that is not beat 1, so the rotation does real work.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rtcore.loops import ChunkPool, consolidate
from rtcore.store import save_loop


def bench_consolidate(seconds: float, channels: int = 2, sample_rate: int = 48000,
                      chunk_frames: int = 8192, repeat: int = 9,
                      directory: Path | None = None) -> dict[str, Any]:
    length = round(seconds * sample_rate)
    nchunks = -(-length // chunk_frames)
    pool = ChunkPool(channels, chunk_frames, nchunks + 2, 0, nchunks + 2, reserve_takes=1)
    take = pool.take_shell()
    assert take is not None
    rng = np.random.default_rng(7)
    for i in range(nchunks):
        chunk = pool.take_chunk()
        assert chunk is not None
        chunk[:] = rng.uniform(-0.5, 0.5, chunk.shape).astype(np.float32)
        take.chunks[i] = chunk
    take.nchunks = nchunks
    take.length = take.captured = length
    take.sync_offset = length // 3
    times: list[float] = []
    data = consolidate(take)  # once untimed: the first touch of fresh memory
    for _ in range(repeat):
        t0 = time.perf_counter()
        data = consolidate(take)
        times.append((time.perf_counter() - t0) * 1000.0)
    saves: list[float] = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        for i in range(max(3, repeat // 3)):
            t0 = time.perf_counter()
            save_loop(Path(tmp), i, data, sample_rate)
            saves.append((time.perf_counter() - t0) * 1000.0)
    return {
        "loop_seconds": seconds, "channels": channels, "sample_rate": sample_rate,
        "chunk_frames": chunk_frames, "repeat": repeat,
        "consolidate_ms_median": round(statistics.median(times), 2),
        "consolidate_ms_max": round(max(times), 2),
        "save_wav_ms_median": round(statistics.median(saves), 1),
        "save_wav_ms_max": round(max(saves), 1),
        "megabytes": round(data.nbytes / 1e6, 1),
    }


def format_consolidate_report(r: dict[str, Any]) -> str:
    return (f"consolidating a {r['loop_seconds']:g} s loop ({r['channels']} ch, "
            f"{r['sample_rate']} Hz, {r['megabytes']} MB, {r['chunk_frames']}-frame chunks): "
            f"median {r['consolidate_ms_median']} ms, max {r['consolidate_ms_max']} ms over "
            f"{r['repeat']} runs\n"
            f"saving it as the session's loop file (float WAV, fsync, rename): median "
            f"{r['save_wav_ms_median']} ms, max {r['save_wav_ms_max']} ms")
