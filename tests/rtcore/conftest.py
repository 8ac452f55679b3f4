"""Shared helpers for the engine tests (offline, no JACK).

Test modules import these with ``from tests.rtcore.conftest import ...`` (pytest registers
this file under that name in ``--import-mode=importlib``).

The main technique: a RAMP input, where input frame ``i`` has the value ``i + 1`` (channel 0;
channel 1 carries the negated value, so a channel mix-up shows). Every float32 integer below
2**24 is exact, so an output sample names exactly the input frame it was recorded from, and
0 means silence.
"""

from __future__ import annotations

import contextlib
import gc
import subprocess
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rtcore.commands import VOCABULARY, parse_args, parse_mapping
from rtcore.config import EngineConfig
from rtcore.engine import Engine
from rtcore.ioside import IOSide
from rtcore.offline import Result, parse_script, perform

EXACT = {"declick_ms": 0, "smoothing_ms": 0}


# ---------------------------------------------------------------------------- time


def spb_exact(sample_rate: int, tempo_bpm: float) -> Fraction:
    """Frames per beat as an exact fraction."""
    return Fraction(sample_rate * 60) / Fraction(tempo_bpm)


def beat_frame(k: int, sample_rate: int = 48000, tempo_bpm: float = 120) -> int:
    """The frame of beat ``k`` by the spec: ``round(k * spb)`` (no exact halves in the tests)."""
    x = k * spb_exact(sample_rate, tempo_bpm)
    assert x.denominator != 2, "ambiguous rounding; choose another tempo"
    return round(x)


def beats_length(beats: int, sample_rate: int = 48000, tempo_bpm: float = 120) -> int:
    """A loop's length in frames: ``round(beats * spb)``."""
    return beat_frame(beats, sample_rate, tempo_bpm)


# ---------------------------------------------------------------------------- signals


def ramp(n: int, channels: int = 2, start: int = 1) -> np.ndarray:
    """(n, channels) float32: channel 0 of frame i is ``i + start``, channel 1 its negation,
    further channels repeat the pattern."""
    assert n + start < 2**24
    v = np.arange(start, start + n, dtype=np.float64)
    out = np.empty((n, channels), np.float32)
    for c in range(channels):
        out[:, c] = v if c % 2 == 0 else -v
    return out


def levels(total: int, segments: Iterable[tuple[int, int, float]], channels: int = 2,
           ) -> np.ndarray:
    """(total, channels) float32, zero except ``value`` on ``[start, end)`` per segment."""
    out = np.zeros((total, channels), np.float32)
    for start, end, value in segments:
        out[start:end] = value
    return out


def loop_play(frames: np.ndarray, col_start: int, buf: np.ndarray, offset: int,
              gain: float = 1.0) -> np.ndarray:
    """What a loop plays at engine ``frames`` by the spec's formula: the column (running since
    ``col_start``, length ``L = len(buf)``) is at ``position = (f - col_start) mod L`` and the
    loop adds ``buf[(position - offset) mod L] * gain``."""
    length = buf.shape[0]
    pos = (frames - col_start) % length
    out = buf[(pos - offset) % length]
    if gain != 1.0:
        out = out * np.float32(gain)
    return out


def add_loop(expected: np.ndarray, buf: np.ndarray, offset: int,
             spans: Iterable[tuple[int, int, int]], gain: float = 1.0) -> np.ndarray:
    """Add a loop's playback to ``expected`` (in place) for each span ``(a, b, col_start)``:
    frames ``[a, b)`` while its column has been running since ``col_start``."""
    for a, b, col_start in spans:
        frames = np.arange(a, b)
        expected[a:b] += loop_play(frames, col_start, buf, offset, gain)
    return expected


def first_diff(a: np.ndarray, b: np.ndarray) -> str:
    """A short description of where two arrays first differ (for assertion messages)."""
    if a.shape != b.shape:
        return f"shapes differ: {a.shape} vs {b.shape}"
    bad = np.nonzero(np.any((a != b).reshape(a.shape[0], -1), axis=1))[0]
    if bad.size == 0:
        return "equal"
    i = int(bad[0])
    return (f"{bad.size} frames differ, first at frame {i}: {a[i]!r} vs {b[i]!r}; "
            f"last at frame {int(bad[-1])}")


def assert_same(actual: np.ndarray, expected: np.ndarray, what: str = "output") -> None:
    assert actual.shape == expected.shape, f"{what}: {first_diff(actual, expected)}"
    assert np.array_equal(actual, expected), f"{what}: {first_diff(actual, expected)}"


# ---------------------------------------------------------------------------- commands


def command(name: str, *args: Any, columns: int = 5, rows: int = 5):
    return parse_args(name, list(args), columns=columns, rows=rows)


# ---------------------------------------------------------------------------- the rig


class Rig:
    """An engine, its I/O side, an input signal and the outputs on the engine's timeline.

    ``service`` says what happens after each block (and after an xrun):
    ``"full"``: ``io.service()`` (stock, consolidate, build stacks: the real thing);
    ``"stock"``: only ``engine.pool.stock()`` (loops are never consolidated);
    ``"every:K"``: ``io.service()`` after every K-th block, ``pool.stock()`` otherwise.
    """

    def __init__(self, total: int, inputs: np.ndarray | None = None, service: str = "full",
                 **cfg: Any):
        self.config = EngineConfig(**{**EXACT, **cfg})
        self.eng = Engine(self.config)
        self.io = IOSide(self.eng)
        ch = self.config.channels
        self.total = total
        if inputs is None:
            inputs = np.zeros((total, ch), np.float32)
        assert inputs.shape == (total, ch) and inputs.dtype == np.float32
        self.inputs = inputs
        self.main = np.zeros((total, ch), np.float32)
        self.click = np.zeros(total, np.float32)
        self.service_mode = service
        self.blocks = 0
        self.missed = np.zeros(total, bool)  # frames lost to xruns

    # -- driving

    @property
    def frame(self) -> int:
        return self.eng.frame

    def submit(self, name: str, *args: Any) -> None:
        self.eng.submit(command(name, *args, columns=self.config.columns,
                                rows=self.config.rows))

    def submit_mapping(self, obj: dict[str, Any]) -> None:
        self.eng.submit(parse_mapping(obj, columns=self.config.columns,
                                      rows=self.config.rows))

    def service(self) -> None:
        mode = self.service_mode
        if mode == "full":
            self.io.service()
        elif mode == "stock":
            self.eng.pool.stock()
        elif mode.startswith("every:"):
            if self.blocks % int(mode[6:]) == 0:
                self.io.service()
            else:
                self.eng.pool.stock()
        else:  # pragma: no cover
            raise ValueError(mode)

    def block(self, n: int | None = None) -> None:
        """Process one block of ``n`` frames (default: block_size)."""
        b = self.eng.frame
        n = self.config.block_size if n is None else n
        assert 0 < n <= self.config.block_size and b + n <= self.total
        self.eng.process(self.inputs[b : b + n], self.main[b : b + n], self.click[b : b + n])
        self.blocks += 1
        self.service()

    def run_to(self, frame: int) -> None:
        """Process full blocks up to ``frame``; the last block is shortened to end on it."""
        assert frame >= self.eng.frame
        bs = self.config.block_size
        while self.eng.frame < frame:
            self.block(min(bs, frame - self.eng.frame))

    def skip(self, n: int) -> None:
        """An xrun of ``n`` missed frames at the current frame."""
        f = self.eng.frame
        self.eng.skip(n)
        assert self.eng.frame == f + n
        self.missed[f : f + n] = True
        self.blocks += 1
        self.service()

    def run(self, until: int, events: Sequence[tuple[Any, ...]] = ()) -> None:
        """Run to ``until`` on a fixed grid of block_size from the current frame, delivering
        events the way ``ouro offline`` does: ``(F, name, *args)`` before the block containing
        ``F``; ``(F, "xrun", N)`` at the first block boundary >= F; ``(F, callable)`` is called
        with the rig before the block containing F."""
        xruns = sorted((e for e in events if e[1] == "xrun"), key=lambda e: e[0])
        others = sorted((e for e in events if e[1] != "xrun"), key=lambda e: e[0])
        xi = oi = 0
        bs = self.config.block_size
        while self.eng.frame < until:
            b = self.eng.frame
            gap = 0
            while xi < len(xruns) and xruns[xi][0] <= b:
                gap += xruns[xi][2]
                xi += 1
            if gap:
                self.skip(min(gap, until - b))
                continue
            n = min(bs, until - b)
            while oi < len(others) and others[oi][0] < b + n:
                e = others[oi]
                if callable(e[1]):
                    e[1](self)
                else:
                    self.submit(e[1], *e[2:])
                oi += 1
            self.block(n)

    # -- looking

    def status(self) -> dict[str, Any]:
        return self.eng.status()

    def cell(self, column: int, row: int) -> dict[str, Any]:
        return self.eng.status()["cells"][column][row]

    def column(self, column: int) -> dict[str, Any]:
        return self.eng.status()["columns"][column]


# ---------------------------------------------------------------------------- offline


def script(duration: int, events: Iterable[dict[str, Any]], **cfg: Any) -> dict[str, Any]:
    """A performance script document with exact (0 ms) declick and smoothing by default."""
    doc: dict[str, Any] = {**EXACT, **cfg}
    doc["duration_frames"] = duration
    doc["events"] = list(events)
    return doc


def ev(frame: int, cmd: str, *args: Any, **kw: Any) -> dict[str, Any]:
    """A script event: ``ev(100, "record", 0, 0)`` or ``ev(5, "volume", 0, 0, value=0.5)``."""
    names = list(VOCABULARY[cmd].args)
    out: dict[str, Any] = {"frame": frame, "cmd": cmd}
    out.update(zip(names, args, strict=False))
    out.update(kw)
    return out


def run_script(doc: dict[str, Any], inputs: np.ndarray) -> Result:
    return perform(parse_script(doc), inputs)


# ---------------------------------------------------------------------------- allocation


def allocated_during(step: Callable[[], object], times: int) -> tuple[int, int]:
    """Run ``step`` ``times`` times with the garbage collector off and tracemalloc on:
    (bytes still held after, peak bytes) over what was held before. Warm ``step`` up first:
    caches that fill on first use are not what this looks for."""
    gc.collect()
    gc.disable()
    try:
        tracemalloc.start()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(times):
            step()
        after, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        gc.enable()
    return after - before, peak - before


# ---------------------------------------------------------------------------- disks


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (as mount's ``size=`` option, e.g. ``"2m"``) mounted on ``where``
    for the block: a disk that really fills. Skips the test where mounting is not allowed
    (not root, or no mount rights in a container)."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(where)], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)
